"""Let mmengine 0.10.7 resume under torch >= 2.6 while ``torch.load`` keeps ``weights_only=True``.

mmengine's checkpoints hold its ``HistoryBuffer`` and numpy arrays/scalars in ``meta.message_hub``;
torch >= 2.6 refuses to unpickle them by default, so ``--resume`` (and ``load_from``) fails.
Rather than turning the check off, :func:`allow_mmengine_checkpoints` adds exactly those types to
torch's allow-list of safe globals. Importing mmvtx changes nothing: the allow-list is extended
at the start of a run, before mmengine resumes or loads a checkpoint, by
:class:`SafeCheckpointLoadHook` (which ``tools/train.py``, ``tools/test.py`` and the demo add to
every run; with other tools, add ``custom_hooks=[dict(type='mmvtx.SafeCheckpointLoadHook')]``).

The same hook writes the checkpoints of a run without those types (:func:`plain_message_hub`:
each ``HistoryBuffer`` of the message hub as a dict of tensors, turned back into one when the
checkpoint is loaded, :func:`restore_message_hub`), so that a trained model loads where no hook
runs: mmdet's ``init_detector``/``DetInferencer``, mmseg's ``init_model``/``MMSegInferencer``,
a plain ``torch.load``.
"""
import contextlib
import copy
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


PLAIN_HISTORY_BUFFER = 'mmengine.logging.HistoryBuffer'  # the marker of a buffer written plain


def _python_scalars(value):
    """``value`` with numpy scalars (e.g. the timer's ``eta``, a ``numpy.float64``) as the
    Python numbers they equal, through dicts, lists and tuples (new containers where one
    changes; anything else as it is)."""
    if isinstance(value, np.generic) and value.dtype.kind in 'biuf':
        return value.item()
    if isinstance(value, dict):
        items = {key: _python_scalars(item) for key, item in value.items()}
        if any(items[key] is not item for key, item in value.items()):
            new = copy.copy(value)  # an OrderedDict stays one
            new.update(items)
            return new
        return value
    if type(value) in (list, tuple):
        items = [_python_scalars(item) for item in value]
        return type(value)(items) if any(a is not b for a, b in zip(items, value)) else value
    return value


def plain_message_hub(checkpoint: dict) -> dict:
    """Writes ``checkpoint``'s ``meta`` and ``message_hub`` with types that
    ``torch.load(weights_only=True)`` reads without an allow-list (in ``checkpoint``, not in
    the run's message hub): each ``HistoryBuffer`` of the message hub's ``log_scalars`` as a
    dict of its history as tensors (same dtype, same values) and its ``max_length``, numpy
    scalars as Python numbers. A buffer whose history is no numeric array is kept as it is.
    Returns ``checkpoint``."""
    from mmengine.logging.history_buffer import HistoryBuffer
    for part in ('meta', 'message_hub'):
        if part in checkpoint:
            checkpoint[part] = _python_scalars(checkpoint[part])
    hub = checkpoint.get('message_hub')
    if not isinstance(hub, dict) or not isinstance(hub.get('log_scalars'), dict):
        return checkpoint
    scalars = {}
    for key, buffer in hub['log_scalars'].items():
        history, counts = (np.asarray(getattr(buffer, name, None)) for name in
                           ('_log_history', '_count_history'))
        if (isinstance(buffer, HistoryBuffer) and history.dtype.kind in 'biuf'
                and counts.dtype.kind in 'biuf'):
            buffer = {'type': PLAIN_HISTORY_BUFFER, 'max_length': int(buffer.max_length),
                      'log_history': torch.from_numpy(np.array(history)),
                      'count_history': torch.from_numpy(np.array(counts))}
        scalars[key] = buffer
    checkpoint['message_hub'] = dict(hub, log_scalars=scalars)
    return checkpoint


def restore_message_hub(checkpoint: dict) -> dict:
    """Turns the buffers :func:`plain_message_hub` wrote back into ``HistoryBuffer`` objects
    (what mmengine's ``MessageHub.load_state_dict`` resumes; it skips anything else).
    Returns ``checkpoint``."""
    from mmengine.logging.history_buffer import HistoryBuffer
    hub = checkpoint.get('message_hub')
    if not isinstance(hub, dict) or not isinstance(hub.get('log_scalars'), dict):
        return checkpoint
    for key, buffer in list(hub['log_scalars'].items()):
        if isinstance(buffer, dict) and buffer.get('type') == PLAIN_HISTORY_BUFFER:
            restored = HistoryBuffer(max_length=buffer['max_length'])
            # the arrays as saved (HistoryBuffer's own constructor would re-type an empty one)
            restored._log_history = buffer['log_history'].numpy().copy()
            restored._count_history = buffer['count_history'].numpy().copy()
            hub['log_scalars'][key] = restored
    return checkpoint


@HOOKS.register_module()
class SafeCheckpointLoadHook(Hook):
    """Calls :func:`allow_mmengine_checkpoints` in ``before_run``, which mmengine's Runner calls
    before it resumes or loads a checkpoint (train, val and test alike); writes the run's
    checkpoints with plain types only (:func:`plain_message_hub`) and reads them back
    (:func:`restore_message_hub`, before mmengine resumes the message hub)."""
    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        allow_mmengine_checkpoints()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        plain_message_hub(checkpoint)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        restore_message_hub(checkpoint)
