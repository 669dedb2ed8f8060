"""Write synthetic stand-ins for COCO 2017 and ADE20K in their OpenMMLab layouts, so that the
unchanged recipes (``configs/swin/mask-rcnn_*_coco.py``, ``configs/swin/upernet_*_ade20k-*.py``)
run end to end without the real data. The images are the embedded shapes scenes; see
``mmvtx/datasets/standin.py`` for the layouts and the class mappings. Not real data: numbers
trained on it say nothing about COCO or ADE20K.

    python tools/dataset_converters/make_standin_data.py {coco,ade20k,all} [--root DIR]
        [--num-train N] [--num-val N] [--max-side N] [--seed S] [--force]

An existing folder that was not written by this tool (the real data set) is never overwritten.
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

DEFAULT_ROOTS = dict(coco='data/coco', ade20k='data/ade/ADEChallengeData2016')


def describe_coco(root: str) -> str:
    from mmvtx.datasets.standin import COCO_SPLITS
    lines = [f'COCO 2017 stand-in in {root}:']
    for split in COCO_SPLITS:
        ann_file = osp.join(root, 'annotations', f'instances_{split}.json')
        with open(ann_file) as f:
            coco = json.load(f)
        crowds = sum(ann['iscrowd'] for ann in coco['annotations'])
        sizes = sorted({f"{im['width']}x{im['height']}" for im in coco['images']})
        lines.append(f'  {split}/: {len(coco["images"])} images ({", ".join(sizes)}), '
                     f'{len(coco["annotations"]) - crowds} instances + {crowds} crowd regions '
                     f'in {osp.relpath(ann_file, root)}')
    return '\n'.join(lines)


def describe_ade20k(root: str) -> str:
    from mmvtx.datasets.standin import ADE_SPLITS
    lines = [f'ADE20K stand-in in {root}:']
    for folder, _ in ADE_SPLITS:
        images = len(os.listdir(osp.join(root, 'images', folder)))
        maps = len(os.listdir(osp.join(root, 'annotations', folder)))
        lines.append(f'  images/{folder}/: {images} images, annotations/{folder}/: {maps} '
                     f'label maps')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description='Write the shapes scenes as synthetic stand-ins in the COCO 2017 and/or '
                    'ADE20K layouts (not real data).')
    parser.add_argument('dataset', choices=['coco', 'ade20k', 'all'],
                        help='which layout to write (all: both, in their default folders)')
    parser.add_argument('--root', help='output folder (default: data/coco, '
                        'data/ade/ADEChallengeData2016); not with "all"')
    parser.add_argument('--num-train', type=int, default=8, help='training images')
    parser.add_argument('--num-val', type=int, default=4, help='validation images')
    parser.add_argument('--max-side', type=int, default=None,
                        help='COCO only: long side of the largest images (default 640, COCO\'s '
                             'own sizes; up to 1333 scales them up)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the scenes (default 0; the same seed writes the same files)')
    parser.add_argument('--force', action='store_true',
                        help='regenerate even if the same stand-in is there already')
    args = parser.parse_args(argv)
    if args.num_val < 1:  # the recipes validate on it
        parser.error(f'--num-val {args.num_val}: must be >= 1 (the recipes validate on it)')
    if args.dataset == 'all' and args.root:
        parser.error('--root names one data set\'s folder: give coco or ade20k with it')
    if args.dataset == 'ade20k' and args.max_side is not None:
        # it had been dropped without a word: the ADE20K stand-in kept its own sizes
        parser.error(f'--max-side {args.max_side}: sizes the COCO stand-in only (the ADE20K '
                     'one has the sizes of the shapes scenes); give coco or all with it')
    # importing mmvtx registers everything (seconds): not before --help and the flags' checks
    from mmvtx.datasets.standin import write_ade20k_standin, write_coco_standin
    from mmvtx.utils.cli import check_output_dir
    for name in (['coco', 'ade20k'] if args.dataset == 'all' else [args.dataset]):
        check_output_dir(parser, args.root or DEFAULT_ROOTS[name],
                         '--root' if args.root else 'the default folder')
    common = dict(num_train=args.num_train, num_val=args.num_val, seed=args.seed,
                  force=args.force)
    try:
        if args.dataset in ('coco', 'all'):
            root = write_coco_standin(args.root or DEFAULT_ROOTS['coco'],
                                      max_side=640 if args.max_side is None else args.max_side,
                                      **common)
            print(describe_coco(root))
        if args.dataset in ('ade20k', 'all'):
            root = write_ade20k_standin(args.root or DEFAULT_ROOTS['ade20k'], **common)
            print(describe_ade20k(root))
    except (FileExistsError, ValueError) as e:  # a foreign folder in the way, a bad argument
        parser.exit(1, f'error: {e}\n')


if __name__ == '__main__':
    main()
