"""The shapes scenes as an mmdet ``CocoDataset`` and an mmseg ``BaseSegDataset``.

Both generate the data on first use (see :func:`prepare_shapes`); otherwise they behave exactly
like their parents, so every mmdet/mmseg pipeline and evaluator works on them."""
from mmdet.datasets import CocoDataset
from mmseg.datasets import BaseSegDataset

from mmvtx.registry import DATASETS
from .shapes import CLASSES, PALETTE, SEG_CLASSES, SEG_PALETTE, prepare_shapes


def _root(kwargs) -> str:
    root = kwargs.get('data_root') or 'data/shapes'
    prepare_shapes(root)
    return root


@DATASETS.register_module()
class ShapesDetDataset(CocoDataset):
    """Instances of the shapes scenes (COCO format): circle, square, triangle."""
    METAINFO = dict(classes=CLASSES, palette=PALETTE)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault('data_root', _root(kwargs))
        super().__init__(*args, **kwargs)


@DATASETS.register_module()
class ShapesSegDataset(BaseSegDataset):
    """Semantic label maps of the shapes scenes: background, circle, square, triangle."""
    METAINFO = dict(classes=SEG_CLASSES, palette=SEG_PALETTE)

    def __init__(self, img_suffix='.png', seg_map_suffix='.png', reduce_zero_label=False,
                 **kwargs):
        kwargs.setdefault('data_root', _root(kwargs))
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)

