import torch
import torch.nn.functional as F


def pad_hw(x: torch.Tensor, multiple: int, channels_last: bool = False):
    """Zero-pads the spatial dims at the bottom/right up to a multiple of ``multiple``.

    ``x`` is ``B x C x H x W`` (or ``B x H x W x C`` with ``channels_last``); returns the padded
    tensor (the input itself when no padding is needed)."""
    h, w = (x.shape[1], x.shape[2]) if channels_last else (x.shape[-2], x.shape[-1])
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return x
    if channels_last:
        return F.pad(x, (0, 0, 0, pw, 0, ph))
    return F.pad(x, (0, pw, 0, ph))
