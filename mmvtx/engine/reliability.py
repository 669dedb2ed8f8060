"""Nothing lost and nothing different after a kill: checkpoints written atomically, the resume
point chosen among complete files, and every random draw of training a function of the seed,
the rank and the iteration, so that a resumed run continues exactly as the uninterrupted one.

* :class:`AtomicLocalBackend` (file backend ``mmvtx_atomic``): mmengine's checkpoint writes go
  to a temporary file in the same directory, flushed to disk and renamed over the target, so a
  process killed while saving leaves the previous checkpoints and no partial file.
* :func:`find_resume_checkpoint`: ``--resume`` without a path takes the newest *complete*
  checkpoint of the work dir (``last_checkpoint``, which mmengine writes in place, is followed
  only if it names a complete file).
* :class:`ExactResumeHook`: mmengine seeds Python, NumPy and torch once per run, so after a
  resume every later draw (drop path, dropout, data augmentation, proposal sampling) comes out
  of a different stream. The hook reseeds all of them (CUDA included) from ``(seed, rank,
  iteration)`` before each batch is fetched and before each iteration runs, so the streams
  depend on where training is, not on how it got there. DataLoader workers are seeded by
  mmengine from the seed and their id; their draws replay identically when the iteration-based
  loop skips the batches already trained, and when an epoch starts with fresh workers.
  Persistent workers in an epoch-based loop carry their streams over epochs and cannot be
  replayed: the hook says so when such a run resumes.
"""
import glob
import logging
import hashlib
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

from mmvtx.registry import HOOKS

ATOMIC_BACKEND = 'mmvtx_atomic'


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
    except BaseException:
        if osp.exists(tmp):
            os.unlink(tmp)
        raise


@register_backend(ATOMIC_BACKEND)
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend with atomic writes (temporary file + rename)."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write(obj, str(filepath))

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write(obj.encode(encoding), str(filepath))


def _step(path: str) -> int:
    m = re.search(r'(\d+)\.pth$', osp.basename(path))
    return int(m.group(1)) if m else -1


def is_complete_checkpoint(path: str) -> bool:
    """Whether ``path`` is a whole ``torch.save`` file (its zip directory, written last, is
    there): a file cut off by a kill is not."""
    return osp.isfile(path) and zipfile.is_zipfile(path)


def find_resume_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume`` continues from: the one ``last_checkpoint`` names if it is
    complete, else the newest complete ``epoch_*.pth`` / ``iter_*.pth`` of ``work_dir``."""
    candidates = []
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named:
            candidates.append(named if osp.isabs(named) else osp.join(work_dir, named))
    pattern = osp.join(glob.escape(work_dir), '{}_*.pth')  # '[', '*', '?' in the dir's name
    saved = glob.glob(pattern.format('epoch')) + glob.glob(pattern.format('iter'))
    candidates += sorted(saved, key=lambda p: (_step(p), osp.getmtime(p)), reverse=True)
    for i, path in enumerate(candidates):
        if is_complete_checkpoint(path):
            if i and candidates[0] != path:
                print_log(f'resume: {candidates[0]} is missing or incomplete; resuming from '
                          f'{path}', logger='current')
            return path
    return None


def remove_partial_writes(work_dir: str) -> list:
    """Deletes the temporary files of checkpoint writes that a kill interrupted (they never
    replaced a checkpoint); returns their paths."""
    stale = glob.glob(osp.join(glob.escape(work_dir), '.*.pth.*.tmp'))
    for path in stale:
        os.unlink(path)
    return stale


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
            loop.dataloader_iterator = _ReseedingIterator(loop.dataloader_iterator,
                                                          self._seed, self._rank)
        else:
            loader = loop.dataloader
            if getattr(loader, 'persistent_workers', False) and runner.iter > 0:
                print_log('resumed with persistent DataLoader workers in an epoch-based loop: '
                          'their random streams restart here, so data augmentation will differ '
                          'from the uninterrupted run (set train_dataloader.persistent_workers='
                          'False for an exact resume)', logger='current', level=logging.WARNING)
            loop.dataloader = _ReseedingLoader(loader, runner, self._seed, self._rank)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        seed_everything(derived_seed(self._seed, self._rank, 'step', runner.iter))
