"""The shapes scenes as an mmdet ``CocoDataset`` and an mmseg ``BaseSegDataset``.

Both generate the data on first use (see :func:`prepare_shapes`); otherwise they behave exactly
like their parents, so every mmdet/mmseg pipeline and evaluator works on them."""
from mmdet.datasets import CocoDataset
from mmseg.datasets import BaseSegDataset

from mmvtx.registry import DATASETS
from .shapes import CLASSES, PALETTE, SEG_CLASSES, SEG_PALETTE, prepare_shapes


# what a user who points a shapes config at their own data wants instead
OWN_DATA = {
    'ShapesDetDataset': "type='CocoDataset' with metainfo=dict(classes=(...)), ann_file and "
                        "data_prefix (and val_evaluator.ann_file), as mmdet's configs do",
    'ShapesSegDataset': "type='BaseSegDataset' with metainfo=dict(classes=(...)), img_suffix, "
                        "seg_map_suffix, reduce_zero_label and data_prefix, as mmseg's "
                        "configs do",
}


def _root(kwargs, dataset: str) -> str:
    root = kwargs.get('data_root') or 'data/shapes'
    try:
        prepare_shapes(root)
    except FileExistsError as e:
        # a shapes config (the one that runs on a CPU) pointed at the user's own data: the
        # dataset type is what has to change, not the folder
        raise FileExistsError(
            f'{e}\nmmvtx.{dataset} is the generated shapes scenes; to train on your own data '
            f'in {root}, set the dataset {OWN_DATA[dataset]}.') from None
    return root


@DATASETS.register_module()
class ShapesDetDataset(CocoDataset):
    """Instances of the shapes scenes (COCO format): circle, square, triangle."""
    METAINFO = dict(classes=CLASSES, palette=PALETTE)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault('data_root', _root(kwargs, 'ShapesDetDataset'))
        super().__init__(*args, **kwargs)


@DATASETS.register_module()
class ShapesSegDataset(BaseSegDataset):
    """Semantic label maps of the shapes scenes: background, circle, square, triangle."""
    METAINFO = dict(classes=SEG_CLASSES, palette=SEG_PALETTE)

    def __init__(self, img_suffix='.png', seg_map_suffix='.png', reduce_zero_label=False,
                 **kwargs):
        kwargs.setdefault('data_root', _root(kwargs, 'ShapesSegDataset'))
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)

