"""The embedded shapes data: deterministic, consistent between detection and segmentation, and
readable by mmdet's and mmseg's own dataset classes."""
import json
import os
import os.path as osp
import re
import stat

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mmvtx.datasets import make_scene, prepare_shapes
from mmvtx.datasets.shapes import SPLITS


@pytest.fixture(scope='module')
def shapes_root(tmp_path_factory):
    return prepare_shapes(str(tmp_path_factory.mktemp('data') / 'shapes'))


def test_scenes_are_deterministic_and_varied():
    a = [make_scene(np.random.RandomState(7)) for _ in range(2)]
    assert np.array_equal(a[0][0], a[1][0])
    rng = np.random.RandomState(0)
    scenes = [make_scene(rng) for _ in range(30)]
    sizes = {img.shape[:2] for img, _ in scenes}
    assert any(h != w for h, w in sizes) and len(sizes) > 2
    labels = {inst['label'] for _, insts in scenes for inst in insts}
    assert labels == {0, 1, 2}
    counts = [len(insts) for _, insts in scenes]
    assert min(counts) >= 1 and max(counts) <= 4
    for _, insts in scenes:
        for inst in insts:  # occluded, but never more than 30% hidden
            assert inst['mask'].sum() >= 0.7 * inst['area_full'] - 1


def test_layout_and_annotations_agree(shapes_root):
    for split, (num, _) in SPLITS.items():
        with open(osp.join(shapes_root, 'annotations', f'instances_{split}.json')) as f:
            coco = json.load(f)
        assert len(coco['images']) == num
        assert [c['name'] for c in coco['categories']] == ['circle', 'square', 'triangle']
        by_image = {}
        for ann in coco['annotations']:
            by_image.setdefault(ann['image_id'], []).append(ann)
        for info in coco['images'][:20]:
            img = cv2.imread(osp.join(shapes_root, 'images', split, info['file_name']))
            label = cv2.imread(osp.join(shapes_root, 'labels', split, info['file_name']),
                               cv2.IMREAD_UNCHANGED)
            assert img.shape[:2] == label.shape == (info['height'], info['width'])
            rebuilt = np.zeros_like(label)
            for ann in by_image[info['id']]:
                m = mask_utils.decode(ann['segmentation']).astype(bool)
                assert m.sum() == ann['area'] > 0
                x, y, w, h = ann['bbox']
                ys, xs = np.nonzero(m)
                assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
                assert not rebuilt[m].any()  # visible masks do not overlap
                rebuilt[m] = ann['category_id']
            assert np.array_equal(rebuilt, label)


def test_generation_is_idempotent_and_atomic(shapes_root, tmp_path):
    stamp = [f for f in __import__('os').listdir(shapes_root) if f.startswith('.complete')]
    assert stamp
    before = osp.getmtime(osp.join(shapes_root, 'annotations', 'instances_val.json'))
    prepare_shapes(shapes_root)
    assert osp.getmtime(osp.join(shapes_root, 'annotations', 'instances_val.json')) == before
    assert not [p for p in __import__('os').listdir(osp.dirname(shapes_root))
                if p.startswith('.shapes-')]


def test_a_folder_not_generated_here_is_left_untouched(tmp_path, monkeypatch):
    """data_root pointed at the user's own folder raises naming it (it was deleted and replaced
    by the scenes); an empty folder or one an older version generated is (re)written."""
    import mmvtx.datasets.shapes as shapes
    mine = tmp_path / 'mine'
    mine.mkdir()
    (mine / 'photo.png').write_bytes(b'precious')
    with pytest.raises(FileExistsError, match=re.escape(str(mine))):
        prepare_shapes(str(mine))
    with pytest.raises(FileExistsError, match=re.escape(str(mine))):
        prepare_shapes(str(mine), force=True)
    assert (mine / 'photo.png').read_bytes() == b'precious'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['mine']  # nothing generated beside

    monkeypatch.setattr(shapes, 'SPLITS', {'train': (2, 0), 'val': (1, 1)})
    older = tmp_path / 'older'
    (older / 'images').mkdir(parents=True)
    (older / '.complete-v2').write_text('')
    empty = tmp_path / 'empty'
    empty.mkdir()
    for root in (older, empty):
        prepare_shapes(str(root))
        assert (root / f'.complete-v{shapes.VERSION}').exists()
        assert not (root / '.complete-v2').exists()
        assert len(list((root / 'images' / 'train').iterdir())) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ['empty', 'mine', 'older']


@pytest.mark.parametrize('umask', [0o022, 0o002])
def test_the_folder_gets_the_permissions_of_a_new_folder(tmp_path, monkeypatch, umask):
    """The data were renamed into place from a ``tempfile.mkdtemp`` folder, which is 0o700: no
    one but the user who generated them could read them (a shared data/ folder, data written
    by a container's root for the host's user)."""
    import mmvtx.datasets.shapes as shapes
    monkeypatch.setattr(shapes, 'SPLITS', {'train': (1, 0), 'val': (1, 1)})
    old = os.umask(umask)
    try:
        root = prepare_shapes(str(tmp_path / 'shapes'))
        prepare_shapes(root, force=True)  # regenerated in place: the same
    finally:
        os.umask(old)
    for folder in (root, osp.join(root, 'images'), osp.join(root, 'annotations')):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o777 & ~umask, folder


def test_mmdet_and_mmseg_datasets_read_it(shapes_root):
    from mmdet.registry import DATASETS as DET
    from mmseg.registry import DATASETS as SEG
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        det = DET.build(dict(type='mmvtx.ShapesDetDataset', data_root=shapes_root,
                             ann_file='annotations/instances_val.json',
                             data_prefix=dict(img='images/val/'), test_mode=True, pipeline=[]))
    assert len(det) == SPLITS['val'][0]
    assert det.metainfo['classes'] == ('circle', 'square', 'triangle')
    with DefaultScope.overwrite_default_scope('mmseg'):
        seg = SEG.build(dict(type='mmvtx.ShapesSegDataset', data_root=shapes_root,
                             data_prefix=dict(img_path='images/val', seg_map_path='labels/val'),
                             pipeline=[]))
    assert len(seg) == SPLITS['val'][0]
    assert seg.metainfo['classes'] == ('background', 'circle', 'square', 'triangle')


def test_a_shapes_config_pointed_at_the_users_data_names_the_dataset_type_to_use(tmp_path):
    """A user copies the shapes config (the one that trains on a CPU) and sets data_root to
    their own COCO-format folder: the error said to point data_root at another folder, which
    is the one thing they do not want. It names the dataset type that reads their data."""
    from mmdet.registry import DATASETS as DET
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS as SEG
    mine = tmp_path / 'balloon'
    (mine / 'annotations').mkdir(parents=True)
    (mine / 'annotations' / 'train.json').write_text('{}')
    for registry, scope, name, advice in (
            (DET, 'mmdet', 'ShapesDetDataset', "type='CocoDataset' with metainfo"),
            (SEG, 'mmseg', 'ShapesSegDataset', "type='BaseSegDataset' with metainfo")):
        with DefaultScope.overwrite_default_scope(scope), \
                pytest.raises(FileExistsError) as e:
            registry.build(dict(type=f'mmvtx.{name}', data_root=str(mine), pipeline=[]))
        msg = str(e.value)
        assert str(mine) in msg and f'mmvtx.{name} is the generated shapes scenes' in msg
        assert f'to train on your own data in {mine}, set the dataset {advice}' in msg
    assert sorted(p.name for p in mine.iterdir()) == ['annotations']  # left untouched
