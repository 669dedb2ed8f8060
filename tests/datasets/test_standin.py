"""The COCO and ADE20K stand-ins: written in the real layouts, read by mmdet's ``CocoDataset`` and
mmseg's ``ADE20KDataset`` from the recipes' own dataset configs, labels mapped as documented,
deterministic, and never written over a folder that is not ours."""
import importlib.util
import json
import os
import os.path as osp
import stat

import cv2
import numpy as np
import pytest
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import DefaultScope
from pycocotools import mask as mask_utils

from mmvtx.datasets import make_scene
from mmvtx.datasets.standin import (ADE_SHAPE_CLASSES, COCO_SHAPE_CATEGORIES, STAMP,
                                    _ade_scenes, _coco_scenes, _mask_to_polygons,
                                    write_ade20k_standin, write_coco_standin)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
COCO_CFG = osp.join(REPO, 'configs', '_base_', 'datasets', 'coco_instance.py')
ADE_CFG = osp.join(REPO, 'configs', '_base_', 'datasets', 'ade20k_512x512.py')
NUM_COCO, NUM_ADE = (4, 2), (3, 2)  # (train, val): 4 train images hold one crowd region


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    return write_coco_standin(str(tmp_path_factory.mktemp('data') / 'coco'), *NUM_COCO)


@pytest.fixture(scope='module')
def ade_root(tmp_path_factory):
    return write_ade20k_standin(
        str(tmp_path_factory.mktemp('data') / 'ade' / 'ADEChallengeData2016'), *NUM_ADE)


def _outline(mask: np.ndarray) -> np.ndarray:
    """The pixels within one pixel of a mask's outline (inside or out): where contour rounding
    may differ. The image's edge counts as outline (a shape may be cut by it)."""
    kernel = np.ones((3, 3), np.uint8)
    m = mask.astype(np.uint8)
    inner = cv2.erode(m, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return (cv2.dilate(m, kernel) > 0) & ~(inner > 0)


def _assert_equal_up_to_outline(decoded: np.ndarray, mask: np.ndarray):
    assert not ((decoded.astype(bool) ^ mask) & ~_outline(mask)).any()
    assert abs(int(decoded.sum()) - int(mask.sum())) <= 0.5 * _outline(mask).sum()


def _files(root: str):
    return sorted(osp.relpath(osp.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_make_scene_size_is_optional():
    a, b = np.random.RandomState(3), np.random.RandomState(3)
    img_a, inst_a = make_scene(a)
    img_b, inst_b = make_scene(b, size=None)  # the shapes data: same draws as ever
    assert np.array_equal(img_a, img_b) and len(inst_a) == len(inst_b)
    assert a.randint(1 << 30) == b.randint(1 << 30)
    img, instances = make_scene(np.random.RandomState(3), size=(427, 640))
    assert img.shape == (427, 640, 3) and instances
    assert all(inst['mask'].shape == (427, 640) for inst in instances)


def test_polygons_describe_occluded_and_holed_masks():
    mask = np.zeros((120, 160), bool)
    mask[10:90, 10:100] = True
    mask[30:50, 30:50] = False  # two holes (shapes painted on top)
    mask[60:75, 70:80] = False
    mask[100:110, 120:150] = True  # a second part
    mask[5, 150] = True  # a one-pixel speck
    polygons = _mask_to_polygons(mask)
    assert len(polygons) >= 4 and all(len(p) >= 6 and len(p) % 2 == 0 for p in polygons)
    decoded = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, 120, 160)))
    assert not decoded[35:45, 35:45].any() and not decoded[64:71, 73:77].any()
    _assert_equal_up_to_outline(decoded, mask)


def test_coco_layout(coco_root):
    from mmdet.datasets import CocoDataset
    for split, num in zip(('train2017', 'val2017'), NUM_COCO):
        with open(osp.join(coco_root, 'annotations', f'instances_{split}.json')) as f:
            coco = json.load(f)
        assert {'info', 'licenses', 'images', 'annotations', 'categories'} <= set(coco)
        # all 80 categories, COCO's ids (1..90 with gaps), mmdet's names in mmdet's order
        cats = coco['categories']
        assert tuple(c['name'] for c in cats) == CocoDataset.METAINFO['classes']
        ids = [c['id'] for c in cats]
        assert len(ids) == 80 and ids == sorted(ids) and ids[0] == 1 and ids[-1] == 90
        assert not {12, 26, 29, 30, 45, 66, 68, 69, 71, 83} & set(ids)
        assert len(coco['images']) == num
        for info in coco['images']:
            assert info['file_name'] == f"{info['id']:012d}.jpg"
            img = cv2.imread(osp.join(coco_root, split, info['file_name']))
            assert img.shape[:2] == (info['height'], info['width'])
            assert max(img.shape[:2]) <= 640
        anns = coco['annotations']
        assert len({a['id'] for a in anns}) == len(anns)
        for ann in anns:
            if ann['iscrowd']:
                assert isinstance(ann['segmentation']['counts'], list)  # uncompressed RLE
            else:
                assert all(len(p) >= 6 for p in ann['segmentation'])
            assert ann['area'] > 0 and ann['bbox'][2] > 0 and ann['bbox'][3] > 0
        # one crowd region in every fourth image
        assert sum(ann['iscrowd'] for ann in anns) == num // 4
    assert sorted(os.listdir(osp.join(coco_root, 'train2017'))) == [
        f'{i:012d}.jpg' for i in range(1, NUM_COCO[0] + 1)]


def test_coco_recipe_dataset_and_pipeline(coco_root):
    from mmdet.registry import DATASETS
    cfg = Config.fromfile(COCO_CFG)
    scenes = list(_coco_scenes('train2017', NUM_COCO[0], seed=0))
    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = DATASETS.build(dict(cfg.train_dataloader.dataset, data_root=coco_root))
        load = Compose(cfg.train_pipeline[:2])  # LoadImageFromFile, LoadAnnotations
        classes = dataset.metainfo['classes']
        shape_labels = [classes.index(name) for name in COCO_SHAPE_CATEGORIES]
        assert len(dataset) == NUM_COCO[0]
        crowds = 0
        for i, scene in enumerate(scenes):
            info = dataset.get_data_info(i)
            assert info['img_id'] == scene['id']
            kept = [inst for inst in info['instances'] if not inst['ignore_flag']]
            assert [inst['bbox_label'] for inst in kept] == [
                shape_labels[inst['label']] for inst in scene['instances']]
            crowds += len(info['instances']) - len(kept)
            # masks decoded from the polygons are the scene's masks up to contour rounding
            results = load(info)
            masks = results['gt_masks'].to_ndarray()[~results['gt_ignore_flags']]
            assert len(masks) == len(scene['instances'])
            for decoded, inst in zip(masks, scene['instances']):
                _assert_equal_up_to_outline(decoded, inst['mask'])
        assert crowds == 1  # the fourth image's crowd, ignored in training
        # the recipe's whole train pipeline: resized to fit 1333x800, packed
        packed = dataset[0]
    inputs, sample = packed['inputs'], packed['data_samples']
    assert max(inputs.shape[1:]) == 1333 or min(inputs.shape[1:]) == 800
    assert len(sample.gt_instances) == len(scenes[0]['instances'])
    assert sample.gt_instances.masks.height == inputs.shape[1]
    assert set(sample.gt_instances.labels.tolist()) <= set(shape_labels)


def test_coco_bigger_images(tmp_path):
    root = write_coco_standin(str(tmp_path / 'coco'), 2, 0, max_side=1333)
    with open(osp.join(root, 'annotations', 'instances_train2017.json')) as f:
        images = json.load(f)['images']
    assert all(max(im['width'], im['height']) <= 1333 for im in images)
    assert max(max(im['width'], im['height']) for im in images) > 1000
    with pytest.raises(ValueError, match='max_side'):
        write_coco_standin(str(tmp_path / 'other'), max_side=2000)


def test_ade20k_recipe_dataset_and_labels(ade_root):
    from mmseg.datasets import ADE20KDataset
    from mmseg.registry import DATASETS
    # the documented classes are those of mmseg's ADE20KDataset (value = index + 1)
    classes = ADE20KDataset.METAINFO['classes']
    assert [classes[value - 1] for _, value in ADE_SHAPE_CLASSES] == [
        name for name, _ in ADE_SHAPE_CLASSES]
    for folder, infix, num in (('training', 'train', NUM_ADE[0]),
                               ('validation', 'val', NUM_ADE[1])):
        names = [f'ADE_{infix}_{i:08d}' for i in range(1, num + 1)]
        assert sorted(os.listdir(osp.join(ade_root, 'images', folder))) == [
            n + '.jpg' for n in names]
        assert sorted(os.listdir(osp.join(ade_root, 'annotations', folder))) == [
            n + '.png' for n in names]
    cfg = Config.fromfile(ADE_CFG)
    chosen = {value - 1 for _, value in ADE_SHAPE_CLASSES}  # after reduce_zero_label
    with DefaultScope.overwrite_default_scope('mmseg'):
        dataset = DATASETS.build(dict(cfg.train_dataloader.dataset, data_root=ade_root))
        load = Compose(cfg.train_pipeline[:2])  # LoadImageFromFile, LoadAnnotations
        assert len(dataset) == NUM_ADE[0]
        for i, (img, label) in enumerate(_ade_scenes('training', NUM_ADE[0], seed=0)):
            results = load(dataset.get_data_info(i))
            seg = results['gt_seg_map']
            assert seg.shape == results['img'].shape[:2] == img.shape[:2]
            assert min(seg.shape) == 512
            assert set(np.unique(seg)) <= chosen | {255} and 255 in seg
            # ADE20K's 0 ("other") became 255 and every class moved down by one
            assert np.array_equal(seg, (label.astype(np.int64) - 1) % 256)
            assert (label == 0).mean() < 0.05
        packed = dataset[0]  # the recipe's whole train pipeline: a crop of at most 512x512
    # (RandomResize to 0.5-2.0 of a 512 short side: the crop is 512 where the resized image
    # allows, down to 256 where it was shrunk)
    c, h, w = packed['inputs'].shape
    assert c == 3 and 256 <= h <= 512 and 256 <= w <= 512
    assert set(packed['data_samples'].gt_sem_seg.data.unique().tolist()) <= chosen | {255}


def test_refuses_a_folder_that_is_not_ours(tmp_path):
    # the user's real data sets: folders without our stamp
    coco = tmp_path / 'coco'
    (coco / 'annotations').mkdir(parents=True)
    (coco / 'annotations' / 'instances_train2017.json').write_text('{"real": true}')
    ade = tmp_path / 'ADEChallengeData2016'
    ade.mkdir()
    (ade / 'sceneCategories.txt').write_text('real')
    for force in (False, True):
        with pytest.raises(FileExistsError, match=str(coco)):
            write_coco_standin(str(coco), 1, 0, force=force)
        with pytest.raises(FileExistsError, match=str(ade)):
            write_ade20k_standin(str(ade), 1, 0, force=force)
    assert (coco / 'annotations' / 'instances_train2017.json').read_text() == '{"real": true}'
    assert (ade / 'sceneCategories.txt').read_text() == 'real'
    assert sorted(os.listdir(tmp_path)) == ['ADEChallengeData2016', 'coco']  # no leftovers
    # an empty folder (made ahead by the user) is filled
    (tmp_path / 'empty').mkdir()
    write_coco_standin(str(tmp_path / 'empty'), 1, 0)
    assert osp.isfile(osp.join(tmp_path, 'empty', STAMP))


def test_folders_get_the_permissions_of_a_new_folder(tmp_path):
    """The stand-ins were renamed into place from a ``tempfile.mkdtemp`` folder (0o700): data/coco
    could be read by the user who wrote it alone."""
    old = os.umask(0o022)
    try:
        roots = [write_coco_standin(str(tmp_path / 'coco'), 1, 0),
                 write_ade20k_standin(str(tmp_path / 'ade' / 'ADEChallengeData2016'), 1, 0)]
    finally:
        os.umask(old)
    for root in roots:
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o755, root


def test_deterministic_idempotent_and_regenerated(coco_root, ade_root, tmp_path):
    # two writes with the same arguments give identical files
    for write, root, num in ((write_coco_standin, coco_root, NUM_COCO),
                             (write_ade20k_standin, ade_root, NUM_ADE)):
        again = write(str(tmp_path / osp.basename(root)), *num)
        assert _files(again) == _files(root)
        for name in _files(root):
            with open(osp.join(root, name), 'rb') as a, open(osp.join(again, name), 'rb') as b:
                assert a.read() == b.read(), name
    # a second call with the same arguments writes nothing; other arguments regenerate
    stamp = osp.join(coco_root, STAMP)
    before = os.stat(stamp).st_mtime_ns, os.stat(stamp).st_ino
    write_coco_standin(coco_root, *NUM_COCO)
    assert (os.stat(stamp).st_mtime_ns, os.stat(stamp).st_ino) == before
    root = str(tmp_path / 'coco')
    write_coco_standin(root, NUM_COCO[0], 1, seed=0)
    assert len(os.listdir(osp.join(root, 'val2017'))) == 1
    with open(osp.join(root, STAMP)) as f:
        assert json.load(f)['args']['num_val'] == 1
    first = os.stat(osp.join(root, STAMP)).st_ino
    write_coco_standin(root, NUM_COCO[0], 1, seed=0, force=True)
    assert os.stat(osp.join(root, STAMP)).st_ino != first
    assert sorted(os.listdir(tmp_path)) == ['ADEChallengeData2016', 'coco']  # no temp folders


def test_cli(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        'make_standin_data', osp.join(REPO, 'tools', 'dataset_converters',
                                      'make_standin_data.py'))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    root = str(tmp_path / 'coco')
    cli.main(['coco', '--root', root, '--num-train', '1', '--num-val', '1', '--seed', '3'])
    out = capsys.readouterr().out
    assert root in out and 'train2017/: 1 images' in out
    assert osp.isfile(osp.join(root, 'val2017', '000001000001.jpg'))
    with pytest.raises(SystemExit):
        cli.main(['all', '--root', root])
    # an empty split (it failed later, in the recipe's data loader) is refused, nothing written
    for flags, code, message in ((['--num-train', '0'], 1, 'num_train must be an int >= 1'),
                                 (['--num-val', '0'], 2, '--num-val 0: must be >= 1')):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(['ade20k', '--root', str(tmp_path / 'ade')] + flags)
        assert exit_info.value.code == code and message in capsys.readouterr().err
    assert not osp.exists(tmp_path / 'ade')
    # --max-side sizes the COCO layout only: with ade20k it had been ignored without a word
    with pytest.raises(SystemExit) as exit_info:
        cli.main(['ade20k', '--root', str(tmp_path / 'ade'), '--max-side', '1333'])
    assert exit_info.value.code == 2
    assert '--max-side 1333: sizes the COCO stand-in only' in capsys.readouterr().err
    assert not osp.exists(tmp_path / 'ade')
    with pytest.raises(ValueError, match='num_val must be an int >= 0'):
        write_coco_standin(str(tmp_path / 'coco2'), 1, -1)
