import torch
import torch.nn.functional as F

from .compat import is_compiling


def padded(n, multiple: int):
    """``n`` rounded up to a multiple of ``multiple``. Written with floor divisions (not
    ``n + (-n % m)``): on the symbolic sizes of ``torch.compile``'s dynamic shapes the floor
    form keeps the nested expressions of padded, merged and again padded maps short enough for
    sympy (recompiling Swin for a new size took minutes with the modulo form)."""
    return (n + multiple - 1) // multiple * multiple


def pad_hw(x: torch.Tensor, multiple: int, channels_last: bool = False):
    """Zero-pads the spatial dims at the bottom/right up to a multiple of ``multiple``.

    ``x`` is ``B x C x H x W`` (or ``B x H x W x C`` with ``channels_last``); returns the padded
    tensor (the input itself when no padding is needed)."""
    h, w = (x.shape[1], x.shape[2]) if channels_last else (x.shape[-2], x.shape[-1])
    ph, pw = padded(h, multiple) - h, padded(w, multiple) - w
    if not is_compiling() and ph == 0 and pw == 0:  # compiling: one graph for
        return x                                                   # padded and unpadded sizes
    if channels_last:
        return F.pad(x, (0, 0, 0, pw, 0, ph))
    return F.pad(x, (0, pw, 0, ph))


def same_size(a, b) -> bool:
    """``a == b`` for sizes (ints or tuples of ints) that may be symbolic: True only where it
    holds for every size the trace covers (``torch.export`` with dynamic sizes,
    ``torch.compile``), so that a shortcut taken for one size (a table already of the wanted
    length) adds no guard that specialises the exported program to that size."""
    from torch.fx.experimental.symbolic_shapes import statically_known_true
    a, b = (tuple(a), tuple(b)) if isinstance(a, tuple) or isinstance(b, tuple) else ((a,), (b,))
    if len(a) != len(b):
        return False
    # while torch.compile's dynamo traces, a symbolic size is no ``torch.SymInt`` to
    # ``isinstance`` (the ints branch below then guarded on the size: a recompile per size)
    if is_compiling() or any(isinstance(v, torch.SymInt) for v in a + b):
        return all(statically_known_true(x == y) for x, y in zip(a, b))
    return all(bool(x == y) for x, y in zip(a, b))  # ints (jit.trace: 0-dim tensors)


def crop_hw(x: torch.Tensor, h, w) -> torch.Tensor:
    """The top-left ``h x w`` of a ``... x H x W`` tensor (``h <= H``, ``w <= W``). While
    compiling or exporting it is a gather (``index_select``): a slice's bounds are guarded
    against the (symbolic) size, which specialised an exported program to inputs that need the
    crop or to inputs that do not, whichever the example was; in eager mode a slice."""
    if is_compiling():
        x = x.index_select(-2, torch.arange(h, device=x.device))
        return x.index_select(-1, torch.arange(w, device=x.device))
    return x[..., :h, :w]


def max_pool2d_ceil(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2, ceil_mode=True)`` on a ``B x C x H x W`` map. While compiling or
    exporting the odd side is padded with ``-inf`` first (the same maxima): the ceil mode's
    output-size rule adds guards on symbolic sizes that ``torch.export`` with ranged ``Dim``s
    refuses as unprovable."""
    if is_compiling():
        h, w = x.shape[-2:]
        x = F.pad(x, (0, padded(w, 2) - w, 0, padded(h, 2) - h), value=float('-inf'))
        return F.max_pool2d(x, 2)
    return F.max_pool2d(x, 2, ceil_mode=True)
