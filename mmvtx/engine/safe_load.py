"""Let mmengine 0.10.7 resume under torch >= 2.6 while ``torch.load`` keeps ``weights_only=True``.

mmengine's checkpoints hold its ``HistoryBuffer`` and numpy arrays/scalars in ``meta.message_hub``;
torch >= 2.6 refuses to unpickle them by default, so ``--resume`` fails. Rather than turning the
check off, this adds exactly those types to torch's allow-list of safe globals."""
import numpy as np
import torch


def _numpy_globals() -> list:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    dtype_classes = [type(np.dtype(t)) for t in (
        'float64', 'float32', 'float16', 'int64', 'int32', 'int16', 'int8', 'uint8', 'bool')]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype] + dtype_classes


def allow_mmengine_checkpoints():
    """Adds mmengine's and numpy's checkpoint types to ``torch.serialization``'s safe globals."""
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:  # torch < 2.4 loads them without an allow-list
        return
    from mmengine.logging.history_buffer import HistoryBuffer
    add([HistoryBuffer] + _numpy_globals())
