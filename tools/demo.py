"""The README's demo: train Mask R-CNN on the embedded shapes scenes, evaluate bbox/segm mAP
on its val split with mmdet's CocoMetric, and draw the predictions on a few val images.

    python tools/demo.py [--model swin|vit|cvt | --config CONFIG] [--retrain]

Interrupted? Run it again: it resumes from the last checkpoint in work_dirs/demo_<model>/
(work_dirs/demo_<config's file name>/ with --config). A finished run is not trained again
(unless --retrain): it is evaluated and drawn, if its checkpoint fits the model.
"""
import argparse
import glob
import os
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import numpy as np  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmvtx  # noqa: E402,F401
from mmvtx.datasets import prepare_shapes  # noqa: E402
from mmvtx.engine.reliability import (WorkDirInUseError, find_resume_checkpoint,  # noqa: E402
                                       lock_work_dir)
from mmvtx.engine.runner import innermost_dataset, prepare_train_cfg  # noqa: E402

CONFIGS = {
    'swin': 'configs/swin/mask-rcnn_swin-mini-p4-w7_fpn_700i_shapes.py',
    'vit': 'configs/vit/mask-rcnn_vit-mini-p16_sfp_700i_shapes.py',
    'cvt': 'configs/cvt/mask-rcnn_cvt-mini_fpn_700i_shapes.py',
}
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


class KeepMetrics(Hook):
    """Keeps the metrics of the last validation/test run."""

    def __init__(self):
        self.metrics = {}

    def after_val_epoch(self, runner, metrics=None):
        self.metrics = dict(metrics or {})

    def after_test_epoch(self, runner, metrics=None):
        self.metrics = dict(metrics or {})


def draw_predictions(model, cfg, out_dir: str, num: int = 6, score_thr: float = 0.5) -> list:
    """Draws the predicted masks/boxes of the first ``num`` val images; returns the files
    (one per image and a grid ``predictions.png`` of all of them)."""
    import cv2
    import mmcv
    from mmdet.apis import inference_detector
    from mmdet.registry import VISUALIZERS
    model.cfg = cfg
    visualizer = VISUALIZERS.build(dict(type='DetLocalVisualizer', name='demo_vis'))
    visualizer.dataset_meta = dict(classes=mmvtx.datasets.CLASSES,
                                   palette=mmvtx.datasets.shapes.PALETTE)
    files, tiles = [], []
    images = sorted(glob.glob(osp.join(glob.escape(cfg.val_dataloader.dataset.data_root),
                                       'images/val/*.png')))
    os.makedirs(out_dir, exist_ok=True)
    for path in images[:num]:
        result = inference_detector(model, path)
        img = mmcv.imread(path, channel_order='rgb')
        out_file = osp.join(out_dir, 'pred_' + osp.basename(path))
        visualizer.add_datasample(osp.basename(path), img, data_sample=result, draw_gt=False,
                                  pred_score_thr=score_thr, out_file=out_file)
        files.append(out_file)
        # on a 256 x 320 tile at its own aspect ratio (shrunk only if larger): stretched to the
        # tile, a 256 x 256 scene showed its squares as rectangles, its circles as ellipses
        drawn = cv2.imread(out_file)
        scale = min(1.0, 256 / drawn.shape[0], 320 / drawn.shape[1])
        if scale < 1:
            drawn = cv2.resize(drawn, (max(1, round(drawn.shape[1] * scale)),
                                       max(1, round(drawn.shape[0] * scale))),
                               interpolation=cv2.INTER_AREA)
        tile = np.zeros((256, 320, 3), np.uint8)
        tile[:drawn.shape[0], :drawn.shape[1]] = drawn
        tiles.append(tile)
    if tiles:
        cols = 3
        while len(tiles) % cols:
            tiles.append(np.zeros_like(tiles[0]))
        rows = [np.concatenate(tiles[i:i + cols], 1) for i in range(0, len(tiles), cols)]
        grid = osp.join(out_dir, 'predictions.png')
        cv2.imwrite(grid, np.concatenate(rows, 0))
        files.append(grid)
    return files


def parse_args(argv=None) -> argparse.Namespace:
    """The options, with ``config``, ``work_dir`` and ``out_dir`` resolved to absolute paths
    (relative ones against the directory the demo was started from) and ``name``, the label of
    the run: the model (``--model``) or the config's file name (``--config``), which names the
    default work dir ``work_dirs/demo_<name>`` and the drawings ``outputs/demo_<name>``, so a
    config never takes over another model's checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', choices=sorted(CONFIGS), default='swin',
                        help='the backbone of the mini Mask R-CNN trained (default swin)')
    parser.add_argument('--config', help='another shapes detection config (its file name '
                        'names the work dir and outputs: work_dirs/demo_<name>)')
    parser.add_argument('--work-dir', help='where the checkpoints and logs go (default '
                        'work_dirs/demo_<name>); a run there is resumed or evaluated')
    parser.add_argument('--retrain', action='store_true', help='train again from scratch')
    parser.add_argument('--num-images', type=int, default=6,
                        help='val images drawn with their predictions (default 6; 0: none)')
    args = parser.parse_args(argv)
    if args.num_images < 0:  # images[:-1] would draw all val images but the last
        parser.error(f'--num-images must be >= 0, got {args.num_images}')
    if args.config:
        args.name = osp.splitext(osp.basename(args.config))[0]
        args.config = osp.abspath(args.config)
    else:
        args.name = args.model
        args.config = osp.join(ROOT, CONFIGS[args.model])
    args.work_dir = osp.abspath(args.work_dir or osp.join(ROOT, 'work_dirs', f'demo_{args.name}'))
    args.out_dir = osp.join(ROOT, 'outputs', f'demo_{args.name}')
    from mmvtx.utils.cli import check_output_dir
    check_output_dir(parser, args.work_dir, '--work-dir')  # before the scenes and the model
    check_output_dir(parser, args.out_dir, 'the pictures\' folder')
    return args


def main(argv=None):
    args = parse_args(argv)
    os.chdir(ROOT)  # the configs' data_root (data/shapes) is relative to the repository
    start = time.time()
    config, work_dir = args.config, args.work_dir
    cfg = Config.fromfile(config)
    scope = cfg.get('default_scope', 'mmdet')
    if scope != 'mmdet':  # refused before training, not when drawing after it
        sys.exit(f'error: {config} is an {scope} config; the demo trains, evaluates and draws '
                 f'a detector (an mmdet config, e.g. {CONFIGS["swin"]}): train it with '
                 'tools/train.py instead')
    dataset = innermost_dataset(cfg.train_dataloader.dataset)  # inside RepeatDataset, ...
    if str(dataset.get('type', '')).split('.')[-1] != 'ShapesDetDataset':
        # the scenes would be written into its data_root (data/coco/: the real COCO's place)
        sys.exit(f'error: {config} trains on {dataset.get("type")} '
                 f'({dataset.get("data_root")}), not the shapes scenes; the demo trains, '
                 f'evaluates and draws a detector on them (e.g. {CONFIGS["swin"]}): train it '
                 'with tools/train.py instead')
    prepare_shapes(dataset.get('data_root') or 'data/shapes')
    # the checkpoint a finished run ends with: epoch-based configs (mmdet's) save epoch_N.pth
    final = (f'epoch_{cfg.train_cfg.max_epochs}.pth' if 'max_epochs' in cfg.train_cfg
             else f'iter_{cfg.train_cfg.max_iters}.pth')
    # the run's newest complete checkpoint (the one last_checkpoint names) decides: the final
    # checkpoint of an earlier run does not make a --retrain interrupted since then finished
    try:  # a second `make demo` (another terminal) would train into the same checkpoints
        lock_work_dir(work_dir)
    except WorkDirInUseError as e:
        sys.exit(f'error: {e}')
    latest = None
    if not args.retrain and osp.isdir(work_dir):
        latest = find_resume_checkpoint(work_dir)
    done = latest is not None and osp.basename(latest) == final
    partial = latest is not None and not done
    # the demo decides what is resumed: a config's `resume = True` neither resumes a
    # --retrain nor makes the evaluation of a finished run resume training
    cfg.resume = False
    prepare_train_cfg(cfg, config, work_dir=work_dir, resume='auto' if partial else None)
    if done:
        cfg.load_from = latest
        # a file of another model is refused, not evaluated half loaded
        cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [
            dict(type='mmvtx.CheckpointFitHook')]
    runner = Runner.from_cfg(cfg)
    keep = KeepMetrics()
    runner.register_hook(keep, priority='LOWEST')
    if done:
        print(f'[demo] {latest} exists: evaluating it (--retrain trains again)')
        runner.test()
    else:
        runner.train()
    train_time = time.time() - start
    files = draw_predictions(runner.model, cfg, args.out_dir, num=args.num_images)
    m = keep.metrics
    print('\n' + '=' * 72)
    print(f'[demo] Mask R-CNN + {args.name} on shapes ({osp.relpath(config, ROOT)})')
    print(f'[demo] bbox mAP {m.get("coco/bbox_mAP", float("nan")):.3f}   '
          f'segm mAP {m.get("coco/segm_mAP", float("nan")):.3f}   '
          f'(bbox mAP@50 {m.get("coco/bbox_mAP_50", float("nan")):.3f}, '
          f'segm mAP@50 {m.get("coco/segm_mAP_50", float("nan")):.3f})')
    print(f'[demo] {time.time() - start:.0f} s in all ({train_time:.0f} s '
          f'{"evaluating the existing checkpoint" if done else "train + eval"}); '
          f'checkpoint and logs in {work_dir}')
    print(f'[demo] predictions drawn: {files[-1] if files else "none"}')
    print('=' * 72)
    return m


if __name__ == '__main__':
    from mmvtx.utils.checkpoint import CheckpointMismatchError
    try:
        main()
    except CheckpointMismatchError as e:  # a checkpoint of another model: no metrics
        sys.exit(f'error: {e}')
