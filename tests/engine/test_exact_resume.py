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

from tests.engine.test_train_tools import shapes_data  # noqa: F401  (the data, once)
from tests.engine.test_train_tools import DET_CFG, ROOT, SEG_CFG, run_tool, small_config

ITERS = 6


def exact_config(tmp_path, kind: str, workers: int, with_cp: bool = False,
                 epochs: bool = False) -> str:
    """A small shapes config, checkpoint every 2 iterations, every iteration's loss logged
    unsmoothed, drop path on, ``workers`` DataLoader workers; with ``epochs``, an epoch-based
    loop of 3 epochs of 2 iterations, checkpoint every epoch."""
    path = small_config(tmp_path, DET_CFG if kind == 'det' else SEG_CFG, kind, iters=ITERS,
                        ckpt_interval=2, with_cp=with_cp)
    with open(path, 'a') as f:
        f.write("default_hooks['logger']['interval'] = 1\n"
                "log_processor['window_size'] = 1\n"
                "model['backbone']['drop_path_rate'] = 0.2\n"
                f"train_dataloader.update(num_workers={workers}, "
                f"persistent_workers={workers > 0})\n")
        if epochs:
            f.write(f"train_cfg = dict(_delete_=True, type='EpochBasedTrainLoop', "
                    f"max_epochs={ITERS // 2}, val_interval={ITERS})\n"
                    "train_dataloader.update(sampler=dict(_delete_=True, type='DefaultSampler', "
                    "shuffle=True))\n"
                    "train_dataloader['dataset']['indices'] = 4\n"
                    "default_hooks['checkpoint'].update(by_epoch=True, interval=1)\n")
    return path


def train_cmd(cfg, work):
    return [sys.executable, osp.join(ROOT, 'tools/train.py'), cfg, '--work-dir', work]


def start(cmd, cwd, **env):
    """The command in the background, with the environment ``run_tool`` gives (thread count
    included: float results depend on it)."""
    return subprocess.Popen(cmd, cwd=cwd, env=dict(
        os.environ, PYTHONPATH=ROOT, PYTHON=sys.executable,
        OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '2'), **env),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _descendants(pid: int) -> list:
    """Every process below ``pid`` (torchrun starts its workers in sessions of their own, so
    killing the launcher's process group would leave them running)."""
    children = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_when(proc, ready, timeout=300.0, poll=0.002):
    """SIGKILLs the process and all its descendants as soon as ``ready()`` (as a cluster's
    scheduler does); returns False if the process ended first."""
    deadline = time.time() + timeout
    while not ready():
        if proc.poll() is not None:
            return False
        assert time.time() < deadline, 'the run never reached the point to kill it at'
        time.sleep(poll)
    killed = [proc.pid] + _descendants(proc.pid)
    for pid in killed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    # the descendants exit (and close their sockets: torchrun's master port) after the
    # launcher is reaped: a resume started at once found the port still in use
    deadline = time.time() + 30
    while any(_alive(pid) for pid in killed[1:]):
        assert time.time() < deadline, 'killed processes still running after 30 s'
        time.sleep(0.05)
    return True


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie, exited but not reaped, holds no socket)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError):
        return False


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


def _tmp_files(work):
    return glob.glob(osp.join(work, '.iter_*.tmp'))


@pytest.mark.parametrize('kind, workers, epochs', [('seg', 2, False), ('det', 0, True)])
def test_killed_run_resumes_bit_identical(tmp_path, kind, workers, epochs):
    """Killed after its first checkpoint (the iteration-based segmentor: while writing its
    second one, if the write is caught in progress; the detector: in an epoch-based loop),
    resumed, and compared with an uninterrupted run."""
    cfg = exact_config(tmp_path, kind, workers, epochs=epochs)
    last = f'epoch_{ITERS // 2}.pth' if epochs else f'iter_{ITERS}.pth'
    while_saving = not epochs
    whole, killed = str(tmp_path / 'whole'), str(tmp_path / 'killed')
    out = run_tool(train_cmd(cfg, whole), cwd=str(tmp_path))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    proc = start(train_cmd(cfg, killed), str(tmp_path))
    first = osp.join(killed, 'epoch_1.pth' if epochs else 'iter_2.pth')
    if while_saving:  # a save takes milliseconds: poll fast, give up once iter_4 is complete
        ready = lambda: _tmp_files(killed) and osp.exists(first) or osp.exists(  # noqa: E731
            osp.join(killed, 'iter_4.pth'))
        assert kill_when(proc, ready, poll=0.0005), 'the run ended before it could be killed'
    else:
        assert kill_when(proc, lambda: osp.exists(first)), 'the run ended before it was killed'
    assert not osp.exists(osp.join(killed, last))
    from mmvtx.engine.reliability import is_complete_checkpoint
    saved = glob.glob(osp.join(killed, '*_*.pth'))
    assert saved and all(is_complete_checkpoint(p) for p in saved), saved  # nothing partial
    out = run_tool(train_cmd(cfg, killed) + ['--resume'], cwd=str(tmp_path))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert 'resumed' in out.stdout + out.stderr
    assert not _tmp_files(killed)  # the interrupted write's temporary file was removed

    a, b = load(osp.join(whole, last)), load(osp.join(killed, last))
    assert_same_tensors(a['state_dict'], b['state_dict'], 'state_dict')
    assert_same_tensors(a['optimizer'], b['optimizer'], 'optimizer')
    la, lb = losses(whole), losses(killed)
    assert sorted(la) == sorted(lb) == list(range(1, ITERS + 1))
    assert la == lb


def test_resume_takes_the_newest_complete_checkpoint(tmp_path):
    """A truncated checkpoint (a write cut off by a kill, saved by a tool without atomic writes)
    and a ``last_checkpoint`` pointing at it are passed over."""
    from mmvtx.engine.reliability import find_resume_checkpoint, remove_partial_writes
    for step in (2, 4):
        torch.save({'step': torch.tensor(step)}, tmp_path / f'iter_{step}.pth')
    data = (tmp_path / 'iter_4.pth').read_bytes()
    (tmp_path / 'iter_6.pth').write_bytes(data[:len(data) // 2])
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_6.pth'))
    (tmp_path / '.iter_8.pth.abc.tmp').write_bytes(data[:10])
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_4.pth')
    (tmp_path / 'last_checkpoint').write_text('')
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_4.pth')
    assert remove_partial_writes(str(tmp_path)) == [str(tmp_path / '.iter_8.pth.abc.tmp')]
    assert find_resume_checkpoint(str(tmp_path / 'nothing')) is None


def test_partial_writes_removed_by_another_rank_first_are_skipped(tmp_path, monkeypatch):
    """Every rank of ``dist_train.sh ... --resume`` removes the work dir's partial writes at
    the same time: a file that another rank deleted between listing and deleting stopped this
    rank with FileNotFoundError."""
    import glob

    from mmvtx.engine import reliability
    (tmp_path / '.iter_4.pth.abc.tmp').write_bytes(b'x')
    gone = str(tmp_path / '.iter_6.pth.def.tmp')  # listed, then deleted by the other rank
    listed = glob.glob

    def glob_then_other_rank(pattern):
        return listed(pattern) + [gone]

    monkeypatch.setattr(reliability.glob, 'glob', glob_then_other_rank)
    assert reliability.remove_partial_writes(str(tmp_path)) == [
        str(tmp_path / '.iter_4.pth.abc.tmp'), gone]
    assert not (tmp_path / '.iter_4.pth.abc.tmp').exists()


@pytest.mark.parametrize('done', [6, 4])
def test_resuming_a_finished_run_loads_no_data_and_says_so(done, capsys):
    """``--resume`` of a run that has finished (a job that always passes it, run again): before
    its loop found nothing to train, mmengine's ``IterBasedTrainLoop`` skipped the trained
    batches by loading and augmenting each of them (hours for a COCO schedule), and said
    nothing. Its ``run`` (mmengine's own) now fetches no batch, and the log says why nothing
    is trained; an unfinished run still skips its batches through the data, as an exact resume
    needs."""
    from types import SimpleNamespace

    from mmengine.logging import MMLogger
    from mmengine.runner import IterBasedTrainLoop

    from mmvtx.engine.reliability import ExactResumeHook
    MMLogger.get_instance(f'finished_{done}')  # print_log's 'current' logger
    fetched = []

    def batches():
        while True:
            fetched.append(1)
            yield {'inputs': []}

    loop = object.__new__(IterBasedTrainLoop)  # mmengine's loop, without a real dataloader
    loop._max_iters, loop._iter, loop._epoch, loop.stop_training = 6, done, 0, False
    loop.dataloader_iterator = batches()
    hook = ExactResumeHook()
    trained = []
    runner = SimpleNamespace(seed=0, iter=done, train_loop=loop, val_loop=None,
                             model=SimpleNamespace(train=lambda: None),
                             call_hook=lambda name, **kw: getattr(hook, name, None) and getattr(
                                 hook, name)(runner, **kw))
    loop._runner = runner
    loop.run_iter = lambda batch: (trained.append(batch), setattr(loop, '_iter', loop._iter + 1))
    loop._decide_current_val_interval = lambda: None
    loop.run()
    log = capsys.readouterr().out
    if done == 6:
        assert fetched == [] and trained == []
        assert ('resumed at iteration 6, the end of the schedule (train_cfg.max_iters=6): '
                'nothing to train') in log
    else:  # the 4 trained batches are drawn again and skipped, then 2 trained
        assert len(fetched) == 6 and len(trained) == 2
        assert 'nothing to train' not in log


def test_resume_looks_only_in_its_own_work_dir(tmp_path):
    """A work dir whose name reads as a glob pattern (``exp[1]`` matches ``exp1``) resumes from
    its own checkpoints only, and only its own partial writes are removed."""
    from mmvtx.engine.reliability import find_resume_checkpoint, remove_partial_writes
    own, sibling = tmp_path / 'exp[1]', tmp_path / 'exp1'
    own.mkdir(), sibling.mkdir()
    torch.save({}, sibling / 'iter_8.pth')
    (sibling / '.iter_10.pth.abc.tmp').write_bytes(b'x')
    assert find_resume_checkpoint(str(own)) is None
    assert remove_partial_writes(str(own)) == []
    assert (sibling / '.iter_10.pth.abc.tmp').exists()
    torch.save({}, own / 'iter_2.pth')
    (own / '.iter_4.pth.abc.tmp').write_bytes(b'x')
    assert find_resume_checkpoint(str(own)) == str(own / 'iter_2.pth')
    assert remove_partial_writes(str(own)) == [str(own / '.iter_4.pth.abc.tmp')]


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path):
    """mkstemp creates 0600 files; a checkpoint is readable as mmengine's own writes are."""
    from mmvtx.engine.reliability import atomic_write
    old = os.umask(0o022)
    try:
        atomic_write(b'new', str(tmp_path / 'a.pth'))
        with open(tmp_path / 'b.pth', 'wb') as f:
            f.write(b'plain')
        assert oct(os.stat(tmp_path / 'a.pth').st_mode & 0o777) == oct(
            os.stat(tmp_path / 'b.pth').st_mode & 0o777) == '0o644'
        os.chmod(tmp_path / 'a.pth', 0o640)  # an existing file keeps its mode, as with open()
        atomic_write(b'newer', str(tmp_path / 'a.pth'))
        assert os.stat(tmp_path / 'a.pth').st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_killed_ddp_run_resumes_bit_identical(tmp_path):
    """The same with 2 processes on gloo (tools/dist_train.sh) and activation checkpointing
    (non-reentrant, DDP-safe): each rank draws its own streams, and the resumed pair ends where
    the uninterrupted pair ends."""
    cfg = exact_config(tmp_path, 'seg', 0, with_cp=True)
    whole, killed = str(tmp_path / 'whole'), str(tmp_path / 'killed')
    port = str(29500 + os.getpid() % 1000)

    def dist(work):
        return ['bash', osp.join(ROOT, 'tools/dist_train.sh'), cfg, '2', '--work-dir', work]

    out = run_tool(dist(whole), cwd=str(tmp_path), env_extra=dict(PORT=port))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert 'Distributed launcher: pytorch' in log and 'GPU number: 2' in log
    # the process group closes after DDP is freed (else gloo may abort at interpreter exit)
    assert 'still referenced while its process group closes' not in log
    proc = start(dist(killed), str(tmp_path), PORT=port)
    assert kill_when(proc, lambda: osp.exists(osp.join(killed, 'iter_2.pth')))
    assert not osp.exists(osp.join(killed, f'iter_{ITERS}.pth'))
    out = run_tool(dist(killed) + ['--resume'], cwd=str(tmp_path), env_extra=dict(PORT=port))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    a, b = load(osp.join(whole, f'iter_{ITERS}.pth')), load(osp.join(killed, f'iter_{ITERS}.pth'))
    assert_same_tensors(a['state_dict'], b['state_dict'], 'state_dict')
    assert_same_tensors(a['optimizer'], b['optimizer'], 'optimizer')
    assert losses(whole) == losses(killed)


KILL_IN_VAL_HOOK = '''
import os, signal
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class KillInValHook(Hook):
    """SIGKILLs the run in the middle of the validation after iteration KILL_AT_ITER."""
    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if str(runner.iter) == os.environ.get('KILL_AT_ITER') and batch_idx == 1:
            os.kill(os.getpid(), signal.SIGKILL)
'''


def test_validation_killed_midway_runs_on_resume(tmp_path):
    """mmengine saves an iteration's checkpoint before validating it: a run killed during that
    validation resumed after it, and its metrics (and save_best checkpoint) were never
    produced. The resumed run validates that iteration first, once: resuming a finished run
    validates nothing again."""
    (tmp_path / 'kill_in_val.py').write_text(KILL_IN_VAL_HOOK)
    path = small_config(tmp_path, SEG_CFG, 'seg', iters=2, ckpt_interval=1)
    with open(path, 'a') as f:
        f.write("train_cfg.update(val_interval=1)\n"
                "default_hooks['checkpoint'].update(save_best='mIoU', rule='greater')\n"
                "custom_imports = dict(imports=['kill_in_val'], allow_failed_imports=False)\n"
                "custom_hooks = [dict(type='KillInValHook')]\n")
    work = str(tmp_path / 'work')

    def train(*args, **env):  # the hook's module is imported from tmp_path
        return subprocess.run(train_cmd(path, work) + list(args), cwd=str(tmp_path),
                              capture_output=True, text=True, timeout=600, env=dict(
                                  os.environ, PYTHONPATH=f'{ROOT}{os.pathsep}{tmp_path}',
                                  OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '2'), **env))

    out = train(KILL_AT_ITER='1')
    assert out.returncode == -signal.SIGKILL, out.stdout[-3000:] + out.stderr[-3000:]
    assert osp.exists(osp.join(work, 'iter_1.pth')) and not glob.glob(osp.join(work, 'best_*'))

    out = train('--resume')
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert 'resumed at iter 1, whose validation had not finished' in out.stdout + out.stderr
    assert validated_steps(work) == [1, 2]  # every validation of the uninterrupted run, once
    assert len(glob.glob(osp.join(work, 'best_mIoU_iter_*.pth'))) == 1

    out = train('--resume')
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert 'validating now' not in out.stdout + out.stderr  # iter 2's validation had finished
    assert validated_steps(work) == [1, 2]


def validated_steps(work):
    """The iterations of every validation logged in ``work``, over all its runs."""
    steps = []
    for f in sorted(glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json'))):
        with open(f) as fh:
            steps += [r['step'] for r in map(json.loads, fh) if 'mIoU' in r]
    return steps


def test_a_kill_while_saving_with_max_keep_ckpts_1_keeps_the_last_checkpoint(tmp_path,
                                                                            monkeypatch):
    """mmengine's CheckpointHook deletes the oldest checkpoint (``max_keep_ckpts``) and the
    previous best before writing the new one: with ``max_keep_ckpts=1`` a kill during the
    write left no checkpoint at all, and ``--resume`` trained from the start. The tools'
    checkpoint backend deletes them only once the new file is written whole. mmengine's own
    hook, writing through the backend the tools set; the kill is the write interrupted."""
    from types import SimpleNamespace

    from mmengine.hooks import CheckpointHook
    from mmengine.logging import MessageHub
    from mmengine.runner.checkpoint import save_checkpoint

    from mmvtx.engine import reliability
    from mmvtx.engine.reliability import ATOMIC_BACKEND, find_resume_checkpoint
    work = str(tmp_path)
    backend_args = dict(backend=ATOMIC_BACKEND)
    hub = MessageHub.get_instance(f'max_keep_{os.getpid()}')

    def save(out_dir, filename, *args, **kwargs):
        save_checkpoint({'meta': {'step': filename}}, osp.join(out_dir, filename),
                        backend_args=backend_args)

    runner = SimpleNamespace(work_dir=work, message_hub=hub, save_checkpoint=save, iter=1,
                             epoch=0, logger=SimpleNamespace(info=lambda *a: None))
    hook = CheckpointHook(interval=1, by_epoch=False, max_keep_ckpts=1, save_best='mIoU',
                          rule='greater', backend_args=backend_args)
    hook.before_train(runner)
    hook._save_checkpoint_with_step(runner, 1, {})
    hook._save_best_checkpoint(runner, {'mIoU': 0.5})
    assert sorted(os.listdir(work)) == ['best_mIoU_iter_1.pth', 'iter_1.pth', 'last_checkpoint']

    def killed(fd):
        raise KeyboardInterrupt  # the process stops in the middle of writing the file

    monkeypatch.setattr(reliability.os, 'fsync', killed)
    runner.iter = 2
    with pytest.raises(KeyboardInterrupt):
        hook._save_checkpoint_with_step(runner, 2, {})
    with pytest.raises(KeyboardInterrupt):
        hook._save_best_checkpoint(runner, {'mIoU': 0.6})
    assert find_resume_checkpoint(work) == osp.join(work, 'iter_1.pth')
    assert osp.isfile(osp.join(work, 'best_mIoU_iter_1.pth'))

    monkeypatch.undo()  # the resumed run saves: the superseded files go once the new is whole
    runner.iter = 3
    hook._save_checkpoint_with_step(runner, 3, {})
    hook._save_best_checkpoint(runner, {'mIoU': 0.7})
    assert sorted(os.listdir(work)) == ['best_mIoU_iter_3.pth', 'iter_3.pth', 'last_checkpoint']
