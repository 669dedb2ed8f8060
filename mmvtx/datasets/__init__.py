from .shapes import CLASSES, SEG_CLASSES, make_scene, prepare_shapes
from .shapes_datasets import ShapesDetDataset, ShapesSegDataset
from .standin import write_ade20k_standin, write_coco_standin

__all__ = ['CLASSES', 'SEG_CLASSES', 'make_scene', 'prepare_shapes', 'ShapesDetDataset',
           'ShapesSegDataset', 'write_ade20k_standin', 'write_coco_standin']
from .transforms import PadKeepImgShape  # noqa: F401
