"""Stand-in data: the shapes scenes written in the real COCO and ADE20K layouts.

The recipes under ``configs/`` read ``data/coco`` and ``data/ade/ADEChallengeData2016`` exactly as
mmdet and mmseg expect them. These two writers put small, deterministic *synthetic* data sets in
those layouts, drawn from the embedded shapes scenes (:func:`~mmvtx.datasets.shapes.make_scene`:
coloured circles, squares and triangles, partly occluded, over noise), so that the unchanged
recipes run end to end — loading, augmentation, training, evaluation — in tests and on a machine
without the real data. They are **not** COCO or ADE20K: numbers trained or measured on them say
nothing about the real benchmarks.

COCO 2017 instances (:func:`write_coco_standin`)::

    data/coco/
      annotations/instances_train2017.json    COCO json: info, licenses, images, annotations,
      annotations/instances_val2017.json        and all 80 categories with their real ids
      train2017/000000000001.jpg ...          JPEG, named by image id (%012d.jpg)
      val2017/000001000001.jpg ...

Images have COCO's sizes (at most 640 a side: 640x480, 480x640, 640x427, 427x640, 612x612,
640x360), or those sizes scaled up to ``max_side`` (up to 1333, to stress the 1333x800 pipeline).
Every visible shape is one non-crowd annotation with polygon segmentation traced from its visible
mask (several polygons where occlusion cuts it in parts), ``bbox`` and ``area``. Every fourth
image also holds a "crowd": a cluster of small shapes of one kind behind the others, annotated as
one ``iscrowd=1`` uncompressed RLE, as COCO does (mmdet ignores those regions in training). The
shapes map onto three COCO categories:

    =========  ========================  ===========================
    shape      COCO category (id)        mmdet ``CocoDataset`` label
    =========  ========================  ===========================
    circle     ``sports ball`` (37)      32
    square     ``tv`` (72)               62
    triangle   ``kite`` (38)             33
    =========  ========================  ===========================

ADE20K / SceneParse150 (:func:`write_ade20k_standin`)::

    data/ade/ADEChallengeData2016/
      images/training/ADE_train_00000001.jpg ...       JPEG
      images/validation/ADE_val_00000001.jpg ...
      annotations/training/ADE_train_00000001.png ...  uint8 label maps
      annotations/validation/ADE_val_00000001.png ...

Images have ADE20K-like sizes (short side 512: 683x512, 512x683, 512x512, 768x512). Label maps
follow ADE20K's convention: 0 is "other" (unlabelled) and 1..150 are the 150 classes of mmseg's
``ADE20KDataset`` shifted by one, which the recipes' ``reduce_zero_label=True`` turns into 0..149
and 255 (ignored). A band two pixels wide along every shape's outline is 0, as ADE20K leaves
object boundaries unlabelled, so every map exercises the ignore path:

    ===========  ===================  ======================  ===========================
    region       ADE20K class         value in the PNG        label after reduce_zero_label
    ===========  ===================  ======================  ===========================
    outlines     "other"              0                       255 (ignored)
    background   ``wall``             1                       0
    circle       ``ball``             120                     119
    square       ``box``              42                      41
    triangle     ``flag``             150                     149
    ===========  ===================  ======================  ===========================

Both writers are deterministic (same arguments, byte-identical files), atomic and idempotent like
:func:`~mmvtx.datasets.shapes.prepare_shapes`: the data are written to a temporary folder beside
``root`` and renamed into place, with a stamp (``.mmvtx-standin.json``) that records the
generator's version and the arguments. A second call with the same arguments returns at once;
other arguments or ``force=True`` regenerate. A folder that exists without that stamp (the real
COCO, say) is never touched: the writers raise instead.

From the command line: ``python tools/dataset_converters/make_standin_data.py {coco,ade20k,all}``.
"""
import json
import os
import os.path as osp
import shutil
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from .shapes import (CLASS_HUES, VERSION as SHAPES_VERSION, _hsv_to_rgb, _shape_mask,
                     make_scene, make_temp_dir)

STANDIN_VERSION = 1  # bump when what is written changes: stand-ins of another version regenerate
STAMP = '.mmvtx-standin.json'
JPEG_QUALITY = 90

# ---------------------------------------------------------------------------------------------
# COCO 2017
# ---------------------------------------------------------------------------------------------

# The 80 COCO categories: (id, name, supercategory), ids 1..90 with COCO's gaps; the names are
# those of mmdet's ``CocoDataset.METAINFO['classes']``, in the same order.
COCO_CATEGORIES = (
    (1, 'person', 'person'), (2, 'bicycle', 'vehicle'), (3, 'car', 'vehicle'),
    (4, 'motorcycle', 'vehicle'), (5, 'airplane', 'vehicle'), (6, 'bus', 'vehicle'),
    (7, 'train', 'vehicle'), (8, 'truck', 'vehicle'), (9, 'boat', 'vehicle'),
    (10, 'traffic light', 'outdoor'), (11, 'fire hydrant', 'outdoor'),
    (13, 'stop sign', 'outdoor'), (14, 'parking meter', 'outdoor'), (15, 'bench', 'outdoor'),
    (16, 'bird', 'animal'), (17, 'cat', 'animal'), (18, 'dog', 'animal'),
    (19, 'horse', 'animal'), (20, 'sheep', 'animal'), (21, 'cow', 'animal'),
    (22, 'elephant', 'animal'), (23, 'bear', 'animal'), (24, 'zebra', 'animal'),
    (25, 'giraffe', 'animal'), (27, 'backpack', 'accessory'), (28, 'umbrella', 'accessory'),
    (31, 'handbag', 'accessory'), (32, 'tie', 'accessory'), (33, 'suitcase', 'accessory'),
    (34, 'frisbee', 'sports'), (35, 'skis', 'sports'), (36, 'snowboard', 'sports'),
    (37, 'sports ball', 'sports'), (38, 'kite', 'sports'), (39, 'baseball bat', 'sports'),
    (40, 'baseball glove', 'sports'), (41, 'skateboard', 'sports'),
    (42, 'surfboard', 'sports'), (43, 'tennis racket', 'sports'), (44, 'bottle', 'kitchen'),
    (46, 'wine glass', 'kitchen'), (47, 'cup', 'kitchen'), (48, 'fork', 'kitchen'),
    (49, 'knife', 'kitchen'), (50, 'spoon', 'kitchen'), (51, 'bowl', 'kitchen'),
    (52, 'banana', 'food'), (53, 'apple', 'food'), (54, 'sandwich', 'food'),
    (55, 'orange', 'food'), (56, 'broccoli', 'food'), (57, 'carrot', 'food'),
    (58, 'hot dog', 'food'), (59, 'pizza', 'food'), (60, 'donut', 'food'),
    (61, 'cake', 'food'), (62, 'chair', 'furniture'), (63, 'couch', 'furniture'),
    (64, 'potted plant', 'furniture'), (65, 'bed', 'furniture'),
    (67, 'dining table', 'furniture'), (70, 'toilet', 'furniture'), (72, 'tv', 'electronic'),
    (73, 'laptop', 'electronic'), (74, 'mouse', 'electronic'), (75, 'remote', 'electronic'),
    (76, 'keyboard', 'electronic'), (77, 'cell phone', 'electronic'),
    (78, 'microwave', 'appliance'), (79, 'oven', 'appliance'), (80, 'toaster', 'appliance'),
    (81, 'sink', 'appliance'), (82, 'refrigerator', 'appliance'), (84, 'book', 'indoor'),
    (85, 'clock', 'indoor'), (86, 'vase', 'indoor'), (87, 'scissors', 'indoor'),
    (88, 'teddy bear', 'indoor'), (89, 'hair drier', 'indoor'), (90, 'toothbrush', 'indoor'),
)
# shape kind (circle, square, triangle) -> COCO category name
COCO_SHAPE_CATEGORIES = ('sports ball', 'tv', 'kite')
# (W, H) of COCO images: common sizes of the real ones (at most 640 a side)
COCO_SIZES = ((640, 480), (480, 640), (640, 427), (427, 640), (612, 612), (640, 360))
COCO_MAX_SIDE = 1333  # the recipes resize to fit 1333x800: bigger images only cost time
COCO_SPLITS = ('train2017', 'val2017')
CROWD_EVERY = 4  # every fourth image also holds a crowd region (iscrowd=1)


def _coco_size(index: int, max_side: int) -> Tuple[int, int]:
    """``(H, W)`` of the ``index``-th COCO size, scaled so that its long side is ``max_side``
    (at the default 640, COCO's own sizes)."""
    W, H = COCO_SIZES[index]
    scale = max_side / 640
    return int(round(H * scale)), int(round(W * scale))


def _add_crowd(rng: np.random.RandomState, img: np.ndarray,
               instances: List[Dict]) -> Optional[Tuple[int, np.ndarray]]:
    """Paints a crowd: a cluster of 6..12 small shapes of one kind, behind every instance (only
    background pixels are painted). Returns ``(kind, mask)`` of its visible pixels, or None if
    none is left in view."""
    H, W = img.shape[:2]
    side = min(H, W)
    kind = rng.randint(3)
    spread = rng.uniform(0.08, 0.15) * side  # how far from the cluster's centre shapes fall
    cx, cy = rng.uniform(spread, W - spread), rng.uniform(spread, H - spread)
    free = np.ones((H, W), bool)  # the background: not covered by any instance
    for inst in instances:
        free &= ~inst['mask']
    crowd = np.zeros((H, W), bool)
    for _ in range(rng.randint(6, 13)):
        r = rng.uniform(0.015, 0.03) * side
        x, y = cx + rng.uniform(-spread, spread), cy + rng.uniform(-spread, spread)
        part = _shape_mask(kind, H, W, x, y, r, rng.uniform(0, 2 * np.pi)) & free
        color = _hsv_to_rgb(CLASS_HUES[kind] + rng.uniform(-25, 25), rng.uniform(0.55, 1.0),
                            rng.uniform(0.55, 1.0))
        img[part] = np.clip(color + rng.normal(0, 12, (int(part.sum()), 3)), 0, 255)
        crowd |= part
    return (kind, crowd) if crowd.any() else None


def _coco_scenes(split: str, num: int, seed: int, max_side: int = 640) -> Iterator[Dict]:
    """The scenes of one COCO stand-in split, in order: dicts of ``id`` (the image id),
    ``img`` (RGB), ``instances`` (as :func:`make_scene` gives them) and ``crowd``
    (``(kind, mask)`` or None)."""
    # one random stream per (seed, data set, split): train and val, COCO and ADE20K all differ
    rng = np.random.RandomState([seed, 0, COCO_SPLITS.index(split)])
    first_id = 1 + 1_000_000 * COCO_SPLITS.index(split)  # image ids never repeat across splits
    for idx in range(num):
        size = _coco_size(rng.randint(len(COCO_SIZES)), max_side)
        img, instances = make_scene(rng, size=size)
        crowd = _add_crowd(rng, img, instances) if idx % CROWD_EVERY == CROWD_EVERY - 1 else None
        yield dict(id=first_id + idx, img=img, instances=instances, crowd=crowd)


def _hole_free_parts(mask: np.ndarray) -> List[np.ndarray]:
    """Cuts a mask into parts without holes, so that polygons can describe it.

    A COCO polygon has no holes (overlapping polygons of one annotation are united), yet a shape
    with a smaller one painted inside it has one. Such a part is cut in two along a pixel column
    through the hole; both halves keep that column, so that the hole opens to the outside in each
    and their polygons still meet. Repeated until no part has a hole."""
    parts, todo = [], [mask]
    while todo:
        part = todo.pop()
        contours, hierarchy = cv2.findContours(part.astype(np.uint8), cv2.RETR_CCOMP,
                                               cv2.CHAIN_APPROX_NONE)
        # with RETR_CCOMP, a contour that has a parent is the border of a hole (the object
        # pixels around it)
        holes = [c for c, h in zip(contours, hierarchy[0]) if h[3] >= 0] if contours else []
        if not holes:
            parts.append(part)
            continue
        xs = holes[0][:, 0, 0]
        cut = (int(xs.min()) + int(xs.max())) // 2  # a column that crosses the hole
        left, right = part.copy(), part.copy()
        left[:, cut + 1:] = False
        right[:, :cut] = False
        todo += [left, right]
    return parts


def _mask_to_polygons(mask: np.ndarray) -> List[List[float]]:
    """COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` of a binary mask: one for every connected
    part (and every hole-free piece of it, see :func:`_hole_free_parts`).

    Vertices are the centres of the outline pixels in COCO's continuous coordinates (pixel
    ``(i, j)`` covers ``[i, i + 1) x [j, j + 1)``), so decoding gives the mask back up to the
    outline pixels themselves (contour rounding). Specks of one or two pixels, which enclose no
    area, are left out."""
    polygons = []
    for part in _hole_free_parts(mask):
        contours, _ = cv2.findContours(part.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        for contour in contours:
            if len(contour) >= 3:
                polygons.append([round(float(v) + 0.5, 2) for v in contour.reshape(-1)])
    return polygons


def _uncompressed_rle(mask: np.ndarray) -> Dict:
    """COCO's uncompressed RLE of a mask (as its crowd annotations are stored): run lengths of
    alternating 0s and 1s, starting with 0s, over the pixels in column-major order."""
    flat = mask.T.reshape(-1).astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return dict(counts=counts, size=list(mask.shape))


def _bbox(mask: np.ndarray) -> List[float]:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() + 1 - x0), float(ys.max() + 1 - y0)]


def _write_coco_split(root: str, split: str, num: int, seed: int, max_side: int):
    category_ids = {name: cid for cid, name, _ in COCO_CATEGORIES}
    shape_ids = [category_ids[name] for name in COCO_SHAPE_CATEGORIES]
    os.makedirs(osp.join(root, split))
    images, annotations = [], []
    first_ann_id = 1 + 1_000_000 * COCO_SPLITS.index(split)

    def annotate(image_id, kind, mask, segmentation, iscrowd):
        annotations.append(dict(
            id=first_ann_id + len(annotations), image_id=image_id,
            category_id=shape_ids[kind], segmentation=segmentation, area=float(mask.sum()),
            bbox=_bbox(mask), iscrowd=iscrowd))

    for scene in _coco_scenes(split, num, seed, max_side):
        img, image_id = scene['img'], scene['id']
        name = f'{image_id:012d}.jpg'
        cv2.imwrite(osp.join(root, split, name), img[:, :, ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        images.append(dict(license=1, file_name=name, height=img.shape[0], width=img.shape[1],
                           date_captured='', id=image_id))
        for inst in scene['instances']:
            polygons = _mask_to_polygons(inst['mask'])
            if polygons:  # a shape hidden down to specks is no instance
                annotate(image_id, inst['label'], inst['mask'], polygons, 0)
        if scene['crowd'] is not None:
            kind, mask = scene['crowd']
            annotate(image_id, kind, mask, _uncompressed_rle(mask), 1)
    coco = dict(
        info=dict(description='mmvtx synthetic stand-in in the COCO 2017 layout (shapes scenes; '
                              'not COCO data)',
                  url='', version=str(STANDIN_VERSION), year=2017, contributor='mmvtx',
                  date_created=''),
        licenses=[dict(id=1, name='synthetic data generated by mmvtx', url='')],
        images=images, annotations=annotations,
        categories=[dict(supercategory=sup, id=cid, name=name)
                    for cid, name, sup in COCO_CATEGORIES])
    with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
        json.dump(coco, f)


def write_coco_standin(root: str = 'data/coco', num_train: int = 8, num_val: int = 4,
                       seed: int = 0, force: bool = False, *, max_side: int = 640) -> str:
    """Writes the shapes scenes as COCO 2017 instances under ``root`` (see the module's
    docstring for the layout and the class mapping); returns ``root``.

    Args:
        root: the folder, ``data/coco`` in OpenMMLab's layout.
        num_train: images in ``train2017``.
        num_val: images in ``val2017``.
        seed: which scenes are drawn; the same arguments give byte-identical files.
        force: regenerate even if ``root`` holds this very stand-in already.
        max_side: long side of the largest images; the default 640 gives COCO's own sizes,
            larger values (up to 1333) scale them all up (the scenes are drawn at that size,
            so they are not the 640 ones enlarged).
    """
    if not 64 <= max_side <= COCO_MAX_SIDE:
        raise ValueError(f'max_side must be in [64, {COCO_MAX_SIDE}] (the recipes resize to '
                         f'1333x800), got {max_side}')

    def write(tmp: str):
        os.makedirs(osp.join(tmp, 'annotations'))
        for split, num in zip(COCO_SPLITS, (num_train, num_val)):
            _write_coco_split(tmp, split, num, seed, max_side)

    return _write_atomically(root, 'coco', dict(num_train=num_train, num_val=num_val, seed=seed,
                                                max_side=max_side), write, force)


# ---------------------------------------------------------------------------------------------
# ADE20K (SceneParse150)
# ---------------------------------------------------------------------------------------------

# region -> (ADE20K class name, value in the label maps = index in mmseg's classes + 1);
# shapes' background first, then circle, square, triangle
ADE_SHAPE_CLASSES = (('wall', 1), ('ball', 120), ('box', 42), ('flag', 150))
ADE_OTHER = 0  # "other": unlabelled, ignored (255) after reduce_zero_label
# (W, H) of ADE20K-like images: short side 512, as the recipes' 2048x512 scale assumes
ADE_SIZES = ((683, 512), (512, 683), (512, 512), (768, 512))
ADE_SPLITS = (('training', 'train'), ('validation', 'val'))  # folder, file name infix


def _ade_scenes(split: str, num: int, seed: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """The scenes of one ADE20K stand-in split, in order: ``(img, label_map)`` (RGB, uint8)."""
    folders = [folder for folder, _ in ADE_SPLITS]
    rng = np.random.RandomState([seed, 1, folders.index(split)])
    values = [value for _, value in ADE_SHAPE_CLASSES]
    for _ in range(num):
        W, H = ADE_SIZES[rng.randint(len(ADE_SIZES))]
        img, instances = make_scene(rng, size=(H, W))
        label = np.full((H, W), values[0], np.uint8)
        ids = np.zeros((H, W), np.int32)  # which instance each pixel shows (0: background)
        for i, inst in enumerate(instances):
            label[inst['mask']] = values[inst['label'] + 1]
            ids[inst['mask']] = i + 1
        # the outlines, unlabelled: both pixels of every pair of 4-neighbours that show
        # different instances (or an instance and the background)
        outline = np.zeros((H, W), bool)
        for axis in (0, 1):
            differ = np.diff(ids, axis=axis) != 0
            lo = (slice(None, -1), slice(None)) if axis == 0 else (slice(None), slice(None, -1))
            hi = (slice(1, None), slice(None)) if axis == 0 else (slice(None), slice(1, None))
            outline[lo] |= differ
            outline[hi] |= differ
        label[outline] = ADE_OTHER
        yield img, label


def write_ade20k_standin(root: str = 'data/ade/ADEChallengeData2016', num_train: int = 8,
                         num_val: int = 4, seed: int = 0, force: bool = False) -> str:
    """Writes the shapes scenes as ADE20K (SceneParse150) images and label maps under ``root``
    (see the module's docstring for the layout and the class mapping); returns ``root``.

    Args:
        root: the folder, ``data/ade/ADEChallengeData2016`` in OpenMMLab's layout.
        num_train: images in ``training``.
        num_val: images in ``validation``.
        seed: which scenes are drawn; the same arguments give byte-identical files.
        force: regenerate even if ``root`` holds this very stand-in already.
    """

    def write(tmp: str):
        for (folder, infix), num in zip(ADE_SPLITS, (num_train, num_val)):
            os.makedirs(osp.join(tmp, 'images', folder))
            os.makedirs(osp.join(tmp, 'annotations', folder))
            for idx, (img, label) in enumerate(_ade_scenes(folder, num, seed)):
                name = f'ADE_{infix}_{idx + 1:08d}'  # ADE20K counts from 1
                cv2.imwrite(osp.join(tmp, 'images', folder, name + '.jpg'), img[:, :, ::-1],
                            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                cv2.imwrite(osp.join(tmp, 'annotations', folder, name + '.png'), label)

    return _write_atomically(root, 'ade20k', dict(num_train=num_train, num_val=num_val,
                                                  seed=seed), write, force)


# ---------------------------------------------------------------------------------------------
# Atomic, idempotent writing
# ---------------------------------------------------------------------------------------------


GENERATOR = 'mmvtx.datasets.standin'  # recorded in the stamp: the folder is ours


def _read_stamp(root: str) -> Optional[Dict]:
    """The stamp of a stand-in written here, or None (no stamp, or not one of ours)."""
    try:
        with open(osp.join(root, STAMP)) as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) and stamp.get('generator') == GENERATOR else None


def _check_replaceable(root: str):
    """Raises unless ``root`` is absent, an empty folder or a stand-in written here: a folder
    without our stamp may be the user's real data set."""
    if not osp.lexists(root):
        return
    if osp.isdir(root) and not osp.islink(root) and (
            _read_stamp(root) is not None or not os.listdir(root)):
        return
    raise FileExistsError(
        f'{root} exists and is not a stand-in written by mmvtx (it has no {STAMP}): it may be '
        f'the real data set, so it is left untouched. Pass another root, or move it away.')


def _write_atomically(root: str, dataset: str, args: Dict, write: Callable[[str], None],
                      force: bool) -> str:
    """Runs ``write(tmp)`` into a temporary folder beside ``root`` and renames it into place with
    a stamp of the version and ``args``, unless ``root`` already holds exactly that stand-in.

    The old stand-in is renamed away before the new one is renamed in, so an interrupted run or
    several processes (DDP) starting at once never leave a half-written data set behind."""
    # an empty training split fails later, in the recipe's data loader (an empty val split is
    # a training-only stand-in)
    for name, least in (('num_train', 1), ('num_val', 0)):
        if not (isinstance(args[name], int) and args[name] >= least):
            raise ValueError(f'{name} must be an int >= {least} (images in the {dataset} '
                             f'stand-in\'s {name[4:]} split), got {args[name]!r}')
    root = os.fspath(root)
    stamp = dict(generator=GENERATOR, dataset=dataset, version=STANDIN_VERSION,
                 shapes_version=SHAPES_VERSION, args=args)
    for key, value in args.items():
        if not isinstance(value, int) or value < 0:
            raise ValueError(f'{key} must be a non-negative integer, got {value!r}')
    if not force and _read_stamp(root) == stamp:
        return root
    _check_replaceable(root)  # fail before generating anything
    parent = osp.dirname(osp.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = make_temp_dir(parent, f'.{osp.basename(osp.abspath(root))}-standin-')
    old = tmp + '-old'
    try:
        write(tmp)
        with open(osp.join(tmp, STAMP), 'w') as f:
            json.dump(stamp, f, indent=2)
        if not force and _read_stamp(root) == stamp:  # another process finished first
            return root
        _check_replaceable(root)
        if osp.lexists(root):
            os.rename(root, old)
        try:
            os.rename(tmp, root)
        except OSError:
            if _read_stamp(root) != stamp:  # not another process writing the same
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return root
