"""Let mmengine 0.10.7 resume under torch >= 2.6 while ``torch.load`` keeps ``weights_only=True``.

mmengine's checkpoints hold its ``HistoryBuffer`` and numpy arrays/scalars in ``meta.message_hub``;
torch >= 2.6 refuses to unpickle them by default, so ``--resume`` (and ``load_from``) fails.
Rather than turning the check off, :func:`allow_mmengine_checkpoints` adds exactly those types to
torch's allow-list of safe globals. Importing mmvtx changes nothing: the allow-list is extended
at the start of a run, before mmengine resumes or loads a checkpoint, by
:class:`SafeCheckpointLoadHook` (which ``tools/train.py``, ``tools/test.py`` and the demo add to
every run; with other tools, add ``custom_hooks=[dict(type='mmvtx.SafeCheckpointLoadHook')]``).
"""
import contextlib
import pickle

import numpy as np
import torch
from mmengine.hooks import Hook

from mmvtx.registry import HOOKS


def _numpy_globals() -> list:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    dtype_classes = [type(np.dtype(t)) for t in (
        'float64', 'float32', 'float16', 'int64', 'int32', 'int16', 'int8', 'uint8', 'bool')]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype] + dtype_classes


HISTORY_BUFFER_STATISTICS = {'min', 'max', 'current', 'mean'}


def _history_buffer_getattr(obj, name: str):
    """Stands in for ``builtins.getattr`` while unpickling: ``HistoryBuffer.__getstate__``
    pickles its statistics methods as ``getattr(HistoryBuffer, 'mean')``. Only those lookups are
    answered; any other use of getattr in a checkpoint is refused."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and name in (HISTORY_BUFFER_STATISTICS |
                                         set(HistoryBuffer._statistics_methods)):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f'refused getattr({obj!r}, {name!r}) in a checkpoint')


def _mmengine_globals() -> list:
    from mmengine.logging.history_buffer import HistoryBuffer
    return [HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr')] + _numpy_globals()


def allow_mmengine_checkpoints():
    """Adds mmengine's and numpy's checkpoint types to ``torch.serialization``'s safe globals."""
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:  # torch < 2.4 loads them without an allow-list
        return
    add(_mmengine_globals())


@contextlib.contextmanager
def mmengine_checkpoint_globals():
    """The same allow-list for one ``torch.load`` only (a context manager): what it adds is
    taken away again, what was allowed before (e.g. by :class:`SafeCheckpointLoadHook` for the
    run's ``--resume``) stays allowed. How pretrained weights are read from a training
    checkpoint."""
    if getattr(torch.serialization, 'safe_globals', None) is None:  # torch < 2.4: no list
        yield
        return
    present = torch.serialization.get_safe_globals()
    with torch.serialization.safe_globals([g for g in _mmengine_globals() if g not in present]):
        yield


@HOOKS.register_module()
class SafeCheckpointLoadHook(Hook):
    """Calls :func:`allow_mmengine_checkpoints` in ``before_run``, which mmengine's Runner calls
    before it resumes or loads a checkpoint (train, val and test alike)."""
    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        allow_mmengine_checkpoints()
