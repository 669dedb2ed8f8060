"""A run killed with SIGKILL and resumed with ``--resume`` ends bit for bit where the
uninterrupted run ends (weights, optimizer state, every logged loss), and a kill while a
checkpoint is being written loses nothing: real ``tools/train.py`` processes, nothing simulated.
"""
import glob
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.engine.test_train_tools import (DET_CFG, ROOT, SEG_CFG, run_tool, shapes_data,  # noqa: F401
                                           small_config)

ITERS = 6


def exact_config(tmp_path, kind: str, workers: int) -> str:
    """A small shapes config, checkpoint every 2 iterations, every iteration's loss logged
    unsmoothed, drop path on, ``workers`` DataLoader workers."""
    path = small_config(tmp_path, DET_CFG if kind == 'det' else SEG_CFG, kind, iters=ITERS,
                        ckpt_interval=2)
    with open(path, 'a') as f:
        f.write("default_hooks['logger']['interval'] = 1\n"
                "log_processor['window_size'] = 1\n"
                "model['backbone']['drop_path_rate'] = 0.2\n"
                f"train_dataloader.update(num_workers={workers}, "
                f"persistent_workers={workers > 0})\n")
    return path


def train_cmd(cfg, work):
    return [sys.executable, osp.join(ROOT, 'tools/train.py'), cfg, '--work-dir', work]


def start(cmd, cwd):
    return subprocess.Popen(cmd, cwd=cwd, env=dict(os.environ, PYTHONPATH=ROOT),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def kill_when(proc, ready, timeout=300.0, poll=0.002):
    """SIGKILLs the process group as soon as ``ready()``; returns False if it ended first."""
    deadline = time.time() + timeout
    while not ready():
        if proc.poll() is not None:
            return False
        assert time.time() < deadline, 'the run never reached the point to kill it at'
        time.sleep(poll)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def losses(work):
    """{iteration: loss} over every run in ``work`` (the killed one and the resumed one)."""
    out = {}
    for f in sorted(glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json'))):
        with open(f) as fh:
            for r in map(json.loads, fh):
                if 'loss' in r:
                    out[r['iter']] = {k: v for k, v in r.items() if k.startswith('loss')}
    return out


def load(path):
    from mmvtx.engine import allow_mmengine_checkpoints
    allow_mmengine_checkpoints()
    return torch.load(path, map_location='cpu', weights_only=True)


def assert_same_tensors(a, b, where=''):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_tensors(a[k], b[k], f'{where}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f'{where}[{i}]')
    else:
        assert a == b, where


@pytest.mark.parametrize('kind, workers', [('seg', 0), ('seg', 2), ('det', 0)])
def test_killed_run_resumes_bit_identical(tmp_path, kind, workers):
    cfg = exact_config(tmp_path, kind, workers)
    whole, killed = str(tmp_path / 'whole'), str(tmp_path / 'killed')
    out = run_tool(train_cmd(cfg, whole), cwd=str(tmp_path))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    proc = start(train_cmd(cfg, killed), str(tmp_path))
    # killed inside iteration 3 or 4: after the first checkpoint, before the second
    assert kill_when(proc, lambda: osp.exists(osp.join(killed, 'iter_2.pth'))), \
        'the run ended before it could be killed'
    assert not osp.exists(osp.join(killed, f'iter_{ITERS}.pth'))
    out = run_tool(train_cmd(cfg, killed) + ['--resume'], cwd=str(tmp_path))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert 'resumed' in out.stdout + out.stderr

    a, b = load(osp.join(whole, f'iter_{ITERS}.pth')), load(osp.join(killed, f'iter_{ITERS}.pth'))
    assert_same_tensors(a['state_dict'], b['state_dict'], 'state_dict')
    assert_same_tensors(a['optimizer'], b['optimizer'], 'optimizer')
    la, lb = losses(whole), losses(killed)
    assert sorted(la) == sorted(lb) == list(range(1, ITERS + 1))
    assert la == lb


def test_a_kill_while_saving_loses_nothing(tmp_path):
    """Killed while a checkpoint file is being written (its temporary file exists): no partial
    checkpoint is left under the real name, and ``--resume`` continues from a complete one."""
    cfg = exact_config(tmp_path, 'seg', 0)
    work = str(tmp_path / 'work')
    caught = False
    for attempt in range(5):  # a save takes milliseconds: try until one is caught mid-write
        proc = start(train_cmd(cfg, work) + (['--resume'] if attempt else []), str(tmp_path))
        caught = kill_when(proc, lambda: bool(glob.glob(osp.join(work, '.iter_*.tmp'))),
                           poll=0.0005)
        if caught:
            break
    assert caught, 'no save was caught in progress in 5 runs'
    from mmvtx.engine.reliability import find_resume_checkpoint, is_complete_checkpoint
    saved = glob.glob(osp.join(work, 'iter_*.pth'))
    assert all(is_complete_checkpoint(p) for p in saved), saved
    for p in saved:
        load(p)
    out = run_tool(train_cmd(cfg, work) + ['--resume'], cwd=str(tmp_path))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert find_resume_checkpoint(work) == osp.join(work, f'iter_{ITERS}.pth')
    assert not glob.glob(osp.join(work, '.*.tmp'))
