"""Resolution is a first-class operation: resizing learned position tables between sizes."""
from typing import Optional

import torch
import torch.nn.functional as F

from .compat import is_compiling
from .padding import same_size


def resize_rel_pos_bias_table(table: torch.Tensor, window_size: int) -> torch.Tensor:
    """``(2m-1)^2 x heads`` relative position bias table -> ``(2M-1)^2 x heads`` by bicubic
    interpolation of the ``(2m-1) x (2m-1)`` grid of offsets (as the Swin authors do when
    fine-tuning at another window size)."""
    src = round(table.shape[0] ** 0.5)
    dst = 2 * window_size - 1
    if src == dst:
        return table
    heads = table.shape[1]
    grid = table.float().T.reshape(1, heads, src, src)
    grid = F.interpolate(grid, size=(dst, dst), mode='bicubic', align_corners=False)
    return grid.reshape(heads, dst * dst).T.to(table.dtype)


def deterministic_resample() -> bool:
    """Whether run-time resampling of learned tables must avoid ``F.interpolate``'s backward:
    PyTorch refuses it on CUDA under ``torch.use_deterministic_algorithms(True)`` (mmengine's
    ``randomness=dict(deterministic=True)``, ``tools/train.py --deterministic``)."""
    return torch.are_deterministic_algorithms_enabled() and torch.is_grad_enabled()


def interpolation_matrix(src: int, dst: int, mode: str, scale: Optional[float] = None,
                         antialias: bool = False, device=None) -> torch.Tensor:
    """``dst x src`` weights of ``F.interpolate`` along one axis (``mode`` ``'linear'`` or
    ``'bicubic'``, ``align_corners=False``; ``scale``: its ``scale_factor``, else ``size``),
    read off by interpolating the unit vectors. PyTorch's bilinear/bicubic resampling (also
    antialiased) is separable, so a 2-D resize is ``A_h @ grid @ A_w^T``: matrix products, whose
    backward is deterministic where ``F.interpolate``'s is refused."""
    eye = torch.eye(src, device=device, dtype=torch.float32)
    kw = dict(scale_factor=scale) if scale is not None else dict(size=dst)
    if mode == 'linear':
        out = F.interpolate(eye[:, None, :], mode='linear', align_corners=False, **kw)[:, 0]
    else:  # a 2-D mode on src x 2 maps, the second axis kept (not 1 wide: PyTorch's
        # antialiased bicubic gives every output row the same weights when a side is 1)
        kw = dict(scale_factor=(scale, 1.0)) if scale is not None else dict(size=(dst, 2))
        out = F.interpolate(eye[:, None, :, None].expand(src, 1, src, 2).contiguous(),
                            mode=mode, align_corners=False, antialias=antialias,
                            **kw)[:, 0, :, 0]
    return out.t()


def bicubic_matrix(src: int, dst, scale, device=None) -> torch.Tensor:
    """``dst x src`` weights of ``F.interpolate(mode='bicubic', align_corners=False,
    scale_factor=scale)`` along one axis (``dst`` output cells; not antialiased), computed from
    the sizes with tensor operations as PyTorch's kernel does (cubic convolution with
    ``A = -0.75``, taps clamped to the border), so that ``dst`` and ``scale`` may be symbolic
    (``torch.export`` with dynamic sizes); ``scale`` may be a 0-dim tensor."""
    A = -0.75
    x = (torch.arange(dst, device=device, dtype=torch.float64) + 0.5) * (1.0 / scale) - 0.5
    i0 = x.floor()
    t = x - i0

    def near(d):  # |d| <= 1
        return ((A + 2) * d - (A + 3)) * d * d + 1

    def far(d):  # 1 < |d| < 2
        return ((A * d - 5 * A) * d + 8 * A) * d - 4 * A

    weights = torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], -1)  # dst x 4
    taps = (i0.long()[:, None] + torch.arange(-1, 3, device=device)).clamp(0, src - 1)
    return (F.one_hot(taps, src).to(weights.dtype) * weights[..., None]).sum(1).float()


def resize_pos_embed(pos_embed: torch.Tensor, src_grid, dst_grid, num_extra_tokens: int = 1,
                     antialias: bool = False, offset: float = 0.0,
                     mode: str = 'bicubic') -> torch.Tensor:
    """``1 x (extra + h*w) x C`` position embedding from an ``h x w`` patch grid to another
    (bicubic, in float32, as mmseg/timm/transformers; ``mode='bilinear'``: mmseg's
    ``interpolate_mode`` of SETR); the extra ([CLS]) positions are kept.

    ``antialias`` and ``offset`` follow DINOv2's ``interpolate_antialias`` /
    ``interpolate_offset``: with an offset the resampling scale is ``(dst + offset) / src`` (the
    DINO "historical kludge", 0.1 in DINOv2's release) instead of ``dst / src``."""
    src_grid, dst_grid = tuple(src_grid), tuple(dst_grid)
    if same_size(src_grid, dst_grid):  # (a symbolic grid is resampled: the identity there)
        return pos_embed
    extra, grid = pos_embed[:, :num_extra_tokens], pos_embed[:, num_extra_tokens:]
    C = pos_embed.shape[-1]
    grid = grid.reshape(1, src_grid[0], src_grid[1], C).permute(0, 3, 1, 2).float()
    scales = [(d + offset) / s for d, s in zip(dst_grid, src_grid)] if offset else None
    if deterministic_resample() and grid.requires_grad:  # the same map as matrix products
        a_h, a_w = (interpolation_matrix(s, d, mode, scales and scales[i], antialias,
                                         grid.device)
                    for i, (s, d) in enumerate(zip(src_grid, dst_grid)))
        if (a_h.shape[0], a_w.shape[0]) != dst_grid:
            raise ValueError(f'position embedding offset {offset} resized {src_grid} to '
                             f'{(a_h.shape[0], a_w.shape[0])}, not {dst_grid}')
        grid = torch.einsum('ih,bchw,jw->bcij', a_h, grid, a_w)
    elif offset and not antialias and mode == 'bicubic' and (is_compiling() or
                                       torch.jit.is_tracing()):
        # the scale (dst + offset) / src depends on the input size: F.interpolate takes it as
        # a constant (torch.export specialised the program to the example's size, jit.trace
        # failed), the same resampling as matrices built from the size does not. The grid
        # may be the source grid at run time, which eager mode keeps as it is: there the
        # offset is 0 (a tensor, not a guard), and the matrices are the identity
        dst = [torch.full((), d, dtype=torch.float64, device=grid.device) for d in dst_grid]
        moved = (dst[0] != src_grid[0]) | (dst[1] != src_grid[1])
        a_h, a_w = (bicubic_matrix(s, d, (d_t + offset * moved) / s, grid.device)
                    for s, d, d_t in zip(src_grid, dst_grid, dst))
        grid = torch.einsum('ih,bchw,jw->bcij', a_h, grid, a_w)
    elif offset:
        grid = F.interpolate(grid, scale_factor=scales, mode=mode, align_corners=False,
                             antialias=antialias)
        if tuple(grid.shape[-2:]) != dst_grid:
            raise ValueError(f'position embedding offset {offset} resized {src_grid} to '
                             f'{tuple(grid.shape[-2:])}, not {dst_grid}')
    else:
        grid = F.interpolate(grid, size=dst_grid, mode=mode, align_corners=False,
                             antialias=antialias)
    grid = grid.to(pos_embed.dtype).flatten(2).transpose(1, 2)
    return torch.cat([extra, grid], dim=1)
