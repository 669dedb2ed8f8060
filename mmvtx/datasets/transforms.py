"""Data transforms the recipes need beyond mmdet's and mmseg's."""
from mmdet.datasets.transforms import Pad

from mmvtx.registry import TRANSFORMS


@TRANSFORMS.register_module()
class PadKeepImgShape(Pad):
    """mmdet's ``Pad`` (image, masks, ``pad_shape``), leaving ``img_shape`` at the unpadded size.

    ViTDet pads every test image to a fixed 1024 x 1024 canvas. With mmdet's ``Pad`` the
    canvas becomes ``img_shape``, which the detector clips its boxes to, so boxes predicted in
    the padding survive, map outside the image when rescaled, and make mmdet's CPU mask paste
    fail (``torch.arange`` with bounds the wrong way round). Keeping ``img_shape`` at the
    image clips boxes to the image, as detectron2's post-processing does."""

    def transform(self, results: dict) -> dict:
        img_shape = results['img_shape']
        results = super().transform(results)
        results['img_shape'] = img_shape
        return results
