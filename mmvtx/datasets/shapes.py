"""``shapes``: the embedded synthetic scene set (coloured circles, squares and triangles, partly
occluding one another, over noise, non-square images).

The same deterministic scenes give COCO instance annotations (RLE masks) for detection and PNG
label maps for semantic segmentation. They are generated on first use under ``data/shapes/``::

    data/shapes/
      images/{train,val}/000000.png      RGB scenes
      labels/{train,val}/000000.png      uint8 label maps: 0 background, 1 circle, 2 square, 3 triangle
      annotations/instances_{train,val}.json   COCO instances (category ids 1..3)
"""
import json
import os
import os.path as osp
import re
import shutil
import tempfile
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

CLASSES = ('circle', 'square', 'triangle')
SEG_CLASSES = ('background',) + CLASSES
PALETTE = [(220, 20, 60), (0, 130, 255), (255, 190, 0)]
SEG_PALETTE = [(0, 0, 0)] + PALETTE
SPLITS = {'train': (400, 0), 'val': (100, 1)}  # scenes, seed
VERSION = 4  # bump when the generator changes: the data are regenerated


MIN_VISIBLE = 0.7  # an occluded shape keeps at least this part of its area in view
CLASS_HUES = (15.0, 215.0, 95.0)  # degrees: circle, square, triangle


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    hsv = np.array([[[(h % 360) / 2, s * 255, v * 255]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)


def _shape_mask(kind: int, H: int, W: int, cx: float, cy: float, r: float,
                angle: float) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    if kind == 0:
        cv2.circle(mask, (int(round(cx)), int(round(cy))), int(round(r)), 1, -1)
    else:
        n = 4 if kind == 1 else 3
        t = angle + np.arange(n) * 2 * np.pi / n
        pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask.astype(bool)


def make_scene(rng: np.random.RandomState,
               size: Optional[Tuple[int, int]] = None) -> Tuple[np.ndarray, List[Dict]]:
    """One scene: an RGB image and its instances (``label`` in 0..2, visible ``mask``).

    Shapes are painted in order, later ones occluding earlier ones; a placement that would hide
    more than 30% of an earlier shape is drawn again, so every instance stays recognisable.

    Args:
        rng: the random stream the scene is drawn from.
        size: ``(H, W)`` of the image. Left out, the size is drawn from ``rng`` among the
            shapes dataset's sizes (224 or 256 by 256..320), exactly as the dataset always has;
            given, nothing is drawn for it and shape sizes scale with ``min(H, W)``.
    """
    if size is None:
        H = int(rng.choice([224, 256]))
        W = int(rng.choice([256, 288, 320]))
    else:
        H, W = (int(s) for s in size)
    # a greyish background of random tint, with noise
    base = _hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.3), rng.uniform(0.25, 0.9))
    img = np.clip(base + rng.normal(0, 15, (H, W, 3)), 0, 255)
    instances: List[Dict] = []
    for _ in range(rng.randint(1, 5)):
        for _attempt in range(20):
            kind = rng.randint(3)
            r = rng.uniform(0.12, 0.25) * min(H, W)
            cx, cy = rng.uniform(r * 0.6, W - r * 0.6), rng.uniform(r * 0.6, H - r * 0.6)
            full = _shape_mask(kind, H, W, cx, cy, r, rng.uniform(0, 2 * np.pi))
            if full.sum() < 150:
                continue
            if all((inst['mask'] & ~full).sum() >= MIN_VISIBLE * inst['area_full']
                   for inst in instances):
                break
        else:
            continue
        # saturated colours from the class's own family of hues (circles red-orange, squares
        # blue, triangles green-yellow), random within it
        color = _hsv_to_rgb(CLASS_HUES[kind] + rng.uniform(-25, 25), rng.uniform(0.55, 1.0),
                            rng.uniform(0.55, 1.0))
        img[full] = np.clip(color + rng.normal(0, 12, (int(full.sum()), 3)), 0, 255)
        for inst in instances:
            inst['mask'] &= ~full
        instances.append(dict(label=kind, mask=full.copy(), area_full=int(full.sum())))
    return img.astype(np.uint8), instances


def _write_split(root: str, split: str, num: int, seed: int):
    from pycocotools import mask as mask_utils
    rng = np.random.RandomState(seed)
    os.makedirs(osp.join(root, 'images', split))
    os.makedirs(osp.join(root, 'labels', split))
    images, annotations = [], []
    for idx in range(num):
        img, instances = make_scene(rng)
        name = f'{idx:06d}.png'
        cv2.imwrite(osp.join(root, 'images', split, name), img[:, :, ::-1])
        label = np.zeros(img.shape[:2], np.uint8)
        for inst in instances:
            label[inst['mask']] = inst['label'] + 1
        cv2.imwrite(osp.join(root, 'labels', split, name), label)
        images.append(dict(id=idx, file_name=name, height=img.shape[0], width=img.shape[1]))
        for inst in instances:
            rle = mask_utils.encode(np.asfortranarray(inst['mask'].astype(np.uint8)))
            x, y, w, h = mask_utils.toBbox(rle).tolist()
            rle['counts'] = rle['counts'].decode('ascii')
            annotations.append(dict(id=len(annotations) + 1, image_id=idx,
                                    category_id=inst['label'] + 1, segmentation=rle,
                                    area=float(inst['mask'].sum()), bbox=[x, y, w, h],
                                    iscrowd=0))
    categories = [dict(id=i + 1, name=n) for i, n in enumerate(CLASSES)]
    with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)


STAMP_PATTERN = re.compile(r'\.complete-v\d+$')  # .complete-v1 .. v4: written by every version


def _check_replaceable(root: str):
    """Raises unless ``root`` is absent, an empty folder or shapes data written here (by this or
    an older version, which left a ``.complete-v<N>`` stamp): a folder without a stamp may hold
    the user's own data."""
    if not osp.lexists(root):
        return
    if osp.isdir(root) and not osp.islink(root) and (
            not os.listdir(root) or any(STAMP_PATTERN.match(f) for f in os.listdir(root))):
        return
    raise FileExistsError(
        f'{root} exists and is not shapes data written by mmvtx (it has no .complete-v{VERSION} '
        f'stamp): it may hold your own data, so it is left untouched. Point data_root at another '
        f'folder, or move it away.')


def make_temp_dir(parent: str, prefix: str) -> str:
    """A new, uniquely named folder in ``parent`` (``tempfile.mkdtemp``) with the permissions
    ``os.makedirs`` would give it, ``0o777`` less the umask: ``mkdtemp`` makes it ``0o700``,
    and a data set renamed into place from it could be read by its owner alone."""
    tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


def prepare_shapes(root: str = 'data/shapes', force: bool = False) -> str:
    """Generates the scenes under ``root`` unless they are there already; returns ``root``.

    Only an absent or empty folder, or one that an earlier version generated, is (re)written;
    any other folder raises ``FileExistsError``. Written to a temporary folder and renamed into
    place, so that an interrupted run or several processes (DDP) starting at once never leave a
    half-written dataset behind."""
    root = os.fspath(root)
    stamp = osp.join(root, f'.complete-v{VERSION}')
    if osp.exists(stamp) and not force:
        return root
    _check_replaceable(root)  # fail before generating anything
    parent = osp.dirname(osp.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = make_temp_dir(parent, '.shapes-')
    old = tmp + '-old'
    try:
        os.makedirs(osp.join(tmp, 'annotations'))
        for split, (num, seed) in SPLITS.items():
            _write_split(tmp, split, num, seed)
        open(osp.join(tmp, f'.complete-v{VERSION}'), 'w').close()
        if osp.exists(stamp) and not force:  # another process finished first
            return root
        _check_replaceable(root)
        try:
            os.rename(root, old)  # an older version's data or an empty folder
        except FileNotFoundError:  # none, or another process moved it away first
            pass
        try:
            os.rename(tmp, root)
        except OSError:
            if not osp.exists(stamp):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return root


if __name__ == '__main__':
    import argparse
    parser = argparse.ArgumentParser(description='generate the shapes dataset')
    parser.add_argument('--root', default='data/shapes')
    parser.add_argument('--force', action='store_true')
    args = parser.parse_args()
    print(prepare_shapes(args.root, args.force))
