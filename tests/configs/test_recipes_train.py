"""Every recipe under ``configs/`` and ``projects/*/configs/`` does what a user types:
``python tools/train.py CONFIG`` trains it, validates it with the recipe's own evaluator
(CocoMetric / IoUMetric) and writes a checkpoint that ``--resume`` continues from.

Nothing is changed in the recipes but what a user changes on a small machine, through
``--cfg-options``: the iteration count, the batch size, one val image, the log interval (and
the detectors' score threshold, see ``_overrides``), and for the recipes not in ``FULL_SIZE``
every image size halved (``_half_sizes``). The data are the stand-in COCO / ADE20K
trees of ``tools/dataset_converters/make_standin_data.py`` under ``data/`` of the working
directory (the recipes' own ``data_root``), and each recipe's ``init_cfg`` checkpoint (a URL or
the file name the authors publish) is a stand-in in that release's layout, written by
``tools/misc/make_standin_checkpoints.py`` into torch's hub cache (``$TORCH_HOME``), where the
recipe looks for it: the recipe's own loading path reads it.

Each recipe trains one iteration (forward, loss, backward, its optimizer's step) and validates,
one recipe of each backbone family at its real pipeline sizes (1333x800, LSJ 1024, 512x512
crops); for one recipe of each kind of
loop a second iteration runs in a new process after ``--resume``, which proves the checkpoint
resumable (weights, optimizer, schedulers, loop counters) with ``weights_only=True`` and the
stepped weights still trainable. (Exact resume is tested on the shapes recipes:
``tests/engine/test_exact_resume.py``.)
"""
import functools
import glob
import json
import math
import os
import os.path as osp
import re
import shutil
import sys

import pytest
from mmengine.config import Config

from tests.engine.test_train_tools import ROOT, run_tool

RECIPES = sorted(
    p for p in glob.glob(osp.join(ROOT, 'configs', '*', '*.py')) +
    glob.glob(osp.join(ROOT, 'projects', '*', 'configs', '*.py'))
    if '_base_' not in p)


def _rel(path):
    return osp.relpath(path, ROOT)


@pytest.fixture(scope='module')
def standin_workdir(tmp_path_factory):
    """A working directory as a user's: data/coco, data/ade/ADEChallengeData2016 and
    data/shapes in the OpenMMLab layout, and a torch hub cache with every recipe's weights."""
    from mmvtx.datasets.shapes import prepare_shapes
    from mmvtx.datasets.standin import write_ade20k_standin, write_coco_standin
    from mmvtx.utils.standin import write_standins_for_config
    root = tmp_path_factory.mktemp('user')
    write_coco_standin(str(root / 'data' / 'coco'), num_train=4, num_val=2)
    write_ade20k_standin(str(root / 'data' / 'ade' / 'ADEChallengeData2016'), num_train=4,
                         num_val=2)
    os.symlink(prepare_shapes(osp.join(ROOT, 'data', 'shapes')), root / 'data' / 'shapes')
    torch_home = root / 'torch_home'
    cache = torch_home / 'hub' / 'checkpoints'
    for cfg in RECIPES:
        write_standins_for_config(cfg, str(cache))
    return root, str(torch_home)


# Resuming is proven on one recipe of each kind of loop (epoch-based detection, iteration-based
# segmentation): a second process per recipe would double the suite's time, and the checkpoints
# recipes write differ in their weights and parameter groups, which every resume restores alike.
RESUMED = ('mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py',
           'upernet_swin-t-p4-w7_4xb4-160k_ade20k-512x512.py')


def _overrides(cfg: Config, iters: int, val: bool) -> list:
    """What a user shrinks to try a recipe on a small machine: the loop length, the batch size
    (2 for segmentation: its BatchNorm-ed pooling head needs two samples), one val image, the
    log interval. A detector one or two iterations old scores every box below the recipes' 0.05
    threshold, so the threshold is lowered to give the evaluator detections to score."""
    seg = cfg.get('default_scope') == 'mmseg'
    batch = 2 if seg else 1
    opts = [f'train_dataloader.batch_size={batch}', 'val_dataloader.dataset.indices=1',
            'default_hooks.logger.interval=1']
    if not seg and 'rcnn' in cfg.model.get('test_cfg', {}):
        opts.append('model.test_cfg.rcnn.score_thr=0.0')
    if cfg.train_cfg.get('type') == 'EpochBasedTrainLoop' or 'max_epochs' in cfg.train_cfg:
        # an epoch of `iters` iterations, validated at its end (or not at all)
        opts += [f'train_dataloader.dataset.indices={batch * iters}', 'train_cfg.max_epochs=1',
                 f'train_cfg.val_begin={1 if val else 2}', 'train_cfg.val_interval=1']
    else:
        opts += [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters if val else 99}']
    return opts


# Each backbone family runs one recipe at its real pipeline sizes (Swin: the resumed Mask R-CNN
# at 1333x800; ViT: the ViTDet LSJ detector at 1024; CvT: UPerNet at 512, so one UPerNet at 512
# too); the others run at half their sizes (Swin's resumed UPerNet too: 128 s at 512 here),
# as a user tries a recipe on a small machine. Their real-size iteration is what the suite could
# not afford (a ViT-B Mask R-CNN at 1024 is 1.5-2.5 min on one CPU thread) and halving keeps
# every code path: the pipelines' transforms, position embeddings and relative tables resized
# to another grid, window padding, the heads.
FULL_SIZE = RESUMED[:1] + ('mask-rcnn_vit-b-p16_sfp_16xb4-amp-lsj-100e_coco.py',
                       'upernet_cvt-13_4xb4-160k_ade20k-512x512.py')
# the settings that size the images: in the pipelines' transforms, and the padding of the data
# preprocessor (mmdet's BatchFixedSizePad, mmseg's SegDataPreProcessor)
SIZE_KEYS = ('scale', 'scales', 'crop_size', 'size')


def _halved(value):
    if isinstance(value, int) and not isinstance(value, bool):
        return max(1, value // 2)
    if isinstance(value, (list, tuple)):
        return type(value)(_halved(v) for v in value)
    return value


def _half_sizes(cfg: Config) -> list:
    """``--cfg-options`` that halve every image size of the recipe's train and val pipelines and
    of its data preprocessor (``key.<index>.`` reaches into the pipeline lists)."""
    opts = []

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in SIZE_KEYS and isinstance(v, (int, list, tuple)) and v:
                    opts.append(f'{path}.{k}={_halved(v)!r}'.replace(' ', ''))
                else:
                    walk(v, f'{path}.{k}')
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f'{path}.{i}')

    for loader in ('train_dataloader', 'val_dataloader'):
        walk(cfg[loader].dataset.pipeline, f'{loader}.dataset.pipeline')
    walk(cfg.model.get('data_preprocessor', {}), 'model.data_preprocessor')
    return opts


def _records(work_dir):
    out = []
    for f in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(f) as fh:
            out.append([json.loads(line) for line in fh])
    return out


def _last_checkpoint(work_dir):
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return osp.basename(f.read().strip())


@pytest.mark.parametrize('config', RECIPES, ids=_rel)
def test_recipe_trains_validates_and_resumes(config, standin_workdir, tmp_path):
    cwd, torch_home = standin_workdir
    cfg = Config.fromfile(config)
    epochs = cfg.train_cfg.get('type') == 'EpochBasedTrainLoop'
    work_dir = str(tmp_path / 'work')
    train = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', work_dir]
    run = functools.partial(run_tool, cwd=cwd, env_extra=dict(TORCH_HOME=torch_home))
    resume = osp.basename(config) in RESUMED

    sizes = [] if osp.basename(config) in FULL_SIZE else _half_sizes(cfg)

    # one iteration; for RESUMED, then --resume and the second in a new process
    first = run(train + ['--cfg-options'] + _overrides(cfg, 1, not resume) + sizes)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-5000:]
    log = first.stdout + first.stderr
    for ckpt in _pretrained(cfg.model):  # the recipe's own checkpoint name -> the stand-in
        name = re.escape(osp.basename(ckpt))
        assert re.search(r'loaded \d+ tensors from an? .* checkpoint \(.*' + name, log), \
            f'{ckpt} not loaded:\n' + log[-3000:]
    if resume:
        assert _last_checkpoint(work_dir) == ('epoch_1.pth' if epochs else 'iter_1.pth')
        if epochs:  # the next epoch holds the second iteration
            opts = _overrides(cfg, 1, True) + ['train_cfg.max_epochs=2', 'train_cfg.val_begin=2']
        else:
            opts = _overrides(cfg, 2, True)
        second = run(train + ['--resume', '--cfg-options'] + opts)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-5000:]
        log = second.stdout + second.stderr
        assert re.search(r'resumed epoch: [01], iter: 1', log), log[-3000:]
    assert _last_checkpoint(work_dir) == (('epoch_2.pth' if epochs else 'iter_2.pth') if resume
                                          else 'epoch_1.pth' if epochs else 'iter_1.pth')

    runs = _records(work_dir)
    assert len(runs) == (2 if resume else 1)
    losses = [r for run_ in runs for r in run_ if 'loss' in r]
    assert [r['iter'] for r in losses] == ([1, 2] if resume else [1]), losses
    for r in losses:
        terms = {k: v for k, v in r.items() if 'loss' in k}
        assert all(math.isfinite(v) for v in terms.values()), r
    metrics = {k: v for r in runs[-1] for k, v in r.items()
               if k.startswith('coco/') or k in ('mIoU', 'aAcc', 'mAcc')}
    wanted = ('coco/bbox_mAP', 'coco/segm_mAP') if cfg.default_scope == 'mmdet' else ('mIoU',)
    for key in wanted:  # the recipe's own evaluator scored the val image
        assert key in metrics and math.isfinite(metrics[key]), (key, metrics)
    # a passed recipe's checkpoints (up to 1.4 GB each with AdamW's state) are not kept: the
    # suite would leave ~25 GB in pytest's temporary directories
    shutil.rmtree(work_dir, ignore_errors=True)


def _pretrained(model_cfg):
    """Every ``Pretrained`` checkpoint named in a model config."""
    if isinstance(model_cfg, dict):
        if model_cfg.get('type') == 'Pretrained' and 'checkpoint' in model_cfg:
            yield model_cfg['checkpoint']
        for v in model_cfg.values():
            yield from _pretrained(v)
    elif isinstance(model_cfg, (list, tuple)):
        for v in model_cfg:
            yield from _pretrained(v)
