"""tools/train.py, tools/test.py and tools/dist_train.sh on the shapes data with small models:
the loss goes down, mmdet's/mmseg's own evaluators score the result, a killed run resumes
(torch.load keeps weights_only=True), and DDP runs on gloo with activation checkpointing."""
import argparse
import glob
import json
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests import forkserver

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET_CFG = osp.join(ROOT, 'configs/swin/mask-rcnn_swin-mini-p4-w7_fpn_700i_shapes.py')
SEG_CFG = osp.join(ROOT, 'configs/swin/upernet_swin-mini-p4-w7_1000i_shapes-256x256.py')


SMALL_BACKBONES = {  # backbone overrides of the shapes configs, and their output widths
    'swin': (dict(embed_dims=24, depths=(2, 2, 2, 2)), [24, 48, 96, 192]),
    'vit': (dict(embed_dims=64, num_layers=2, num_heads=2), [16, 32, 64, 64]),
    'cvt': (dict(embed_dims=(16, 48, 96), depths=(1, 1, 2), num_heads=(1, 3, 6)),
            [16, 48, 96, 96]),
}
DET_CFGS = {'swin': DET_CFG,
            'vit': osp.join(ROOT, 'configs/vit/mask-rcnn_vit-mini-p16_sfp_700i_shapes.py'),
            'cvt': osp.join(ROOT, 'configs/cvt/mask-rcnn_cvt-mini_fpn_700i_shapes.py')}
SEG_CFGS = {'swin': SEG_CFG,
            'vit': osp.join(ROOT, 'configs/vit/upernet_vit-mini-p16_1000i_shapes-256x256.py'),
            'cvt': osp.join(ROOT, 'configs/cvt/upernet_cvt-mini_1000i_shapes-256x256.py')}


def small_config(tmp_path, base: str, kind: str, iters: int, ckpt_interval: int,
                 with_cp: bool = False, arch: str = 'swin') -> str:
    """A config that inherits a shapes config and shrinks the backbone and the schedule."""
    data_root = osp.join(ROOT, 'data', 'shapes') + '/'
    backbone, widths = SMALL_BACKBONES[arch]
    backbone = dict(backbone, with_cp=with_cp)
    lines = [f'_base_ = {base!r}', f'max_iters = {iters}',
             f'train_cfg = dict(max_iters={iters}, val_interval={iters})',
             'param_scheduler = [dict(type="LinearLR", start_factor=0.1, by_epoch=False, '
             'begin=0, end=5)]',
             f'default_hooks = dict(logger=dict(interval=5), checkpoint=dict('
             f'by_epoch=False, interval={ckpt_interval}, max_keep_ckpts=3))',
             'log_processor = dict(window_size=5)']
    if kind == 'det':
        lines += [f'model = dict(backbone={backbone!r}, neck=dict(in_channels={widths!r}))',
                  f'train_dataloader = dict(batch_size=2, dataset=dict(data_root={data_root!r}))',
                  f'val_dataloader = dict(dataset=dict(data_root={data_root!r}, indices=12))',
                  'test_dataloader = val_dataloader',
                  f'val_evaluator = dict(ann_file={data_root!r} + '
                  '"annotations/instances_val.json")',
                  'test_evaluator = val_evaluator']
    else:
        lines += [f'model = dict(backbone={backbone!r}, decode_head=dict(in_channels={widths!r}),'
                  f' auxiliary_head=dict(in_channels={widths[2]}))',
                  f'train_dataloader = dict(batch_size=2, dataset=dict(data_root={data_root!r}))',
                  f'val_dataloader = dict(dataset=dict(data_root={data_root!r}, indices=8))',
                  'test_dataloader = val_dataloader']
    path = tmp_path / f'{kind}_{arch}_small.py'
    path.write_text('\n'.join(lines) + '\n')
    return str(path)


def run_tool(args, cwd, timeout=600, env_extra=None, **kw):
    """``args`` run as a process in ``cwd`` (``python tools/X.py ...`` forked from a process that
    has imported torch, mmdet and mmseg already: :mod:`tests.forkserver`), its output captured."""
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHON=sys.executable,
               OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '2'), **(env_extra or {}))
    return forkserver.run(args, cwd=cwd, env=env, timeout=timeout, **kw)


def scalars(work_dir):
    """Training log records (mmengine's vis_data/scalars.json) of the newest run."""
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    assert files, f'no scalars.json under {work_dir}'
    with open(files[-1]) as f:
        return [json.loads(line) for line in f]


def assert_loss_went_down(records):
    losses = [r['loss'] for r in records if 'loss' in r]
    assert len(losses) >= 4, records
    first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    assert last < 0.85 * first, losses


# What a user does with a trained model in a notebook or script: mmdet's/mmseg's inference APIs
# with the config and the checkpoint, in a fresh process (no allow-list of torch's safe globals
# that a run's SafeCheckpointLoadHook would have added; mmvtx imported by the config only).
INFERENCE = r'''
import glob, os.path as osp, sys
import torch
cfg, ckpt, kind, img, out = sys.argv[1:]
weights = torch.load(ckpt, weights_only=True)['state_dict']  # nothing allowed beyond torch's own
assert 'mmvtx' not in sys.modules
if kind == 'det':
    from mmdet.apis import DetInferencer as Inferencer, inference_detector as infer, \
        init_detector as init
else:
    from mmseg.apis import MMSegInferencer as Inferencer, inference_model as infer, init_model as init
model = init(cfg, ckpt, device='cpu')
result = infer(model, img)
inferencer = Inferencer(model=cfg, weights=ckpt, device='cpu')
predictions = inferencer(img, out_dir=out)['predictions']
for built in (model, inferencer.model):  # every trained tensor loaded, none skipped
    own = built.state_dict()
    assert set(own) == set(weights), set(own) ^ set(weights)
    for key, value in weights.items():
        assert torch.equal(own[key].cpu(), value), key
assert glob.glob(osp.join(out, 'vis', '*.png')), 'no picture drawn'
print('INFERENCE OK', len(predictions))
'''


def assert_inference_apis_load(cfg: str, ckpt: str, kind: str, tmp_path):
    """mmdet's ``init_detector``/``inference_detector``/``DetInferencer`` (mmseg's
    ``init_model``/``inference_model``/``MMSegInferencer``) load a checkpoint of
    ``tools/train.py`` whole and predict: they read it with ``torch.load`` and no hook
    (torch >= 2.6 refused mmengine's ``HistoryBuffer`` in it)."""
    img = sorted(glob.glob(osp.join(ROOT, 'data', 'shapes', 'images', 'val', '*.png')))[0]
    out = run_tool([sys.executable, '-c', INFERENCE, cfg, ckpt, kind, img,
                    str(tmp_path / f'infer_{kind}')], cwd=str(tmp_path))
    assert out.returncode == 0 and 'INFERENCE OK' in out.stdout, \
        out.stdout[-3000:] + out.stderr[-3000:]


@pytest.fixture(scope='module', autouse=True)
def shapes_data():
    from mmvtx.datasets import prepare_shapes
    prepare_shapes(osp.join(ROOT, 'data', 'shapes'))


def test_mask_rcnn_trains_evaluates_resumes_and_tests(tmp_path):
    cfg = small_config(tmp_path, DET_CFG, 'det', iters=60, ckpt_interval=20)
    work = str(tmp_path / 'work')
    train = [sys.executable, osp.join(ROOT, 'tools/train.py'), cfg, '--work-dir', work]
    with open(tmp_path / 'stderr.txt', 'w') as stderr:
        # SIGINT at its default, as in a terminal: a pytest-xdist worker ignores it, and a
        # child inherits an ignored signal (Python then installs no KeyboardInterrupt)
        proc = subprocess.Popen(train, cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=ROOT),
                                stdout=subprocess.DEVNULL, stderr=stderr,
                                start_new_session=True, preexec_fn=lambda: signal.signal(
                                    signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not osp.exists(osp.join(work, 'iter_20.pth')) and proc.poll() is None:
        assert time.time() < deadline, 'no checkpoint after 300 s'
        time.sleep(0.5)
    time.sleep(1.0)
    assert proc.poll() is None, 'training ended before it could be interrupted'
    # Ctrl-C after a checkpoint (a kill -9 is test_exact_resume's): a traceback through
    # whatever ran at that moment had said nothing of what was kept
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    said = (tmp_path / 'stderr.txt').read_text()
    assert re.search(r'training stopped \(Ctrl-C\); the newest complete checkpoint is '
                     + re.escape(work) + r'/iter_(20|40)\.pth: run the same command with '
                     r'--resume to continue from it\n$', said), said[-3000:]
    assert 'Traceback' not in said, said[-3000:]
    assert not osp.exists(osp.join(work, 'iter_60.pth'))

    out = run_tool(train + ['--resume'], cwd=str(tmp_path))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert 'resumed epoch: 0, iter: 20' in log or 'resumed epoch: 0, iter: 40' in log
    assert osp.exists(osp.join(work, 'iter_60.pth'))
    records = scalars(work)
    metrics = [r for r in records if 'coco/bbox_mAP' in r]
    assert metrics and 0.0 <= metrics[-1]['coco/bbox_mAP'] <= 1.0
    assert 0.0 <= metrics[-1]['coco/segm_mAP'] <= 1.0

    # the loss went down over the (resumed) run: compare with an uninterrupted log
    all_losses = []
    for f in sorted(glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json'))):
        with open(f) as fh:
            all_losses += [json.loads(line) for line in fh]
    assert_loss_went_down([r for r in all_losses if 'loss' in r])

    # tools/test.py evaluates the checkpoint and draws predictions
    test = run_tool([sys.executable, osp.join(ROOT, 'tools/test.py'), cfg,
                     osp.join(work, 'iter_60.pth'), '--work-dir', str(tmp_path / 'test'),
                     '--show-dir', 'vis'], cwd=str(tmp_path))
    assert test.returncode == 0, test.stdout[-3000:] + test.stderr[-3000:]
    assert 'coco/bbox_mAP' in test.stdout + test.stderr
    drawn = glob.glob(str(tmp_path / 'test' / '*' / 'vis' / '*.png'))
    assert len(drawn) == 12
    assert_inference_apis_load(cfg, osp.join(work, 'iter_60.pth'), 'det', tmp_path)


def test_sigterm_stops_training_as_ctrl_c_does_and_names_the_last_checkpoint(tmp_path):
    """SIGTERM (a scheduler's stop, ``kill``) ended ``tools/train.py`` on the spot without a
    word. In the training process it now unwinds as Ctrl-C does (files being written are left
    whole or removed) and the tool names the checkpoint ``--resume`` continues from; a process
    forked later (a DataLoader worker) still dies of it."""
    from mmengine.config import Config

    from mmvtx.engine.runner import Stopped, stop_on_sigterm, stopped_message
    before = signal.getsignal(signal.SIGTERM)
    try:
        stop_on_sigterm()
        child = os.fork()
        if child == 0:
            os.kill(os.getpid(), signal.SIGTERM)
            os._exit(0)  # not reached: the default action ends the child
        _, status = os.waitpid(child, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
        with pytest.raises(Stopped) as stopped:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs at the next bytecode
    finally:
        signal.signal(signal.SIGTERM, before)
    cfg = Config(dict(work_dir=str(tmp_path), default_hooks=dict(checkpoint=dict(
        type='CheckpointHook'))))
    assert stopped_message(cfg, stopped.value) == (
        'training stopped by SIGTERM before its first checkpoint was saved: nothing to resume '
        'from')
    torch.save({'w': torch.ones(1)}, tmp_path / 'iter_4.pth')
    assert stopped_message(cfg, KeyboardInterrupt()) == (
        f'training stopped (Ctrl-C); the newest complete checkpoint is {tmp_path}/iter_4.pth: '
        'run the same command with --resume to continue from it')


def test_upernet_trains_and_is_evaluated_by_mmseg(tmp_path):
    cfg = small_config(tmp_path, SEG_CFG, 'seg', iters=40, ckpt_interval=40)
    work = str(tmp_path / 'work')
    out = run_tool([sys.executable, osp.join(ROOT, 'tools/train.py'), cfg, '--work-dir', work],
                   cwd=str(tmp_path))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    records = scalars(work)
    assert_loss_went_down(records)
    miou = [r['mIoU'] for r in records if 'mIoU' in r]
    assert miou and 0.0 <= miou[-1] <= 100.0
    assert_inference_apis_load(cfg, osp.join(work, 'iter_40.pth'), 'seg', tmp_path)


@pytest.mark.parametrize('arch', ['vit', 'cvt'])
def test_vit_and_cvt_train_in_mask_rcnn_and_upernet(tmp_path, arch):
    for kind, base, key in (('det', DET_CFGS[arch], 'coco/bbox_mAP'),
                            ('seg', SEG_CFGS[arch], 'mIoU')):
        cfg = small_config(tmp_path, base, kind, iters=30, ckpt_interval=30, arch=arch)
        work = str(tmp_path / f'work_{kind}')
        out = run_tool([sys.executable, osp.join(ROOT, 'tools/train.py'), cfg, '--work-dir',
                        work], cwd=str(tmp_path))
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        records = scalars(work)
        assert_loss_went_down(records)
        assert [r[key] for r in records if key in r], records[-1]


def test_train_compile_flag_compiles_the_backbone(tmp_path):
    """``tools/train.py CONFIG --compile BACKEND``: the backbone is compiled in place (the log
    says so), the detector trains and is evaluated, and the checkpoint has the same keys as
    an uncompiled run's (no ``_orig_mod.``), so it loads anywhere. ``aot_eager`` traces as
    inductor does without generating code (inductor's CPU code generation takes minutes)."""
    import math

    import torch
    cfg = small_config(tmp_path, DET_CFG, 'det', iters=6, ckpt_interval=6)
    work = str(tmp_path / 'work')
    # a few iterations and val images: the compiling is the cost (a static graph, then one with
    # symbolic sizes, for training and for evaluation); that the compiled backbone's gradients
    # equal eager ones is tested in tests/models/layers/test_attention.py
    out = run_tool([sys.executable, osp.join(ROOT, 'tools/train.py'), cfg, '--work-dir', work,
                    '--compile', 'aot_eager', '--cfg-options', 'default_hooks.logger.interval=1',
                    'val_dataloader.dataset.indices=2'], cwd=str(tmp_path))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "torch.compile(backbone: SwinTransformer, backend='aot_eager'" in out.stdout + \
        out.stderr
    records = scalars(work)
    losses = [r['loss'] for r in records if 'loss' in r]
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses), records
    assert [r['coco/bbox_mAP'] for r in records if 'coco/bbox_mAP' in r]
    state = torch.load(osp.join(work, 'iter_6.pth'), map_location='cpu',
                       weights_only=False)['state_dict']
    assert not [k for k in state if '_orig_mod' in k]
    assert any(k.startswith('backbone.stages.0.blocks.0.attn.qkv') for k in state)
    bad = run_tool([sys.executable, osp.join(ROOT, 'tools/train.py'), cfg, '--work-dir', work,
                    '--compile', 'no_such_backend'], cwd=str(tmp_path))
    assert bad.returncode != 0 and "--compile 'no_such_backend'" in bad.stderr


def test_compile_hook_names_a_missing_module():
    import torch
    from mmvtx.engine import CompileModelHook

    class Runner:
        model = torch.nn.Sequential(torch.nn.Linear(2, 2))

    with pytest.raises(ValueError, match="no submodule 'backbone'.*children: \\['0'\\]"):
        CompileModelHook(modules='backbone').before_run(Runner())
    with pytest.raises(ValueError, match='modules is empty'):
        CompileModelHook(modules=())


def test_slurm_train_keeps_paths_with_spaces_whole(tmp_path):
    """tools/slurm_train.sh split a work dir (or config, or extra argument) with spaces into
    several arguments, and ran tools/train.py only from the repository root. A stand-in srun
    records the command line it gets."""
    fake_bin = tmp_path / 'bin'
    fake_bin.mkdir()
    (fake_bin / 'srun').write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$SRUN_LOG"\n')
    (fake_bin / 'srun').chmod(0o755)
    log = tmp_path / 'srun.log'
    out = run_tool(['bash', osp.join(ROOT, 'tools/slurm_train.sh'), 'part', 'job',
                    'my configs/det.py', 'work dirs/run 1', '--cfg-options',
                    'train_cfg.max_iters=2', 'a b'], cwd=str(tmp_path),
                   env_extra=dict(PATH=f'{fake_bin}:{os.environ["PATH"]}', SRUN_LOG=str(log)))
    assert out.returncode == 0, out.stderr
    args = log.read_text().splitlines()
    assert args[args.index(sys.executable):] == [  # $PYTHON (run_tool sets it), as dist_train.sh
        sys.executable, '-u', osp.join(ROOT, 'tools', 'train.py'), 'my configs/det.py',
        '--work-dir=work dirs/run 1', '--launcher=slurm', '--cfg-options',
        'train_cfg.max_iters=2', 'a b']


@pytest.mark.parametrize('script, args, bad', [
    ('dist_train.sh', ['cfg.py'], "''"),
    ('dist_train.sh', ['cfg.py', '--work-dir', 'w'], "'--work-dir'"),
    ('dist_train.sh', ['cfg.py', '0'], "'0'"),
    ('dist_test.sh', ['cfg.py', 'model.pth'], "''"),
    ('dist_test.sh', ['cfg.py', 'model.pth', '--out', 'p.pkl'], "'--out'")])
def test_dist_scripts_name_a_missing_process_count(tmp_path, script, args, bad):
    """``bash tools/dist_train.sh CONFIG`` (the GPU count forgotten, or an option in its place)
    stopped in torchrun with ``ValueError: Unsupported nproc_per_node value: --work-dir`` and
    its traceback; now the script says what it takes, and starts nothing. A stand-in
    ``$PYTHON`` records whether torchrun was started."""
    ran = tmp_path / 'ran'
    python = tmp_path / 'python'
    python.write_text(f'#!/usr/bin/env bash\ntouch {ran}\n')
    python.chmod(0o755)

    def run(argv):
        return subprocess.run(['bash', osp.join(ROOT, 'tools', script)] + argv,
                              cwd=str(tmp_path), capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, PYTHON=str(python)))

    out = run(args)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f'error: GPUS={bad}: the number of processes (GPUs) must be an integer >= 1' \
        in out.stderr
    assert f'usage: bash tools/{script} CONFIG ' in out.stderr
    assert not ran.exists()
    given = args[:1] if script == 'dist_train.sh' else args[:2]  # CONFIG [CHECKPOINT]
    out = run(given + ['2'])
    assert out.returncode == 0 and ran.exists(), out.stderr  # a count: torchrun is started


def _stand_in_python(tmp_path):
    """A ``$PYTHON`` that records the torchrun command line it is given (and runs the scripts'
    own ``python -c`` checks with the real interpreter)."""
    log = tmp_path / 'torchrun.args'
    python = tmp_path / 'python'
    python.write_text(f'#!/usr/bin/env bash\nif [ "$1" = -c ]; then exec {sys.executable} "$@"; '
                      f'fi\nprintf "%s\\n" "$@" > {log}\n')
    python.chmod(0o755)
    return python, log


@pytest.mark.parametrize('script, args', [('dist_train.sh', ['cfg.py', '2']),
                                          ('dist_test.sh', ['cfg.py', 'model.pth', '2'])])
def test_dist_scripts_take_mmdets_node_settings_and_name_a_busy_port(tmp_path, script, args):
    """mmdet's and mmseg's ``dist_test.sh`` take NNODES, NODE_RANK and MASTER_ADDR as their
    ``dist_train.sh`` does; ours ignored them (each node tested alone, as its own rank 0). A
    PORT held by another run (two jobs on one machine, both on the default 29500) stopped in
    torchrun with a 40-line traceback ending in EADDRINUSE; now one line names it and a free
    one, before any process starts."""
    import socket
    python, log = _stand_in_python(tmp_path)

    def run(**env):
        return subprocess.run(['bash', osp.join(ROOT, 'tools', script)] + args,
                              cwd=str(tmp_path), capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, PYTHON=str(python), **env))

    out = run(NNODES='2', NODE_RANK='1', MASTER_ADDR='10.0.0.7', PORT='29555')
    assert out.returncode == 0, out.stderr
    torchrun = log.read_text().splitlines()
    assert torchrun[:2] == ['-m', 'torch.distributed.run']
    for flag in ('--nnodes=2', '--node_rank=1', '--master_addr=10.0.0.7', '--nproc_per_node=2',
                 '--master_port=29555'):
        assert flag in torchrun
    log.unlink()
    busy = socket.socket()
    busy.bind(('127.0.0.1', 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        out = run(PORT=str(port))
        assert out.returncode == 2 and not log.exists(), out.stderr
        assert f'error: PORT={port} is in use on this machine' in out.stderr
        assert 'Traceback' not in out.stderr
        free = int(out.stderr.split('e.g. PORT=')[1].split()[0])
        socket.socket().bind(('', free))  # the port it proposes is free
        out = run(PORT=str(port), NODE_RANK='1', NNODES='2')  # the master is another machine
        assert out.returncode == 0 and log.exists(), out.stderr
    finally:
        busy.close()
    out = run(PORT='29500x')
    assert out.returncode == 2 and "error: PORT='29500x'" in out.stderr


def test_slurm_train_names_missing_arguments_and_a_missing_srun(tmp_path):
    """Without slurm, ``bash tools/slurm_train.sh ...`` stopped with bash's ``srun: command
    not found`` (status 127), and with arguments missing it ran srun with empty ones; each is
    now one error line (status 2) that says what to run instead."""
    import shutil
    bin_dir = tmp_path / 'bin'  # a PATH without srun
    bin_dir.mkdir()
    for tool in ('dirname',):
        os.symlink(shutil.which(tool), bin_dir / tool)
    env = dict(os.environ, PATH=str(bin_dir))

    def run(argv):
        return subprocess.run([shutil.which('bash'), osp.join(ROOT, 'tools/slurm_train.sh')]
                              + argv, cwd=str(tmp_path), capture_output=True, text=True,
                              timeout=60, env=env)

    out = run(['part', 'job', 'cfg.py'])
    assert out.returncode == 2, out.stderr
    assert 'error: slurm_train.sh takes PARTITION JOB_NAME CONFIG WORK_DIR, 3 argument(s)' \
        in out.stderr
    out = run(['part', 'job', 'cfg.py', 'work'])
    assert out.returncode == 2, out.stderr
    assert 'error: srun not found' in out.stderr and 'tools/dist_train.sh' in out.stderr
    assert 'command not found' not in out.stderr


@pytest.mark.parametrize('script, flags, message', [
    ('test.py', ['--tta'], 'error: --tta needs tta_pipeline in the config'),
    ('test.py', ['--tta', '--cfg-options', 'tta_pipeline=None'],
     'error: --tta needs tta_pipeline in the config'),
    ('test.py', ['--out', 'preds.json'], 'error: --out preds.json: a .pkl or .pickle file'),
    ('train.py', ['--auto-scale-lr'], 'error: --auto-scale-lr needs auto_scale_lr'),
])
def test_tools_refuse_a_flag_the_config_cannot_take_in_one_line(tmp_path, script, flags,
                                                               message):
    """A flag the config cannot take (``--tta`` without a ``tta_pipeline``, ``--out`` of
    another kind of file, ``--auto-scale-lr`` without ``auto_scale_lr``) stops with an
    ``error:`` line, as a bad file does, not with a traceback."""
    import torch
    torch.save({}, tmp_path / 'model.pth')
    ckpt = [str(tmp_path / 'model.pth')] if script == 'test.py' else []
    out = run_tool([sys.executable, osp.join(ROOT, 'tools', script), SEG_CFG, *ckpt, *flags,
                    '--work-dir', str(tmp_path / 'w')], cwd=str(tmp_path), timeout=120)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert message in out.stderr and 'Traceback' not in out.stderr, out.stderr[-2000:]


@pytest.mark.parametrize('script, args, message', [
    ('test.py', ['nope.pth'], 'error: checkpoint nope.pth: no such file'),
    ('test.py', ['work_dirs'], 'error: checkpoint work_dirs is a folder, not a checkpoint file'),
    ('train.py', ['--resume', 'nope.pth'], 'error: --resume nope.pth: no such file'),
    # a cut-off file of torch.save's legacy format (mmdet 2.x / mmseg 0.x releases): torch's
    # traceback ('unexpected EOF'), which named no file
    ('test.py', ['cut.pth'], 'error: checkpoint cut.pth: the file (torch.save\'s legacy format'),
    ('train.py', ['--cfg-options', 'load_from=cut.pth'], 'error: load_from cut.pth: the file'),
    # the same as the backbone's init_cfg checkpoint, read when the backbone initialises
    ('train.py', ['--cfg-options', 'model.backbone.init_cfg.type=Pretrained',
                  'model.backbone.init_cfg.checkpoint=cut.pth'],
     'error: cut.pth could not be read with torch.load(weights_only=True)'),
])
def test_tools_name_a_missing_checkpoint_in_one_line(tmp_path, script, args, message):
    """``python tools/test.py CONFIG CHECKPOINT`` with a checkpoint that is not there (a typo,
    a release not downloaded yet) or a folder, and ``tools/train.py --resume FILE``: the
    README's one ``error:`` line; they stopped with the traceback of a ``FileNotFoundError`` /
    ``IsADirectoryError`` (only a cut-off file was a line). The same for a legacy-format file
    cut off (it has no zip directory to look at) as checkpoint, ``load_from`` or ``init_cfg``."""
    (tmp_path / 'work_dirs').mkdir()
    legacy = tmp_path / 'legacy.pth'
    torch.save({'state_dict': {'w': torch.ones(64, 64)}}, legacy,
               _use_new_zipfile_serialization=False)
    (tmp_path / 'cut.pth').write_bytes(legacy.read_bytes()[:-100])
    out = run_tool([sys.executable, osp.join(ROOT, 'tools', script), SEG_CFG, *args,
                    '--work-dir', str(tmp_path / 'w')], cwd=str(tmp_path), timeout=120)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert message in out.stderr and 'Traceback' not in out.stderr, out.stderr[-2000:]


@pytest.mark.parametrize('script, kind, args, message', [
    ('train.py', 'det', ['--work-dir', 'afile'], 'error: --work-dir afile is a file, not a folder'),
    ('train.py', 'seg', ['--cfg-options', 'work_dir=afile/w'],
     "error: the config's work_dir afile/w cannot be made: {tmp}/afile is a file, not a folder"),
    ('test.py', 'det', ['--out', 'afile/preds.pkl'],
     'error: --out afile/preds.pkl: its folder {tmp}/afile is a file, not a folder'),
    ('test.py', 'seg', ['--out', 'afile'], 'error: --out afile is a file, not a folder'),
    ('test.py', 'det', ['--show-dir', '{tmp}/afile/vis'],
     'error: --show-dir {tmp}/afile/vis cannot be made: {tmp}/afile is a file'),
])
def test_tools_refuse_an_output_place_that_is_a_file_before_running(tmp_path, script, kind,
                                                                    args, message):
    """A work dir, ``--out`` or ``--show-dir`` that is a file, or lies under one, is refused
    in one ``error:`` line before anything is built or run: the work dir stopped mmengine's
    Runner with a ``FileExistsError``/``NotADirectoryError`` traceback, and ``--out`` failed
    so after the whole test set had been evaluated (its predictions lost)."""
    (tmp_path / 'afile').write_text('not a folder')
    torch.save({}, tmp_path / 'model.pth')
    ckpt = [str(tmp_path / 'model.pth')] if script == 'test.py' else []
    args = [a.replace('{tmp}', str(tmp_path)) for a in args]
    if '--work-dir' not in args and "work_dir=" not in ' '.join(args):
        args += ['--work-dir', str(tmp_path / 'w')]
    out = run_tool([sys.executable, osp.join(ROOT, 'tools', script),
                    DET_CFG if kind == 'det' else SEG_CFG, *ckpt, *args],
                   cwd=str(tmp_path), timeout=120)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    message = message.replace('{tmp}', str(tmp_path))
    assert message in out.stderr and 'Traceback' not in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / 'w').exists()  # nothing was started


@pytest.mark.parametrize('script, broken', [('train.py', 'train_dataloader'),
                                            ('test.py', 'test_evaluator')])
def test_a_cut_off_annotation_file_is_named(tmp_path, script, broken):
    """A COCO annotation file cut off (an interrupted download or extraction), read by the
    dataset or by the evaluator: the run stopped with ``json.load``'s traceback,
    ``JSONDecodeError: Expecting ',' delimiter: line 1 column 46961``, which names no
    file. It is named in one ``error:`` line."""
    shapes = osp.join(ROOT, 'data', 'shapes')
    whole = osp.join(shapes, 'annotations', 'instances_val.json')
    with open(whole, 'rb') as f:
        text = f.read()
    cut = tmp_path / 'annotations' / 'instances.json'
    cut.parent.mkdir()
    cut.write_bytes(text[:len(text) // 2])
    classes = ('circle', 'square', 'triangle')
    coco = dict(type='CocoDataset', data_root=shapes + '/', metainfo=dict(classes=classes),
                ann_file=whole, data_prefix=dict(img='images/val/'))
    lines = [f'_base_ = {DET_CFG!r}',
             f'train_dataloader = dict(dataset={dict(coco, ann_file=str(cut))!r})'
             if broken == 'train_dataloader' else
             f'test_dataloader = dict(dataset={coco!r})\n'
             f'test_evaluator = dict(ann_file={str(cut)!r})']
    cfg = tmp_path / 'coco.py'
    cfg.write_text('\n'.join(lines) + '\n')
    torch.save({'state_dict': {}}, tmp_path / 'model.pth')
    ckpt = [str(tmp_path / 'model.pth')] if script == 'test.py' else []
    out = run_tool([sys.executable, osp.join(ROOT, 'tools', script), str(cfg), *ckpt,
                    '--work-dir', str(tmp_path / 'w')], cwd=str(tmp_path), timeout=300)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    with pytest.raises(json.JSONDecodeError) as decoded:  # what json.load says of it
        json.loads(cut.read_bytes())
    assert f'error: annotation file {cut} is not valid JSON ({decoded.value})' in out.stderr
    assert 'Traceback' not in out.stderr, out.stderr[-2000:]


def test_cfg_options_that_would_change_nothing_are_refused(tmp_path):
    """``--cfg-options`` merges into the loaded config: a typo in the first name
    (``trian_cfg.max_iters=2``) and a variable of the config file (``max_iters=2``, which the
    file had already used in ``train_cfg`` and the scheduler) were accepted in silence, and
    the run trained the config's 700 iterations. Both are refused in one line, the variable
    with the entries that hold its value, before anything is built; so is text where the config
    has a number or a boolean."""
    from mmengine.config import Config

    from mmvtx.engine.runner import CfgOptionError, check_cfg_options
    cfg = Config.fromfile(DET_CFG)
    merged = Config.fromfile(DET_CFG)
    merged.merge_from_dict({'max_iters': 2})  # what mmengine makes of it: nothing changes
    assert merged.train_cfg.max_iters == cfg.train_cfg.max_iters == 700
    with pytest.raises(CfgOptionError, match=re.escape(
            'max_iters is a variable of the config file, used when the file was read; setting '
            'it here changes nothing. Set what it was used for instead; these entries hold its '
            'value (700): param_scheduler.1.end, train_cfg.max_iters, train_cfg.val_interval')):
        check_cfg_options(cfg, {'max_iters': 2})
    check_cfg_options(cfg, {'train_cfg.max_iters': 2, 'randomness.seed': 1, 'compile': False,
                            'resume': True, 'model.backbone.embed_dims': 24})
    # text where the config has a number (mmengine's loop: 'invalid literal for int()', no
    # option named) or a boolean ('flase' is a non-empty string: true, in silence)
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    for option, message in (
            ('train_cfg.max_iters=1OO', "train_cfg.max_iters is a number in the config (700), "
                                        "and '1OO' is not one"),
            ('train_dataloader.dataset.filter_cfg.filter_empty_gt=flase',
             'train_dataloader.dataset.filter_cfg.filter_empty_gt is True or False in the '
             'config (True), not text')):
        with pytest.raises(CfgOptionError, match=re.escape(f'--cfg-options {option}: {message}')):
            check_cfg_options(cfg, parser.parse_args(['--cfg-options', option]).cfg_options)
    check_cfg_options(cfg, parser.parse_args([
        '--cfg-options', 'train_cfg.max_iters=1e3', 'model.backbone.with_cp=true',
        'param_scheduler.1.end=5', 'optim_wrapper.clip_grad=None']).cfg_options)
    out = run_tool([sys.executable, osp.join(ROOT, 'tools', 'train.py'), DET_CFG, '--work-dir',
                    str(tmp_path / 'w'), '--cfg-options', 'trian_cfg.max_iters=2'],
                   cwd=str(tmp_path), timeout=120)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert ('error: --cfg-options trian_cfg.max_iters=2: the config has no trian_cfg, and '
            'nothing reads it once the config is loaded (did you mean train_cfg') in out.stderr
    assert 'Traceback' not in out.stderr and not (tmp_path / 'w').exists()


def test_cfg_options_a_class_does_not_take_are_refused_with_its_keywords():
    """A misspelt keyword inside an entry (``train_cfg.max_iter=2``) stopped the run only once
    the model was built, in mmengine's ``TypeError``; one that a class keeping ``**kwargs``
    passes on was dropped or failed later still. Refused now, before anything is built, with
    the keywords it may have meant; the class is the one mmengine's Runner would build (its
    registry, the config's scope), and a keyword of a base class that ``**kwargs`` reach is
    accepted."""
    import inspect

    from mmengine.config import Config
    from mmengine.optim import AmpOptimWrapper
    from mmengine.runner import IterBasedTrainLoop

    from mmvtx.engine.runner import CfgOptionError, check_cfg_options
    for path, key, cls, near in (
            (DET_CFG, 'train_cfg.max_iter', IterBasedTrainLoop, 'max_iters'),
            (DET_CFG, 'optim_wrapper.optimizer.weight_decy', torch.optim.AdamW, 'weight_decay'),
            (DET_CFG, 'default_hooks.logger.intervall', None, 'interval'),
            (SEG_CFG, 'val_evaluator.iou_metric', None, 'iou_metrics'),
            (SEG_CFG, 'train_dataloader.dataset.pipeline.3.cat_max_ration', None,
             'cat_max_ratio'),
            (SEG_CFG, 'model.decode_head.channel', None, 'channels')):
        cfg = Config.fromfile(path)
        if cls is not None:  # the keyword is indeed not the class's: mmengine would fail
            assert key.split('.')[-1] not in inspect.signature(cls).parameters
        with pytest.raises(CfgOptionError, match=re.escape(
                f'--cfg-options {key}=2: {key.rsplit(".", 1)[0]} builds ') +
                r'\w+, which takes no ' + key.split('.')[-1] + rf' \(did you mean {near}'):
            check_cfg_options(cfg, {key: 2})
    cfg = Config.fromfile(SEG_CFG)
    # keywords the config does not set but the class (or a base its **kwargs reach) takes
    assert 'loss_scale' in inspect.signature(AmpOptimWrapper).parameters
    check_cfg_options(cfg, {'train_cfg.val_begin': 2, 'default_hooks.checkpoint.max_keep_ckpts':
                            1, 'optim_wrapper.accumulative_counts': 2,
                            'train_dataloader.dataset.indices': 2, 'val_evaluator.prefix': 'v',
                            'param_scheduler.0.verbose': True,
                            'model.backbone.with_cp': True})


@pytest.mark.parametrize('kind', ['det', 'seg'])
def test_a_dataset_with_no_samples_is_named_with_what_it_read(tmp_path, kind):
    """A training set that ends up empty stopped the run, once the model was built, with
    mmengine's ``ValueError: need at least one array to concatenate``, naming nothing: a COCO
    file whose images have no objects (``filter_empty_gt`` drops them all), mmseg's
    ``BaseSegDataset`` (``img_suffix='.jpg'``) on a folder of PNG files. Both now say which
    dataset read what and why nothing is left."""
    shapes = osp.join(ROOT, 'data', 'shapes')
    if kind == 'det':
        with open(osp.join(shapes, 'annotations', 'instances_train.json')) as f:
            coco = json.load(f)
        coco['annotations'] = []
        ann = tmp_path / 'no_objects.json'
        ann.write_text(json.dumps(coco))
        options = ['train_dataloader.dataset.type=CocoDataset', f'train_dataloader.dataset.'
                   f'ann_file={ann}', "train_dataloader.dataset.metainfo.classes=['circle',"
                   "'square','triangle']"]
        message = (f'error: CocoDataset has no samples: {len(coco["images"])} were read from '
                   f"{ann} and its filter_cfg {{'filter_empty_gt': True, 'min_size': 8}} "
                   'dropped every one')
    else:
        options = ['train_dataloader.dataset.type=BaseSegDataset']
        message = (f'error: BaseSegDataset has no samples: none was found in img_path='
                   f'{shapes}/images/train, seg_map_path={shapes}/labels/train (files ending in '
                   "'.jpg')")
    out = run_tool([sys.executable, osp.join(ROOT, 'tools', 'train.py'),
                    DET_CFG if kind == 'det' else SEG_CFG, '--work-dir', str(tmp_path / 'w'),
                    '--cfg-options', f'train_dataloader.dataset.data_root={shapes}', *options],
                   cwd=str(tmp_path), timeout=300)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert message in out.stderr and 'Traceback' not in out.stderr, out.stderr[-2000:]


def test_dist_train_on_cpu_runs_a_recipe_with_syncbn_heads(tmp_path):
    """``bash tools/dist_train.sh CONFIG GPUS`` runs gloo where there is no GPU, but the ADE20K
    recipes' heads use SyncBN, which PyTorch's DDP refuses on CPU modules (``ValueError:
    SyncBatchNorm layers only work with GPU modules`` in every rank). On a CPU-only machine the
    tools now run them as BN, as mmengine's Runner does without distributed training, and say
    so. Here the shapes UPerNet with its heads' norm set to SyncBN, as in those recipes."""
    cfg = small_config(tmp_path, SEG_CFG, 'seg', iters=1, ckpt_interval=1)
    with open(cfg, 'a') as f:
        f.write("model['decode_head']['norm_cfg'] = dict(type='SyncBN', requires_grad=True)\n"
                "model['auxiliary_head']['norm_cfg'] = dict(type='SyncBN', requires_grad=True)\n"
                "val_dataloader['dataset']['indices'] = 2\n")
    work = str(tmp_path / 'w')
    out = run_tool(['bash', osp.join(ROOT, 'tools/dist_train.sh'), cfg, '2', '--work-dir', work],
                   cwd=str(tmp_path), env_extra=dict(PORT=str(29500 + os.getpid() % 1000 + 7)))
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert ('SyncBN is GPU-only in PyTorch, so model.decode_head.norm_cfg, '
            'model.auxiliary_head.norm_cfg run as BN') in log
    assert osp.exists(osp.join(work, 'iter_1.pth'))


def test_cfg_options_text_another_value_of_the_setting_may_take_is_passed_on():
    """Only text that reads as a slip for the config's kind of value is refused: ViT's
    ``qkv_bias`` is True, False or 'qv', and 'qv' reaches the backbone (which checks it)."""
    from mmengine.config import Config
    from mmvtx.engine.runner import CfgOptionError, check_cfg_options
    cfg = Config(dict(model=dict(backbone=dict(qkv_bias=True, drop_path_rate=0.1)),
                      train_cfg=dict(max_iters=700)))
    check_cfg_options(cfg, {'model.backbone.qkv_bias': 'qv'})
    for key, value in (('model.backbone.qkv_bias', 'ture'), ('train_cfg.max_iters', '7OO'),
                       ('model.backbone.drop_path_rate', '0.l')):
        with pytest.raises(CfgOptionError, match=f'{key}={value}'):
            check_cfg_options(cfg, {key: value})
