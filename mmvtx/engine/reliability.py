"""Nothing lost and nothing different after a kill: checkpoints written atomically, the resume
point chosen among complete files, and every random draw of training a function of the seed,
the rank and the iteration, so that a resumed run continues exactly as the uninterrupted one.

* :class:`AtomicLocalBackend` (file backend ``mmvtx_atomic``): mmengine's checkpoint writes go
  to a temporary file in the same directory, flushed to disk and renamed over the target, so a
  process killed while saving leaves the previous checkpoints and no partial file.
* :func:`find_resume_checkpoint`: ``--resume`` without a path (and ``resume = True`` in a
  config) takes the newest *complete* checkpoint of the work dir and of the checkpoint hook's
  folder, under its names (``out_dir``, ``filename_tmpl``); ``last_checkpoint``, which mmengine
  writes in place, is followed only if it names a complete file.
* :class:`ExactResumeHook`: mmengine seeds Python, NumPy and torch once per run, so after a
  resume every later draw (drop path, dropout, data augmentation, proposal sampling) comes out
  of a different stream. The hook reseeds all of them (CUDA included) from ``(seed, rank,
  iteration)`` before each batch is fetched and before each iteration runs, so the streams
  depend on where training is, not on how it got there. DataLoader workers are seeded by
  mmengine from the seed and their id; their draws replay identically when the iteration-based
  loop skips the batches already trained, and when an epoch starts with fresh workers.
  Persistent workers in an epoch-based loop carry their streams over epochs and cannot be
  replayed: the hook says so when such a run resumes.
  mmengine saves a checkpoint before the validation of the same iteration (or epoch), so a run
  killed during that validation resumed after it: its metrics, and the ``save_best``
  checkpoint it might have made, were never produced (after the last iteration, the resumed
  run ended with no metrics at all). :class:`ResumeValidationHook` records each finished
  validation in the work dir (``VALIDATED_FILE``) and, on resume from a validation point that
  is not recorded, runs that validation first.
"""
import bisect
import glob
import hashlib
import json
import logging
import os
import os.path as osp
import random
import re
import tempfile
import zipfile
from typing import Optional

import numpy as np
import torch
from mmengine.fileio.backends import LocalBackend, register_backend
from mmengine.hooks import Hook
from mmengine.logging import print_log

from mmvtx.engine._model import unwrap_model
from mmvtx.registry import HOOKS
from mmvtx.utils.checkpoint import LEGACY_TORCH_MAGIC

ATOMIC_BACKEND = 'mmvtx_atomic'
VALIDATED_FILE = '.validated.json'  # in the work dir: the validations training finished


def _open_mode(path: str) -> int:
    """The permission bits ``open(path, 'wb')`` would leave: those of the file it replaces, or
    ``0o666`` less the umask for a new file (``mkstemp`` creates its files ``0o600``)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write(data: bytes, path: str):
    """Writes ``data`` to ``path`` so that ``path`` holds either its old content or all of the
    new one, whenever the process is killed. The file gets the permissions a plain ``open``
    would give it."""
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.', suffix='.tmp', dir=directory)
    try:
        with os.fdopen(fd, 'wb') as f:
            os.fchmod(f.fileno(), _open_mode(path))
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if osp.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:
            # a full disk or a size limit: 'No space left on device' alone names no file
            raise OSError(e.errno, f'{e.strerror} (writing it; the file there before, if any, '
                          'is unchanged)', path) from e
        raise


# files ``AtomicLocalBackend.remove`` was asked to delete, by folder: deleted once the next file
# of that folder is written whole (one process writes a run's checkpoints: rank 0)
_DEFERRED_REMOVALS = {}


@register_backend(ATOMIC_BACKEND)
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend with atomic writes (temporary file + rename).

    mmengine's ``CheckpointHook`` deletes the oldest checkpoint (``max_keep_ckpts``) and the
    previous best checkpoint *before* it writes the new one, so with ``max_keep_ckpts=1`` a
    kill during that write left no checkpoint to resume from. ``remove`` therefore only marks
    a file; it is deleted after the next file of its folder has been written whole (a kill
    in between leaves it, and ``--resume`` takes it)."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write(obj, str(filepath))
        written = osp.abspath(str(filepath))
        pending = _DEFERRED_REMOVALS.pop(osp.dirname(written), [])
        for path in pending:
            if path != written and osp.isfile(path):
                os.remove(path)

    def remove(self, filepath) -> None:
        path = osp.abspath(str(filepath))
        if not osp.isfile(path):  # what LocalBackend.remove refuses
            super().remove(filepath)
        folder = _DEFERRED_REMOVALS.setdefault(osp.dirname(path), [])
        if path not in folder:
            folder.append(path)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write(obj.encode(encoding), str(filepath))


DEFAULT_TEMPLATES = ('epoch_{}.pth', 'iter_{}.pth')  # mmengine's CheckpointHook's names


def _template_parts(filename_tmpl: str) -> Optional[tuple]:
    """``(glob, regex)`` of the file names a ``CheckpointHook.filename_tmpl`` gives (its one
    replacement field, ``{}`` or ``{:06d}``, is the step); None for a template of another
    form (no field, or several)."""
    import string
    try:
        parts = list(string.Formatter().parse(filename_tmpl))
    except ValueError:  # an unbalanced '{': mmengine would fail on it when saving
        return None
    if sum(field is not None for _, field, _, _ in parts) != 1:
        return None
    pattern, regex = '', ''
    for literal, field, _, _ in parts:
        pattern += glob.escape(literal) + ('*' if field is not None else '')
        regex += re.escape(literal) + (r'(\d+)' if field is not None else '')
    return pattern, regex


def checkpoint_dir(work_dir: str, out_dir=None) -> str:
    """The folder mmengine's ``CheckpointHook`` writes to: ``work_dir``, or with ``out_dir``
    set (and not the work dir itself) ``out_dir/<the work dir's last folder name>``. mmengine
    compares ``out_dir`` with the Runner's absolute work dir."""
    work_dir = osp.abspath(work_dir)
    if out_dir is None or out_dir == work_dir:
        return work_dir
    return osp.join(str(out_dir), osp.basename(work_dir.rstrip(osp.sep)))


def _saved_checkpoints(folder: str, filename_tmpl: Optional[str]) -> list:
    """``[(step, path)]`` of the checkpoints in ``folder`` named by mmengine's default templates
    and by ``filename_tmpl``."""
    found = {}
    templates = DEFAULT_TEMPLATES + ((filename_tmpl,) if filename_tmpl else ())
    for tmpl in templates:
        parts = _template_parts(tmpl)
        if parts is None:
            continue
        pattern, regex = parts
        # glob.escape: '[', '*', '?' in the folder's name
        for path in glob.glob(osp.join(glob.escape(folder), pattern)):
            m = re.fullmatch(regex, osp.relpath(path, folder))
            if m:
                found[path] = int(m.group(1))
    return [(step, path) for path, step in found.items()]


def is_complete_checkpoint(path: str) -> bool:
    """Whether ``path`` is a whole ``torch.save`` file (its zip directory, written last, is
    there): a file cut off by a kill is not."""
    return osp.isfile(path) and zipfile.is_zipfile(path)


def find_resume_checkpoint(work_dir: str, ckpt_dir: Optional[str] = None,
                           filename_tmpl: Optional[str] = None) -> Optional[str]:
    """The checkpoint ``--resume`` continues from: the one ``last_checkpoint`` (in ``work_dir``)
    names if it is complete, else the newest complete checkpoint of ``work_dir`` and of
    ``ckpt_dir``, the folder the checkpoint hook writes to (:func:`checkpoint_dir`), named
    ``epoch_*.pth`` / ``iter_*.pth`` or by the hook's ``filename_tmpl``."""
    candidates = []
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named:
            candidates.append(named if osp.isabs(named) else osp.join(work_dir, named))
    saved = []
    for folder in dict.fromkeys([work_dir] + ([ckpt_dir] if ckpt_dir else [])):
        saved += _saved_checkpoints(folder, filename_tmpl)
    candidates += [path for _, path in sorted(saved, key=lambda sp: (sp[0], osp.getmtime(
        sp[1])), reverse=True)]
    for i, path in enumerate(candidates):
        if is_complete_checkpoint(path):
            if i and candidates[0] != path:
                print_log(f'resume: {candidates[0]} is missing or incomplete; resuming from '
                          f'{path}', logger='current')
            return path
    return None


# how torch.save's legacy format (torch < 1.6, or _use_new_zipfile_serialization=False, as
# mmdet 2.x / mmseg 0.x published their models) begins: pickle protocol 2, then its magic number
LEGACY_HEAD = b'\x80\x02\x8a\x0a' + LEGACY_TORCH_MAGIC.to_bytes(10, 'little')


def _legacy_file_is_cut_off(path: str) -> bool:
    """Whether a legacy-format ``torch.save`` file ends before its last tensor (it has no zip
    directory to look at: it is read). A file that holds objects torch's allow-list refuses is
    not called cut off here: its loader says what they are."""
    from mmvtx.engine.safe_load import mmengine_checkpoint_globals
    try:
        with mmengine_checkpoint_globals(), open(path, 'rb') as f:
            torch.load(f, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001 - only its kind is wanted
        return 'weights only load failed' not in str(e).lower()
    return False


def check_checkpoint_file(path: str, what: str = '--resume',
                          filename_tmpl: Optional[str] = None):
    """Refuses ``--resume PATH`` (or the checkpoint of another option, ``what``) naming the
    file when it is not there or is a folder, or when it is a ``torch.save`` zip cut off
    before its end (torch's own error names no file), with the newest complete checkpoint
    beside it (named ``epoch_*.pth``/``iter_*.pth`` or by the checkpoint hook's
    ``filename_tmpl``), or when a record of its zip fails its CRC-32 check (torch.load does
    not check). Remote paths (``s3://``) are left to mmengine."""
    if '://' in path:
        return
    if osp.isdir(path):  # e.g. the work dir itself
        raise IsADirectoryError(f'{what} {path} is a folder, not a checkpoint file' + (
            '; --resume alone resumes from the newest complete checkpoint of the work dir: '
            f'--resume --work-dir {path}' if what == '--resume' else ''))
    if not osp.isfile(path):
        raise FileNotFoundError(f'{what} {path}: no such file')
    with open(path, 'rb') as f:
        head = f.read(len(LEGACY_HEAD))
    zipped = head.startswith(b'PK\x03\x04')  # torch.save's format (the legacy one is a pickle)
    if head == LEGACY_HEAD and _legacy_file_is_cut_off(path):
        raise ValueError(f'{what} {path}: the file (torch.save\'s legacy format, e.g. an '
                         'mmdet 2.x / mmseg 0.x release) is incomplete or damaged (cut off by '
                         'an interrupted download or copy?) and cannot be read: fetch it again')
    if zipped and not is_complete_checkpoint(path):
        other = find_resume_checkpoint(osp.dirname(osp.abspath(path)),
                                       filename_tmpl=filename_tmpl)
        raise ValueError(f'{what} {path}: the file is incomplete (cut off while it was being '
                         'written or copied) and cannot be read; ' + (
                             f'the newest complete checkpoint beside it is {other}'
                             if other else 'there is no complete checkpoint beside it'))
    if zipped:
        from mmvtx.utils.checkpoint import DAMAGED_RECORD, damaged_zip_record
        bad = damaged_zip_record(path)
        if bad is not None:  # mmengine would load the damaged bytes as weights
            raise ValueError(f'{what} {path}: the file is damaged: ' +
                             DAMAGED_RECORD.format(record=bad) + '; fetch or copy it again')


def remove_partial_writes(work_dir: str, filename_tmpl: Optional[str] = None) -> list:
    """Deletes the temporary files of checkpoint writes that a kill interrupted (they never
    replaced a checkpoint) in ``work_dir`` (or the checkpoint hook's folder): those of ``*.pth``
    files and of files named by ``filename_tmpl``; returns their paths. Every process of a
    distributed run calls it at the same time, so a file another one deleted first is
    skipped."""
    patterns = ['*.pth']  # atomic_write's temporary file of NAME: .NAME.<random>.tmp
    parts = _template_parts(filename_tmpl) if filename_tmpl else None
    if parts is not None:
        patterns.append(parts[0])
    stale = []
    for pattern in patterns:
        folder, name = osp.split(pattern)  # a template may name a subfolder
        stale += glob.glob(osp.join(glob.escape(work_dir), folder, f'.{name}.*.tmp'))
    stale = list(dict.fromkeys(stale))
    for path in stale:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return stale


TRAIN_LOCK_FILE = '.train.lock'  # in the work dir: held (flock) by the training writing there
_HELD_LOCKS = {}  # lock file -> its descriptor, open (and locked) until the process ends


def _drop_inherited_locks():
    """In a forked child (DataLoader workers, compile workers): its copies of the lock's
    descriptor are closed, so the lock goes with the training process, not with the last of
    its children (a DataLoader worker outlives a kill -9 of its parent by seconds)."""
    for fd in _HELD_LOCKS.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


class WorkDirInUseError(RuntimeError):
    """Another training is writing into the work dir (:func:`lock_work_dir`)."""


def lock_work_dir(work_dir: str):
    """Takes the work dir for this training (an exclusive ``flock`` of ``TRAIN_LOCK_FILE``,
    released by the OS when the process ends, however it ends: kill -9 included), or raises
    :class:`WorkDirInUseError` naming the work dir and the process that holds it. Two trainings
    in one work dir overwrote each other's checkpoints (``iter_N.pth`` of two runs under one
    name), config dump and ``last_checkpoint``, and a second ``--resume`` deleted the first
    run's checkpoint being written (its temporary file), which then crashed. A file system
    without locks is not refused. The main process of a run (rank 0) calls it."""
    import fcntl
    import socket
    import time
    path = osp.join(osp.abspath(work_dir), TRAIN_LOCK_FILE)
    if path in _HELD_LOCKS:
        return
    os.makedirs(osp.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 1024).decode(errors='replace').strip()
        os.close(fd)
        raise WorkDirInUseError(
            f'work dir {work_dir} is in use by another training ({holder or "its " + path}): '
            "two runs in one work dir overwrite each other's checkpoints; give this one "
            'another --work-dir, or stop that one first (then --resume continues it)') from None
    except OSError:  # no locks on this file system (some network mounts)
        os.close(fd)
        return
    os.ftruncate(fd, 0)
    os.write(fd, f'pid {os.getpid()} on {socket.gethostname()}, started '
             f'{time.strftime("%Y-%m-%d %H:%M:%S")}'.encode())
    _HELD_LOCKS[path] = fd


def derived_seed(seed: int, *keys) -> int:
    """A 63-bit seed that depends on ``seed`` and ``keys`` only (stable across runs)."""
    digest = hashlib.sha256(repr((int(seed),) + keys).encode()).digest()
    return int.from_bytes(digest[:8], 'little') & ((1 << 63) - 1)


def seed_everything(seed: int):
    """Seeds Python's ``random``, NumPy's global generator and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


class _ReseedingIterator:
    """Wraps the iteration-based loop's data iterator: the main process's generators are
    reseeded from (seed, rank, n) before the n-th batch is fetched, counting from the first
    batch of the run, so the batches the loop skips after a resume are drawn as before."""

    def __init__(self, iterator, seed: int, rank: int):
        self._iterator, self._seed, self._rank, self._count = iterator, seed, rank, 0

    def __iter__(self):
        return self

    def __next__(self):
        seed_everything(derived_seed(self._seed, self._rank, 'data', self._count))
        self._count += 1
        return next(self._iterator)

    def __getattr__(self, name):
        return getattr(self._iterator, name)


class _NoBatches:
    """The data iterator of a finished iteration-based run: the batches mmengine skips on
    resume are not loaded (none is trained on)."""

    def __iter__(self):
        return self

    def __next__(self):
        return None


class _ReseedingLoader:
    """Wraps the epoch-based loop's DataLoader: the main process's generators are reseeded
    from (seed, rank, global iteration) before each epoch's iterator starts and before each
    batch is fetched."""

    def __init__(self, loader, runner, seed: int, rank: int):
        self._loader, self._runner, self._seed, self._rank = loader, runner, seed, rank

    def __iter__(self):
        seed_everything(derived_seed(self._seed, self._rank, 'epoch', self._runner.epoch))
        iterator = iter(self._loader)
        while True:
            seed_everything(derived_seed(self._seed, self._rank, 'data', self._runner.iter))
            try:
                batch = next(iterator)
            except StopIteration:
                return
            yield batch

    def __len__(self):
        return len(self._loader)

    def __getattr__(self, name):
        return getattr(self._loader, name)


@HOOKS.register_module()
class ExactResumeHook(Hook):
    """Reseeds every generator of the main process from (seed, rank, iteration) before each
    batch is fetched and before each training iteration, so that a run resumed from a
    checkpoint draws the same random numbers as the uninterrupted run (see the module's
    docstring for DataLoader workers)."""
    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        from mmengine.dist import get_rank
        self._seed, self._rank = runner.seed, get_rank()
        loop = runner.train_loop
        if hasattr(loop, 'dataloader_iterator'):  # iteration-based
            if runner.iter > 0 and runner.iter >= getattr(loop, 'max_iters', float('inf')):
                # a finished run resumed (a job that always passes --resume, run again):
                # mmengine skips the trained batches by loading and augmenting every one of
                # them (hours for a COCO schedule) before its loop finds nothing to train
                print_log(f'resumed at iteration {runner.iter}, the end of the schedule '
                          f'(train_cfg.max_iters={loop.max_iters}): nothing to train; to '
                          'train longer, raise train_cfg.max_iters and the schedulers\' end',
                          logger='current', level=logging.WARNING)
                loop.dataloader_iterator = _NoBatches()
                return
            loop.dataloader_iterator = _ReseedingIterator(loop.dataloader_iterator,
                                                          self._seed, self._rank)
        else:
            if runner.epoch > 0 and runner.epoch >= getattr(loop, 'max_epochs', float('inf')):
                print_log(f'resumed at epoch {runner.epoch}, the end of the schedule '
                          f'(train_cfg.max_epochs={loop.max_epochs}): nothing to train; to '
                          'train longer, raise train_cfg.max_epochs and the schedulers\' end',
                          logger='current', level=logging.WARNING)
            loader = loop.dataloader
            if getattr(loader, 'persistent_workers', False) and runner.iter > 0:
                print_log('resumed with persistent DataLoader workers in an epoch-based loop: '
                          'their random streams restart here, so data augmentation will differ '
                          'from the uninterrupted run (set train_dataloader.persistent_workers='
                          'False for an exact resume)', logger='current', level=logging.WARNING)
            loop.dataloader = _ReseedingLoader(loader, runner, self._seed, self._rank)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        seed_everything(derived_seed(self._seed, self._rank, 'step', runner.iter))


@HOOKS.register_module()
class ResumeValidationHook(Hook):
    """Runs the validation a kill interrupted when the run resumes: mmengine writes the
    checkpoint of an iteration (epoch) before validating it, so a run resumed from it went on
    without that validation (its metrics and ``save_best`` checkpoint were lost; after the last
    iteration nothing was left to run). Finished validations of training are recorded in the
    work dir's ``VALIDATED_FILE``; ``tools/train.py`` adds the hook. Priority ``LOWEST``: the
    validation runs after every other hook's ``before_train`` (the checkpoint hook's
    ``save_best`` state included)."""
    priority = 'LOWEST'

    @staticmethod
    def _validation_point(runner):
        """``('epoch' | 'iter', n)`` if the training loop validates where it now stands (the
        test mmengine's loops make after an epoch / iteration), else None."""
        from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
        loop = runner.train_loop
        if isinstance(loop, EpochBasedTrainLoop):
            unit, step, last = 'epoch', runner.epoch, loop.max_epochs
        elif isinstance(loop, IterBasedTrainLoop):
            unit, step, last = 'iter', runner.iter, loop.max_iters
        else:  # a loop of its own: its validation points are unknown
            return None
        interval = loop.dynamic_intervals[bisect.bisect(loop.dynamic_milestones, step + 1) - 1]
        if step > 0 and step >= loop.val_begin and (step % interval == 0 or step == last):
            return unit, step
        return None

    def before_train(self, runner) -> None:
        """On resume at a validation point whose validation never finished (the checkpoint is
        written before it), runs it now; a run that starts from scratch forgets the
        validations recorded in its work dir."""
        from mmengine.dist import broadcast_object_list, is_main_process
        self._training = True
        path = osp.join(runner.work_dir, VALIDATED_FILE)
        if runner.iter == 0 and runner.epoch == 0:
            if is_main_process() and osp.exists(path):
                os.unlink(path)
            return
        point = self._validation_point(runner) if runner.val_loop is not None else None
        if point is None:
            return
        due = [point not in {tuple(p) for p in _read_validated(path)}]
        broadcast_object_list(due)  # every rank validates, or none (the work dir of rank 0)
        if due[0]:
            print_log(f'resumed at {point[0]} {point[1]}, whose validation had not finished '
                      'when the run stopped: validating now', logger='current',
                      level=logging.WARNING)
            runner.val_loop.run()

    def after_val(self, runner) -> None:
        """Records a validation of training as finished (every hook's ``after_val_epoch``,
        the best checkpoint's save included, has run)."""
        from mmengine.dist import is_main_process
        point = self._validation_point(runner) if getattr(self, '_training', False) else None
        if point is None or not is_main_process():
            return
        path = osp.join(runner.work_dir, VALIDATED_FILE)
        done = _read_validated(path)
        if list(point) not in done:
            atomic_write(json.dumps(done + [list(point)]).encode(), path)


# the settings of mmengine's parameter schedulers that a config sets (the rest of a scheduler's
# state is its progress, kept from the checkpoint on resume: last_step, the last values,
# ReduceOnPlateau's best value and counters)
_SCHEDULE_SETTINGS = ('begin', 'end', 'total_iters', 'T_max', 'eta_min', 'eta_min_ratio',
                      'power', 'milestones', 'gamma', 'step_size', 'start_factor', 'end_factor',
                      'factor', 'periods', 'restart_weights', 'cumulative_periods')


def _scheduler_list(schedulers):
    """``[(label, scheduler or state)]`` of mmengine's scheduler list or dict of lists."""
    if isinstance(schedulers, dict):
        return [(f'{name}[{i}]', s) for name, group in schedulers.items()
                for i, s in enumerate(group)]
    return [(f'[{i}]', s) for i, s in enumerate(schedulers or [])]


@HOOKS.register_module()
class ResumeScheduleHook(Hook):
    """A resumed run follows the schedule of its config. mmengine's resume loads each parameter
    scheduler's whole state from the checkpoint, settings included: a run resumed with a longer
    schedule (``train_cfg.max_iters`` and the scheduler's ``end`` raised) kept the old ``end``,
    so its learning rate stayed at ``eta_min`` for the added iterations, with no word. In
    ``after_load_checkpoint`` of a resume, the checkpoint's scheduler states get the settings of
    the schedulers built from the config (``_SCHEDULE_SETTINGS``; their progress, ``last_step``
    and the last values, stays the checkpoint's), and each changed setting is logged. The
    schedulers are chained (each step scales the current value), so the new schedule goes on
    from the values reached. ``tools/train.py --resume`` adds the hook."""
    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        built, saved = runner.param_schedulers, checkpoint.get('param_schedulers')
        if not getattr(runner, '_resume', False) or not built or not saved:
            return
        changes = []
        for (label, scheduler), (_, state) in zip(_scheduler_list(built),
                                                  _scheduler_list(saved)):
            if not hasattr(scheduler, 'state_dict') or not isinstance(state, dict):
                continue  # not built yet (a dict config) or a state of another form
            own = scheduler.state_dict()
            if set(own) != set(state):
                continue  # a scheduler of another kind: mmengine loads it as it does
            for key, value in own.items():
                if key not in _SCHEDULE_SETTINGS or state[key] == value:
                    continue
                changes.append(f'param_scheduler{label} {type(scheduler).__name__}.{key}: '
                               f'{state[key]!r} -> {value!r}')
                state[key] = value
        if changes:
            print_log('resumed with the schedule of the config, which differs from the '
                      "checkpoint's (from the current values on): " + '; '.join(changes),
                      logger='current', level=logging.WARNING)


def _read_validated(path: str) -> list:
    """The validation points recorded in ``path`` ([unit, step] pairs); none if unreadable."""
    try:
        with open(path) as f:
            return [list(p) for p in json.load(f)]
    except (OSError, ValueError, TypeError):
        return []


def _non_finite_parameters(model) -> list:
    """Names of the model's parameters that hold a NaN or an infinity."""
    model = unwrap_model(model)
    named = [(n, p) for n, p in model.named_parameters() if p.is_floating_point()]
    if not named:
        return []
    norms = torch._foreach_norm([p.detach() for _, p in named])  # one pass, one sync
    if bool(torch.isfinite(torch.stack([n.float() for n in norms])).all()):
        return []
    return [n for n, p in named if not bool(torch.isfinite(p.detach()).all())]


@HOOKS.register_module()
class NonFiniteCheckHook(Hook):
    """Stops training, naming what went wrong, when a non-finite loss has made the weights NaN
    or infinite, and refuses to save a checkpoint whose weights are: mmengine logs ``loss: nan``
    and trains on, and its checkpoint rotation (``max_keep_ckpts``) then deletes the last good
    checkpoints in favour of NaN ones, with exit status 0. A non-finite loss whose step left the
    weights finite (AMP's loss scaler skips such steps) is only logged. Priority ``LOW``: after
    the logger has written the iteration's losses, before the checkpoint hook saves."""
    priority = 'LOW'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        outputs = outputs or {}
        bad = {k: float(v) for k, v in outputs.items() if isinstance(v, torch.Tensor)
               and v.numel() == 1 and 'loss' in k and not bool(torch.isfinite(v))}
        if not bad:
            return
        where = f'iteration {runner.iter + 1}'
        terms = ', '.join(f'{k}={v}' for k, v in bad.items())
        params = _non_finite_parameters(runner.model)
        if not params:
            print_log(f'{where}: the loss is not finite ({terms}); the weights stayed finite '
                      '(the step was skipped)', logger='current', level=logging.WARNING)
            return
        self._stop(runner, f'{where}: the loss is not finite ({terms}) and the optimizer step '
                   'made weights NaN or infinite', params)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        params = _non_finite_parameters(runner.model)
        if params:
            self._stop(runner, f'iteration {runner.iter + 1}: weights are NaN or infinite',
                       params)

    @staticmethod
    def _stop(runner, what: str, params: list):
        # where the run's checkpoint hook writes (out_dir, filename_tmpl), as --resume looks
        ckpt = next((h for h in getattr(runner, 'hooks', []) if hasattr(h, 'filename_tmpl')),
                    None)
        folder = str(getattr(ckpt, 'out_dir', None) or runner.work_dir)
        last = find_resume_checkpoint(
            runner.work_dir, None if '://' in folder else folder,
            getattr(ckpt, 'filename_tmpl', None)) if osp.isdir(runner.work_dir) else None
        shown = ', '.join(params[:5]) + (f' and {len(params) - 5} more' if len(params) > 5
                                         else '')
        raise FloatingPointError(
            f'{what} ({shown}); training stopped without saving them. ' +
            (f'The last checkpoint is {last}: resume from it (--resume) ' if last else
             'Train again ') + 'with a lower learning rate, a longer warmup or gradient '
            'clipping (optim_wrapper.clip_grad=dict(max_norm=...)).')
