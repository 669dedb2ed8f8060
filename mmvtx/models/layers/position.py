"""Position inside attention for the plain ViT families: ViTDet's decomposed relative position
(Li et al. 2022, after MViTv2; also SAM's image encoder) and DINOv3's 2-D rotary position
embedding (RoPE). Swin's relative position *bias* table is in :mod:`.window` /
:mod:`..backbones.swin`; learned absolute position embeddings in :mod:`.pos_embed`."""
import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .padding import same_size
from .pos_embed import deterministic_resample, interpolation_matrix


def resize_rel_pos_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """A ``L x d`` relative position table resized to ``length`` rows by linear interpolation
    (ViTDet), in its own dtype; unchanged when it has that length."""
    if same_size(table.shape[0], length):  # (a symbolic length is resampled: the identity)
        return table
    if deterministic_resample() and table.requires_grad:  # the same map as a matrix product
        a = interpolation_matrix(table.shape[0], length, 'linear', device=table.device)
        return a.to(table.dtype) @ table
    return F.interpolate(table.t().unsqueeze(0), size=length, mode='linear')[0].t()


def rel_pos_for(size: int, table: torch.Tensor) -> torch.Tensor:
    """``size x size x d`` embeddings of the offsets ``i - j`` between ``size`` query and key
    positions along one axis, from a ``(2m - 1) x d`` table learned for ``m`` positions: the
    table is resized by linear interpolation (ViTDet) when ``m != size``."""
    table = resize_rel_pos_table(table, 2 * size - 1)
    idx = torch.arange(size, device=table.device)
    return table[idx[:, None] - idx[None, :] + (size - 1)]


def decomposed_rel_pos(q: torch.Tensor, hw: Tuple[int, int], rel_pos_h: torch.Tensor,
                       rel_pos_w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """ViTDet's decomposed relative position terms for queries ``q`` (``... x h*w x d``, not yet
    scaled) on an ``h x w`` grid attending to keys on the same grid: ``rel_h[n, i] = q_n .
    R_h[y_n - i]`` and ``rel_w[n, j] = q_n . R_w[x_n - j]`` (``... x h*w x h`` and ``... x h*w x
    w``), added to the logit of key ``(i, j)`` by :func:`~.attention.attention`."""
    h, w = hw
    Rh = rel_pos_for(h, rel_pos_h).to(q.dtype)
    Rw = rel_pos_for(w, rel_pos_w).to(q.dtype)
    r_q = q.reshape(*q.shape[:-2], h, w, q.shape[-1])
    rel_h = torch.einsum('...hwc,hkc->...hwk', r_q, Rh)
    rel_w = torch.einsum('...hwc,wkc->...hwk', r_q, Rw)
    return rel_h.flatten(-3, -2), rel_w.flatten(-3, -2)


class Rope2d(nn.Module):
    """DINOv3's rotary position embedding on the patch grid: patch centres normalised to
    ``[-1, 1]`` per axis, ``head_dim / 4`` periods ``theta ** (2i / (head_dim / 2))``, the angles of
    y then x tiled twice, applied as ``x cos + rotate_half(x) sin`` to the queries and keys of the
    patch tokens ([CLS] and register tokens are left alone). The training-time coordinate
    augmentations of DINOv3's pretraining (shift, jitter, rescale) are not applied."""

    def __init__(self, head_dim: int, theta: float = 100.0):
        super().__init__()
        if head_dim % 4:
            raise ValueError(f'RoPE needs a head dimension divisible by 4, got {head_dim}')
        self.theta = theta
        periods = theta ** (2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2))
        self.register_buffer('periods', periods, persistent=False)

    def forward(self, h: int, w: int, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(cos, sin)``, each ``h*w x head_dim``."""
        dev = self.periods.device
        ys = torch.arange(0.5, h, device=dev, dtype=torch.float32) / h
        xs = torch.arange(0.5, w, device=dev, dtype=torch.float32) / w
        coords = torch.stack(torch.meshgrid(ys, xs, indexing='ij'), dim=-1).flatten(0, 1)
        coords = 2.0 * coords - 1.0
        angles = 2 * math.pi * coords[:, :, None] / self.periods[None, None, :]
        angles = angles.flatten(1, 2).tile(2)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates the last ``cos.shape[0]`` tokens of ``x`` (``... x N x d``); the leading tokens
    (prefix: [CLS], registers) are unchanged."""
    n = cos.shape[0]
    prefix, patches = x[..., :-n, :], x[..., -n:, :]
    half = patches.shape[-1] // 2
    rotated = torch.cat([-patches[..., half:], patches[..., :half]], dim=-1)
    return torch.cat([prefix, patches * cos + rotated * sin], dim=-2)
