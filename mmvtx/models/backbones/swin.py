"""Swin Transformer (Liu et al., 2021) as a multi-scale backbone.

Read top to bottom like the paper (and the seed notes' Swin part):
patch partition + linear embedding (:class:`PatchEmbed`) -> stages of :class:`SwinBlock` that
alternate W-MSA and SW-MSA (cyclic shift by M/2, attention mask, reverse cyclic shift) with a
relative position bias (:func:`get_relative_position_index`) -> :class:`PatchMerging` between
stages -> a LayerNorm on each output, returned as NCHW maps at strides 4, 8, 16, 32.

Tensors stay channels-last (``B x H x W x C``) inside the network; window geometry (padding,
shift, mask) is worked out once per stage and input size, not once per block. The per-token
qkv and output projections run on the real tokens only, and pad + shift + partition (and back)
is one gather (:func:`window_token_index`): the same result as padding first, without the
projections of padded tokens (8-72% more tokens per stage at 512x512) or three copies.
On CPU the linear maps run through oneDNN (:mod:`..layers.linear`), the window attention
through PyTorch's fused kernel folded to 4-D (:func:`..layers.scaled_dot_product_attention`).
"""
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.utils.checkpoint as cp
from torch import nn

from mmvtx.registry import MODELS
from ..layers import (DropPath, Linear, Mlp, drop_path_rates, pad_hw,
                      scaled_dot_product_attention)
from ..layers.linear import linear
from mmvtx.utils.checkpoint import (CheckpointMismatchError, ConvertedCheckpoint, merge_qkv,
                                    rename_keys)
from ..layers.init import init_transformer_weights, trunc_normal_
from ..layers.pos_embed import resize_rel_pos_bias_table
from ..layers.recompute import biased_attention
from mmvtx.utils.logging import log_once
from .base import VisionBackbone

# Value the authors (and mmdet, timm, transformers) put on attention logits between tokens that
# came from different regions of the cyclically shifted map.
SHIFT_MASK_VALUE = -100.0
# Codebases whose Swin shifts every SW-MSA block, even where a map is no larger than a window
# (the authors, timm and transformers SwinModel skip the shift there).
ALWAYS_SHIFTING_SOURCES = ('mmdet/mmseg/mmpretrain', 'transformers SwinBackbone')


# ----------------------------------------------------------------------------- geometry helpers
def get_relative_position_index(window_size: int) -> torch.Tensor:
    """Index into the ``(2M-1)^2`` bias table for every pair of tokens of an ``M x M`` window.

    The seed's code: relative (dy, dx) of each pair, shifted to be non-negative, then
    ``(dy + M - 1) * (2M - 1) + (dx + M - 1)``. Returns an ``M^2 x M^2`` long tensor."""
    coords_h = torch.arange(window_size)
    coords_w = torch.arange(window_size)
    coords = torch.stack(torch.meshgrid([coords_h, coords_w], indexing='ij'))  # 2, M, M
    coords_flatten = torch.flatten(coords, 1)  # 2, N
    relative_coords = coords_flatten[:, :, None] - coords_flatten[:, None, :]  # 2, N, N
    y_coords = relative_coords[0] + window_size - 1
    x_coords = relative_coords[1] + window_size - 1
    return y_coords * (2 * window_size - 1) + x_coords


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """``B x H x W x C`` (H, W multiples of M) -> ``B x nW x M*M x C`` windows, row-major."""
    B, H, W, C = x.shape
    x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, -1, window_size * window_size, C)


def shifted_window_regions(H: int, W: int, window_size: int, shift_size: int) -> torch.Tensor:
    """Region label of each token of the cyclically shifted ``H x W`` map, as ``nW x M*M``.

    After a cyclic shift by ``s`` the bottom and right strips of width ``s`` hold tokens that
    came from the opposite border; the slices ``[0, H-M), [H-M, H-s), [H-s, H)`` (and likewise
    for W) cut the map into nine regions whose tokens were neighbours before the shift."""
    labels = torch.zeros(H, W, dtype=torch.long)
    cuts_h = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    cuts_w = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    region = 0
    for h in cuts_h:
        for w in cuts_w:
            labels[h, w] = region
            region += 1
    return window_partition(labels[None, :, :, None], window_size)[0, ..., 0]


def shifted_window_mask(H: int, W: int, window_size: int, shift_size: int) -> torch.Tensor:
    """Additive SW-MSA mask, ``nW x N x N``: 0 within a region, -100 across regions."""
    regions = shifted_window_regions(H, W, window_size, shift_size)
    blocked = regions[:, :, None] != regions[:, None, :]
    return torch.zeros(blocked.shape).masked_fill_(blocked, SHIFT_MASK_VALUE)


def window_token_index(H: int, W: int, window_size: int, shift_size: int):
    """The pad -> cyclic shift -> window partition of an ``H x W`` token map as one gather.

    Returns ``(index, inverse, pad_slots)``: slot ``j`` of the windows (``nW * M*M`` slots,
    windows and their tokens row-major, as :func:`window_partition` of the zero-padded
    ``Hp x Wp`` map rolled by ``-shift``) holds token ``index[j]`` (``r * W + c``) unless ``j``
    is in ``pad_slots``; token ``t`` sits in slot ``inverse[t]``, which also undoes the
    partition, the shift and the padding in one gather."""
    M = window_size
    Hp, Wp = H + (-H % M), W + (-W % M)
    rows = (torch.arange(Hp) + shift_size) % Hp  # roll by -s: row i of the result is row i+s
    cols = (torch.arange(Wp) + shift_size) % Wp
    source = rows[:, None] * W + cols[None, :]
    source[(rows[:, None] >= H) | (cols[None, :] >= W)] = -1  # padding
    slots = window_partition(source[None, :, :, None], M).reshape(-1)
    real = (slots >= 0).nonzero().squeeze(1)
    inverse = torch.empty(H * W, dtype=torch.long)
    inverse[slots[real]] = real
    return slots.clamp(min=0), inverse, (slots < 0).nonzero().squeeze(1)


def _fill_pad_slots(out: torch.Tensor, pad_slots: torch.Tensor, fill: Optional[torch.Tensor]):
    if pad_slots.numel():
        if fill is None:
            out.index_fill_(1, pad_slots, 0)
        else:
            B, K, D = out.shape[0], pad_slots.numel(), out.shape[-1]
            out.index_copy_(1, pad_slots, fill.to(out.dtype).expand(B, K, D))
    return out


class _TokensToWindows(torch.autograd.Function):
    """``B x L x D`` tokens -> ``B x P x D`` window slots (padded slots hold ``fill``); the
    backward is the inverse gather, not a scatter-add (every token sits in one slot)."""

    @staticmethod
    def forward(ctx, tokens, index, inverse, pad_slots, fill):
        ctx.save_for_backward(inverse, pad_slots)
        ctx.fill_dtype = None if fill is None else fill.dtype
        return _fill_pad_slots(tokens.index_select(1, index), pad_slots, fill)

    @staticmethod
    def backward(ctx, grad):
        inverse, pad_slots = ctx.saved_tensors
        grad_tokens = grad.index_select(1, inverse) if ctx.needs_input_grad[0] else None
        grad_fill = None
        if ctx.needs_input_grad[4]:
            grad_fill = grad.index_select(1, pad_slots).sum((0, 1)).to(ctx.fill_dtype)
        return grad_tokens, None, None, None, grad_fill


class _WindowsToTokens(torch.autograd.Function):
    """``B x P x D`` window slots -> ``B x L x D`` tokens (padded slots dropped)."""

    @staticmethod
    def forward(ctx, windows, index, inverse, pad_slots):
        ctx.save_for_backward(index, pad_slots)
        return windows.index_select(1, inverse)

    @staticmethod
    def backward(ctx, grad):
        index, pad_slots = ctx.saved_tensors
        return _fill_pad_slots(grad.index_select(1, index), pad_slots, None), None, None, None


def tokens_to_windows(tokens: torch.Tensor, gather: tuple,
                      fill: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Tokens (``B x H*W x D``) into the slots of :func:`window_token_index` ``gather``;
    plain tensor ops where no gradient is needed (inference, export)."""
    index, inverse, pad_slots = gather
    if torch.is_grad_enabled() and (tokens.requires_grad or (
            fill is not None and fill.requires_grad)):
        return _TokensToWindows.apply(tokens, index, inverse, pad_slots, fill)
    return _fill_pad_slots(tokens.index_select(1, index), pad_slots, fill)


def windows_to_tokens(windows: torch.Tensor, gather: tuple) -> torch.Tensor:
    """The inverse of :func:`tokens_to_windows` (``B x P x D`` -> ``B x H*W x D``)."""
    index, inverse, pad_slots = gather
    if torch.is_grad_enabled() and windows.requires_grad:
        return _WindowsToTokens.apply(windows, index, inverse, pad_slots)
    return windows.index_select(1, inverse)


class StageGeometry:
    """How a stage tiles its map: window size, shift, the SW-MSA mask and the token gathers of
    the W-MSA and SW-MSA blocks. Computed once per stage and input size and shared by all the
    stage's blocks."""

    def __init__(self, window_size: int, shift_size: int, mask: Optional[torch.Tensor],
                 gathers: Dict[int, tuple]):
        self.window_size = window_size
        self.shift_size = shift_size
        self.mask = mask  # nW x N x N or None
        self.gathers = gathers  # shift -> (index, inverse, pad_slots)


# ------------------------------------------------------------------------------------ modules
class PatchEmbed(nn.Module):
    """Patch partition + linear embedding: a ``p x p`` convolution with stride ``p`` (inputs
    padded bottom/right to a multiple of ``p``), then LayerNorm. Returns ``B x H x W x C``."""

    def __init__(self, in_channels: int = 3, embed_dim: int = 96, patch_size: int = 4,
                 norm: bool = True):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(pad_hw(x, self.patch_size))
        return self.norm(x.permute(0, 2, 3, 1))


class WindowMSA(nn.Module):
    """Window multi-head self-attention with a relative position bias.

    ``Attention(Q, K, V) = SoftMax(Q K^T / sqrt(d) + B) V`` (the seed's formula 10.2), with ``B``
    gathered from a ``(2M-1)^2 x heads`` table, plus the shift mask in SW-MSA blocks; both go to
    :func:`scaled_dot_product_attention` as one additive ``attn_mask``."""

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer('relative_position_index',
                             get_relative_position_index(window_size).view(-1), persistent=False)
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def relative_position_bias(self) -> torch.Tensor:
        """``heads x N x N`` bias for the pairs of one window."""
        N = self.window_size ** 2
        bias = self.relative_position_bias_table[self.relative_position_index]
        return bias.view(N, N, self.num_heads).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x``: ``B x nW x N x C`` windows; ``mask``: ``nW x N x N`` additive or None."""
        return self.proj_drop(self.proj(self.attend(self.qkv(x), mask)))

    def attend(self, qkv: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attention of ``B x nW x N x 3C`` projected windows -> ``B x nW x N x C`` (before the
        output projection, which is per token and so runs after the windows are undone)."""
        B, nW, N, C3 = qkv.shape
        C = C3 // 3
        # qkv with shape (3, B, nW, heads, N, head_dim)
        q, k, v = qkv.view(B, nW, N, 3, self.num_heads, self.head_dim).permute(
            3, 0, 1, 4, 2, 5).unbind(0)
        bias = self.relative_position_bias()  # heads, N, N
        mask = mask.unsqueeze(1) if mask is not None else None  # nW, 1, N, N
        if self.attn_drop > 0 and self.training:
            attn_mask = bias if mask is None else bias + mask
            x = scaled_dot_product_attention(q, k, v, attn_mask=attn_mask.to(q.dtype),
                                             scale=self.scale, dropout_p=self.attn_drop)
        else:  # no probability map is kept for backward
            x = biased_attention(q, k, v, bias, mask, scale=self.scale)
        return x.transpose(2, 3).reshape(B, nW, N, C)


class SwinBlock(nn.Module):
    """LN -> (S)W-MSA -> residual -> LN -> MLP -> residual, on a ``B x H x W x C`` map."""

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shifted: bool = False,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path: float = 0.0, act_layer=nn.GELU):
        super().__init__()
        self.shifted = shifted
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowMSA(dim, num_heads, window_size, qkv_bias, attn_drop_rate, drop_rate)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer)
        self.mlp_drop = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor, geo: StageGeometry) -> torch.Tensor:
        x = x + self.drop_path(self.window_attention(self.norm1(x), geo))
        return x + self.drop_path(self.mlp_drop(self.mlp(self.norm2(x))))

    def window_attention(self, x: torch.Tensor, geo: StageGeometry) -> torch.Tensor:
        """(S)W-MSA of the normed ``B x H x W x C`` map, output projection included.

        The qkv and output projections are per token, so they run on the H x W tokens only;
        pad -> cyclic shift -> window partition is one gather of the projected tokens, where
        padded slots get the projection of a zero token (its bias), as if norm1's output had
        been zero-padded; the reverse shift and the crop are the inverse gather. Each
        intermediate is dropped as soon as it is used (autograd keeps what backward needs), so
        inference holds one of them at a time."""
        B, H, W, C = x.shape
        shift = geo.shift_size if self.shifted else 0
        gather = geo.gathers[shift]
        attn = self.attn
        qkv = linear(x, attn.qkv.weight, attn.qkv.bias).view(B, H * W, 3 * C)
        del x
        windows = tokens_to_windows(qkv, gather, attn.qkv.bias)
        del qkv
        N = geo.window_size ** 2
        y = attn.attend(windows.view(B, -1, N, 3 * C), geo.mask if shift else None)
        del windows
        y = windows_to_tokens(y.view(B, -1, C), gather)
        return attn.proj_drop(attn.proj(y)).view(B, H, W, C)


class PatchMerging(nn.Module):
    """Concatenates each 2x2 neighbourhood (4C, in the authors' order (0,0), (1,0), (0,1),
    (1,1) as (row, col)), LayerNorm, then a linear map to 2C. Odd sizes are padded."""

    def __init__(self, dim: int, out_dim: Optional[int] = None):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = Linear(4 * dim, out_dim or 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_hw(x, 2, channels_last=True)
        B, H, W, C = x.shape
        # (B, H/2, row, W/2, col, C) -> (B, H/2, W/2, col, row, C): x0, x1, x2, x3 along 4C
        x = x.view(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).reshape(
            B, H // 2, W // 2, 4 * C)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """``depth`` blocks alternating W-MSA and SW-MSA, then (optionally) patch merging."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int,
                 drop_paths: Sequence[float], downsample: bool, with_cp: bool = False,
                 always_shift: bool = False, **block_kwargs):
        super().__init__()
        self.window_size = window_size
        self.always_shift = always_shift
        self.with_cp = with_cp
        self.blocks = nn.ModuleList([
            SwinBlock(dim, num_heads, window_size, shifted=i % 2 == 1,
                      drop_path=drop_paths[i], **block_kwargs) for i in range(depth)])
        self.downsample = PatchMerging(dim) if downsample else None
        self._geometry: Dict[tuple, tuple] = {}

    def geometry(self, H: int, W: int, device: torch.device) -> StageGeometry:
        M = self.window_size
        shift = M // 2
        if not self.always_shift and min(H, W) <= M:
            shift = 0  # the authors' rule: a map no larger than a window is not shifted
        key = (H, W, shift, str(device))
        cached = self._geometry.get(key)
        if cached is None:
            if len(self._geometry) > 16:
                self._geometry.clear()
            mask = None
            if shift and len(self.blocks) > 1:
                mask = shifted_window_mask(H + (-H % M), W + (-W % M), M, shift).to(device)
            shifts = {0, shift} if len(self.blocks) > 1 else {0}
            gathers = {s: tuple(t.to(device) for t in window_token_index(H, W, M, s))
                       for s in shifts}
            cached = self._geometry[key] = (mask, gathers)
        return StageGeometry(M, shift, *cached)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        geo = self.geometry(x.shape[1], x.shape[2], x.device)
        for block in self.blocks:
            if self.with_cp and self.training and x.requires_grad:
                x = cp.checkpoint(block, x, geo, use_reentrant=False)
            else:
                x = block(x, geo)
        return x, (self.downsample(x) if self.downsample is not None else None)


# --------------------------------------------------------------------------------- backbone
@MODELS.register_module()
class SwinTransformer(VisionBackbone):
    """Swin Transformer backbone: NCHW maps at strides 4, 8, 16, 32.

    Args:
        arch: a preset name (``tiny``, ``small``, ``base``, ``large``) or a dict with keys
            ``embed_dims``, ``depths``, ``num_heads``. Explicit arguments below override it.
        embed_dims, depths, num_heads: width of stage 1, blocks and heads per stage.
        window_size: M, the side of the local windows (7; 12 for the 384px checkpoints).
        patch_size: side of the patch partition (4).
        mlp_ratio, qkv_bias: MLP width ratio and bias of the qkv projection.
        drop_rate, attn_drop_rate: dropout after projections / on attention probabilities.
        drop_path_rate: stochastic depth, rising linearly over all blocks to this value.
        out_indices: stages whose (LayerNorm-ed) output is returned.
        frozen_stages: -1 none; 0 the patch embedding; k also the first k stages (with their
            patch merging and output norms), in eval mode and without gradient.
        always_shift: ``True`` shifts every SW-MSA block, even where the map is no larger than
            a window (mmdet, mmseg, mmpretrain and transformers ``SwinBackbone``); ``False``
            follows the authors' rule (also timm's and transformers ``SwinModel``'s): a stage
            whose map has ``min(H, W) <= M`` does not shift. ``None`` (default): the rule of
            the codebase the loaded checkpoint comes from, the authors' rule when none is
            loaded; the log says which rule was taken. At 224x224 the two differ in stage 4.
        with_cp: activation checkpointing of each block (non-reentrant, DDP-safe).
        norm_eval: keep BatchNorm layers (none in Swin itself) in eval mode while training.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH)`` loads the authors', timm,
            transformers or mmdet/mmseg/mmpretrain weights (see :mod:`mmvtx.utils.checkpoint`).
    """
    arch_zoo = {
        'tiny': dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
        'small': dict(embed_dims=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
        'base': dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
        'large': dict(embed_dims=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
    }
    arch_aliases = {'t': 'tiny', 's': 'small', 'b': 'base', 'l': 'large'}

    def __init__(self, arch: Union[str, dict] = 'tiny', embed_dims: Optional[int] = None,
                 depths: Optional[Sequence[int]] = None,
                 num_heads: Optional[Sequence[int]] = None, in_channels: int = 3,
                 window_size: int = 7, patch_size: int = 4, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1, out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1, always_shift: Optional[bool] = None,
                 with_cp: bool = False,
                 norm_eval: bool = False, init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        cfg = self.resolve_arch(arch)
        for key, value in dict(embed_dims=embed_dims, depths=depths, num_heads=num_heads).items():
            if value is not None:
                cfg[key] = value
        depths, num_heads = tuple(cfg['depths']), tuple(cfg['num_heads'])
        if len(depths) != len(num_heads):
            raise ValueError(f'depths {depths} and num_heads {num_heads} differ in length')
        num_stages = len(depths)
        out_indices = self.check_out_indices(out_indices, num_stages)
        dims = [cfg['embed_dims'] * 2 ** i for i in range(num_stages)]
        for d, h in zip(dims, num_heads):
            if d % h:
                raise ValueError(f'stage width {d} is not divisible by its {h} heads')
        if frozen_stages > num_stages:
            raise ValueError(f'frozen_stages={frozen_stages} but the model has {num_stages} stages')

        self.arch_settings = dict(embed_dims=cfg['embed_dims'], depths=depths, num_heads=num_heads)
        self.embed_dims = cfg['embed_dims']
        self.num_features = dims
        self.window_size = window_size
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.always_shift = always_shift  # None: follow the loaded checkpoint

        self.patch_embed = PatchEmbed(in_channels, dims[0], patch_size)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = drop_path_rates(drop_path_rate, depths)
        self.stages = nn.ModuleList([
            SwinStage(dims[i], depths[i], num_heads[i], window_size, dpr[i],
                      downsample=i < num_stages - 1, with_cp=with_cp,
                      always_shift=bool(always_shift),
                      mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_rate=drop_rate,
                      attn_drop_rate=attn_drop_rate)
            for i in range(num_stages)])
        for i in out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(dims[i]))
        self._freeze_stages()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        self.check_input(x)
        x = self.pos_drop(self.patch_embed(x))
        outs = []
        for i, stage in enumerate(self.stages):
            feat, x = stage(x)
            if i in self.out_indices:
                outs.append(getattr(self, f'norm{i}')(feat).permute(0, 3, 1, 2).contiguous())
            if x is None or i >= self.out_indices[-1]:
                break
        return tuple(outs)

    def _frozen_modules(self) -> list:
        frozen = [self.patch_embed]
        for i in range(self.frozen_stages):
            frozen.append(self.stages[i])
            if i in self.out_indices:
                frozen.append(getattr(self, f'norm{i}'))
        return frozen

    # ------------------------------------------------------------------------ weights
    def _default_init(self):
        init_transformer_weights(self)
        for stage in self.stages:
            for block in stage.blocks:
                trunc_normal_(block.attn.relative_position_bias_table, std=0.02)

    @property
    def shifts_every_block(self) -> bool:
        """The shift rule in use: True = every SW-MSA block shifts (mmdet's rule)."""
        return self.stages[0].always_shift

    def set_shift_rule(self, always_shift: bool):
        for stage in self.stages:
            stage.always_shift = bool(always_shift)
            stage._geometry.clear()

    def convert_state_dict(self, state_dict: dict) -> ConvertedCheckpoint:
        converted = convert_swin(state_dict, self)
        source = converted.source
        if source == 'mmdet':  # mmdet, mmseg and mmpretrain share one layout and one rule
            source = 'mmdet/mmseg/mmpretrain'
        elif source == 'transformers':
            backbone = any(k.startswith('hidden_states_norms.') for k in state_dict)
            source = 'transformers SwinBackbone' if backbone else 'transformers SwinModel'
        always = source in ALWAYS_SHIFTING_SOURCES
        if self.always_shift is None:
            self.set_shift_rule(always)
            if source == 'mmvtx':
                rule = ('the authors\' rule (an mmvtx checkpoint does not record the rule it '
                        'was trained with; set always_shift=True if that was mmdet\'s)')
            else:
                rule = (f'{source}\'s rule: ' + ('every SW-MSA block shifts' if always else
                        'no shift where a map is no larger than a window'))
            log_once(f'SwinTransformer: {source} checkpoint, so {rule} (always_shift=None; '
                     'set always_shift to choose)')
        elif bool(self.always_shift) != always and source != 'mmvtx':
            log_once(f'SwinTransformer: always_shift={self.always_shift} set explicitly, '
                     f'unlike the {source} checkpoint\'s codebase', 'WARNING')
        return converted


# ------------------------------------------------------------------------- checkpoint formats
def _unfold_to_official(w: torch.Tensor) -> torch.Tensor:
    """mmdet/mmseg/mmpretrain merge 2x2 patches with ``nn.Unfold`` (channel-major, positions
    row-major); the authors concatenate x0..x3 ((0,0), (1,0), (0,1), (1,1)). Reorders the last
    dimension (4C) of a PatchMerging weight from the first layout to the second."""
    C = w.shape[-1] // 4
    w = w.reshape(*w.shape[:-1], C, 4).transpose(-1, -2)  # ..., 4 (row-major), C
    return w[..., [0, 2, 1, 3], :].reshape(*w.shape[:-2], 4 * C)


def detect_swin_format(sd: dict) -> str:
    keys = set(sd)
    if any(k.startswith(('embeddings.patch_embeddings', 'swin.embeddings')) for k in keys):
        return 'transformers'
    if any('.attn.w_msa.' in k for k in keys):
        return 'mmdet'
    if any(k.startswith('stages.') and '.attn.qkv.' in k for k in keys):
        return 'mmvtx'
    if any(k.startswith('layers.') for k in keys):
        return 'timm' if 'layers.0.downsample.reduction.weight' not in keys and any(
            '.downsample.' in k for k in keys) else 'official'
    raise CheckpointMismatchError(
        'not a Swin Transformer checkpoint in a known format (the authors\' release, timm, '
        'transformers SwinModel/SwinBackbone, mmdet/mmseg/mmpretrain or mmvtx); first keys: '
        + ', '.join(sorted(keys)[:8]))


# transformers SwinModel/SwinBackbone names, as on the hub (4.x) and as in transformers 5.x
HF_SWIN_RULES = (
    ('embeddings.patch_embeddings.projection', 'patch_embed.proj'),
    ('embeddings.norm', 'patch_embed.norm'),
    ('encoder.layers.', 'stages.'),
    ('layernorm_before', 'norm1'), ('layernorm_after', 'norm2'),
    ('attention.self.relative_position_bias_table', 'attn.relative_position_bias_table'),
    ('attention.relative_position_bias.relative_position_bias_table',
     'attn.relative_position_bias_table'),
    ('attention.output.dense', 'attn.proj'), ('attention.o_proj', 'attn.proj'),
    ('intermediate.dense', 'mlp.fc1'), ('output.dense', 'mlp.fc2'),
)


def convert_swin(sd: dict, model: 'SwinTransformer') -> ConvertedCheckpoint:
    """Any public Swin checkpoint -> mmvtx names (window size resized to the model's)."""
    fmt = detect_swin_format(sd)
    last = len(model.stages) - 1
    out = {}
    if fmt == 'transformers':
        sd = {k[len('swin.'):] if k.startswith('swin.') else k: v for k, v in sd.items()
              if not k.startswith(('classifier.', 'pooler.'))}
        sd = rename_keys(sd, HF_SWIN_RULES)
        sd = merge_qkv(sd, ('.attention.self.query.', '.attention.self.key.',
                            '.attention.self.value.'), '.attn.qkv.')
        sd = merge_qkv(sd, ('.attention.q_proj.', '.attention.k_proj.', '.attention.v_proj.'),
                       '.attn.qkv.')
        # SwinBackbone has per-stage output norms and, unused, SwinModel's final one
        has_stage_norms = any(k.startswith('hidden_states_norms.') for k in sd)
        for k, v in sd.items():
            if k.endswith(('relative_position_index', 'attn_mask')):
                continue
            if k.startswith('layernorm.'):
                if has_stage_norms:
                    continue
                k = k.replace('layernorm.', f'norm{last}.')
            elif k.startswith('hidden_states_norms.stage'):
                stage, rest = k[len('hidden_states_norms.stage'):].split('.', 1)
                k = f'norm{int(stage) - 1}.{rest}'
            out[k] = v
    elif fmt == 'mmdet':
        for k, v in sd.items():
            if k.endswith(('relative_position_index', 'attn_mask')):
                continue
            k = (k.replace('patch_embed.projection', 'patch_embed.proj')
                  .replace('attn.w_msa.', 'attn.')
                  .replace('ffn.layers.0.0', 'mlp.fc1').replace('ffn.layers.1', 'mlp.fc2'))
            if '.downsample.' in k:
                v = _unfold_to_official(v)
            out[k] = v
    elif fmt in ('official', 'timm'):
        for k, v in sd.items():
            if k.startswith('head') or k.endswith(('relative_position_index', 'attn_mask')):
                continue
            if fmt == 'timm' and '.downsample.' in k:  # timm merges at the start of a stage
                i, rest = k[len('layers.'):].split('.', 1)
                k = f'layers.{int(i) - 1}.{rest}'
            k = k.replace('layers.', 'stages.')
            if k.startswith('norm.'):
                k = k.replace('norm.', f'norm{last}.')
            out[k] = v
    else:
        out = {k: v for k, v in sd.items() if not k.endswith('relative_position_index')}
    if last not in model.out_indices and fmt != 'mmvtx':
        # the release's final norm belongs to a last stage this model does not return
        out = {k: v for k, v in out.items() if not k.startswith(f'norm{last}.')}
    for k, v in out.items():
        if k.endswith('relative_position_bias_table'):
            out[k] = resize_rel_pos_bias_table(v, model.window_size)
    may_miss = [] if fmt in ('mmdet', 'mmvtx') else [f'norm{i}' for i in model.out_indices]
    return ConvertedCheckpoint(out, fmt, may_miss)
