from .shapes import CLASSES, SEG_CLASSES, make_scene, prepare_shapes
from .shapes_datasets import ShapesDetDataset, ShapesSegDataset

__all__ = ['CLASSES', 'SEG_CLASSES', 'make_scene', 'prepare_shapes', 'ShapesDetDataset',
           'ShapesSegDataset']
