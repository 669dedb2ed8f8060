import torch
import torch.nn.functional as F


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
    if not torch.compiler.is_compiling() and ph == 0 and pw == 0:  # compiling: one graph for
        return x                                                   # padded and unpadded sizes
    if channels_last:
        return F.pad(x, (0, 0, 0, pw, 0, ph))
    return F.pad(x, (0, pw, 0, ph))
