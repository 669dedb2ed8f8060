"""Swin Transformer (Liu et al., 2021) as a multi-scale backbone.

Read top to bottom like the paper: patch partition + linear embedding (:class:`PatchEmbed`) ->
stages of :class:`SwinBlock` that alternate W-MSA and SW-MSA (:class:`WindowMSA`: cyclic shift by
M/2, attention mask, reverse cyclic shift) with a relative position bias
(:func:`get_relative_position_index`) -> :class:`PatchMerging` between stages -> a LayerNorm on
each output, returned as NCHW maps at strides 4, 8, 16, 32.

Tensors stay channels-last (``B x H x W x C``) inside the network; the window geometry
(padding, shift, mask; :mod:`..layers.window`) is worked out once per stage and input size, not
once per block.
"""
import numbers
import re
from typing import Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log
from torch import nn

from mmvtx.registry import MODELS
from mmvtx.utils.checkpoint import (ConvertedCheckpoint, KeyRule, detect_format, merge_qkv,
                                    rename_keys)
from mmvtx.utils.logging import log_once
from ..layers import DropPath, Linear, Mlp, PatchEmbed, attention, drop_path_rates, pad_hw
from ..layers.init import init_transformer_weights, trunc_normal_
from ..layers.norm import LayerNorm
from ..layers.pos_embed import resize_rel_pos_bias_table
from ..layers.window import (WindowGeometry, WindowGeometryCache, tokens_to_windows,
                             windows_to_tokens)
from .base import VisionBackbone, forward_block, stage_depths

# Codebases whose Swin shifts every SW-MSA block, even where a map is no larger than a window
# (the authors' classification code, timm and transformers SwinModel skip the shift there). The
# authors' detection and segmentation releases (Swin-Transformer-Object-Detection /
# -Semantic-Segmentation, mmdet 2.x / mmseg 0.x) keep the authors' names but shift every block
# (their block pads the map and has no size test); their backbones carry an output norm per
# level (``norm0``..``norm3``), the classification releases one final ``norm``.
AUTHORS_DENSE = "the authors' Swin-Transformer-Object-Detection/Semantic-Segmentation"
# transformers' MaskFormer (v1) keeps its own copy of Swin (MaskFormerSwinModel/-Backbone, also
# with a 'swin' config): it pads and shifts at every size, as mmdet does
MASKFORMER_SWIN = 'transformers MaskFormerSwin'
ALWAYS_SHIFTING_SOURCES = ('mmdet/mmseg/mmpretrain', 'transformers SwinBackbone', AUTHORS_DENSE,
                           MASKFORMER_SWIN)
# values of the ``shift_rule`` setting: the authors' (no shift where a stage's map is no larger
# than a window) and "every SW-MSA block shifts"
SHIFT_RULES = ('authors', 'always')


# --------------------------------------------------------------------- relative position bias
def get_relative_position_index(window_size: int) -> torch.Tensor:
    """Index into the ``(2M-1)^2`` bias table for every pair of tokens of an ``M x M`` window.

    As in the authors' code: relative (dy, dx) of each pair, shifted to be non-negative, then
    ``(dy + M - 1) * (2M - 1) + (dx + M - 1)``. Returns an ``M^2 x M^2`` long tensor."""
    coords_h = torch.arange(window_size)
    coords_w = torch.arange(window_size)
    coords = torch.stack(torch.meshgrid([coords_h, coords_w], indexing='ij'))  # 2, M, M
    coords_flatten = torch.flatten(coords, 1)  # 2, N
    relative_coords = coords_flatten[:, :, None] - coords_flatten[:, None, :]  # 2, N, N
    y_coords = relative_coords[0] + window_size - 1
    x_coords = relative_coords[1] + window_size - 1
    return y_coords * (2 * window_size - 1) + x_coords


# ------------------------------------------------------------------------------------ modules
class WindowMSA(nn.Module):
    """Window multi-head self-attention with a relative position bias: W-MSA, or SW-MSA with
    ``shifted=True``.

    Inside each ``M x M`` window, ``Attention(Q, K, V) = SoftMax(Q K^T / sqrt(d) + B) V`` (the
    paper's formula (4)), ``B`` gathered from a ``(2M-1)^2 x heads`` table by
    :func:`get_relative_position_index`. SW-MSA first rolls the map by ``-M/2`` (the cyclic
    shift) so that the windows straddle the previous layer's window borders, adds the mask
    that keeps tokens brought together from opposite borders apart (-100 across the nine
    regions, :func:`..layers.window.shifted_window_mask`), and rolls the result back (the
    reverse shift). A map that is not a multiple of ``M`` is zero-padded first and cropped
    after.

    ``forward`` takes the normed ``B x H x W x C`` map: the qkv projection runs on its H x W
    tokens (it is per token); pad -> cyclic shift -> window partition is then one gather of the
    projected tokens (padded slots get the projection of a zero token: the qkv bias), the
    attention runs per window, and the inverse gather is the reverse shift and the crop,
    before the output projection (per token again). Same result as padding, rolling and
    partitioning the input, without projecting padded tokens or copying the map three times.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shifted: bool = False,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 qk_scale: Optional[float] = None):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.shifted = shifted
        self.head_dim = dim // num_heads
        # the paper's 1/sqrt(d); the authors' code (and mmdet's/mmseg's) take another qk_scale
        self.scale = qk_scale or self.head_dim ** -0.5
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

    def forward(self, x: torch.Tensor, geo: WindowGeometry) -> torch.Tensor:
        """``x``: the normed ``B x H x W x C`` map; ``geo``: its stage's window geometry.
        Returns ``B x H x W x C`` (output projection included)."""
        B, H, W, C = x.shape
        shift = geo.shift_size if self.shifted else 0
        gather = geo.gathers[shift]
        qkv = self.qkv(x).view(B, H * W, 3 * C)
        windows = tokens_to_windows(qkv, gather, self.qkv.bias)  # pad, shift, partition
        del qkv  # each intermediate goes once used: inference holds one at a time
        N = geo.tokens_per_window
        y = self.attend(windows.view(B, windows.shape[1] // N, N, 3 * C),
                        geo.mask if shift else None)
        del windows
        y = windows_to_tokens(y.flatten(1, 2), gather)  # reverse shift, crop
        return self.proj_drop(self.proj(y)).view(B, H, W, C)

    def attend(self, qkv: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attention within each window: ``B x nW x N x 3C`` projected windows (``mask``:
        ``nW x N x N`` additive or None) -> ``B x nW x N x C``."""
        B, nW, N, C3 = qkv.shape
        # qkv with shape (3, B, nW, heads, N, head_dim)
        q, k, v = qkv.view(B, nW, N, 3, self.num_heads, self.head_dim).permute(
            3, 0, 1, 4, 2, 5).unbind(0)
        mask = mask.unsqueeze(1) if mask is not None else None  # nW, 1, N, N
        x = attention(q, k, v, bias=self.relative_position_bias(), mask=mask, scale=self.scale,
                      dropout_p=self.attn_drop if self.training else 0.0)
        return x.transpose(2, 3).reshape(B, nW, N, C3 // 3)


class SwinBlock(nn.Module):
    """LN -> (S)W-MSA -> residual -> LN -> MLP -> residual, on a ``B x H x W x C`` map."""

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shifted: bool = False,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path: float = 0.0, act: str = 'gelu',
                 qk_scale: Optional[float] = None):
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = WindowMSA(dim, num_heads, window_size, shifted, qkv_bias, attn_drop_rate,
                              drop_rate, qk_scale)
        self.drop_path = DropPath(drop_path)
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act)
        self.mlp_drop = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor, geo: WindowGeometry) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), geo))
        return x + self.drop_path(self.mlp_drop(self.mlp(self.norm2(x))))


class PatchMerging(nn.Module):
    """Concatenates each 2x2 neighbourhood (4C, in the authors' order (0,0), (1,0), (0,1),
    (1,1) as (row, col)), LayerNorm, then a linear map to 2C. Odd sizes are padded."""

    def __init__(self, dim: int, out_dim: Optional[int] = None, norm: bool = True):
        super().__init__()
        self.norm = LayerNorm(4 * dim) if norm else nn.Identity()
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
                 always_shift: bool = False, patch_norm: bool = True, **block_kwargs):
        super().__init__()
        self.window_size = window_size
        self.always_shift = always_shift
        self.with_cp = with_cp
        self.blocks = nn.ModuleList([
            SwinBlock(dim, num_heads, window_size, shifted=i % 2 == 1,
                      drop_path=drop_paths[i], **block_kwargs) for i in range(depth)])
        self.downsample = PatchMerging(dim, norm=patch_norm) if downsample else None
        self.geometry_cache = WindowGeometryCache()

    def geometry(self, H: int, W: int, device: torch.device) -> WindowGeometry:
        M = self.window_size
        # the authors' rule: a map no larger than a window (min(H, W) <= M) is not shifted;
        # applied by the cache (inside its custom ops while compiling: no branch on the size)
        return self.geometry_cache.get(H, W, M, M // 2, device,
                                       with_shifted=len(self.blocks) > 1,
                                       no_shift_within=0 if self.always_shift else M)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        geo = self.geometry(x.shape[1], x.shape[2], x.device)
        for block in self.blocks:
            x = forward_block(block, x, geo, with_cp=self.with_cp)
        return x, (self.downsample(x) if self.downsample is not None else None)


# --------------------------------------------------------------------------------- backbone
# Keyword arguments of mmdet's and mmseg's SwinTransformer that mmvtx's takes only through
# ``**kwargs``: a config written for theirs (mmdet::swin, mask2former, rtmdet, v3det,
# grounding_dino; mmseg::swin, knet, maskformer, mask2former) builds with only its ``type``
# swapped. ``qk_scale`` is also the authors' argument; ``patch_norm=False`` drops the LayerNorm
# of the patch embedding and of every patch merging, as theirs (the authors' keeps the merging's).
MMDET_SWIN_KWARGS = ('pretrain_img_size', 'strides', 'qk_scale', 'patch_norm',
                     'use_abs_pos_embed', 'act_cfg', 'norm_cfg', 'convert_weights')


def mmdet_swin_kwargs(kwargs: dict, patch_size: int, num_stages: int) -> dict:
    """The network asked for by mmdet's/mmseg's Swin keywords in ``kwargs`` (popped) as mmvtx's
    settings ``qk_scale`` and ``patch_norm``. A value that asks for a network mmvtx does not
    build (an absolute position embedding, overlapping patches, another activation or norm) is
    refused naming it; ``pretrain_img_size`` (read by mmdet only for the absolute position
    embedding) and ``convert_weights`` (the checkpoint's layout is detected from its keys) are
    checked and have no effect."""
    given = {k: kwargs.pop(k) for k in MMDET_SWIN_KWARGS if k in kwargs}
    name = 'SwinTransformer'

    def refuse(key: str, why: str):
        raise ValueError(f"{name}: {key}={given[key]!r} (a keyword of mmdet's/mmseg's Swin) "
                         f'{why}')

    qk_scale = given.get('qk_scale')
    if qk_scale is not None and (isinstance(qk_scale, bool) or not isinstance(
            qk_scale, numbers.Real) or not 0 <= qk_scale < float('inf')):
        refuse('qk_scale', "must be None (the paper's 1/sqrt(head_dim)) or a number > 0")
    patch_norm = given.get('patch_norm', True)
    SwinTransformer.check_bools(patch_norm=patch_norm,
                                convert_weights=given.get('convert_weights', False))
    if 'pretrain_img_size' in given:
        SwinTransformer.check_size('pretrain_img_size', given['pretrain_img_size'])
    if 'strides' in given:
        want = (patch_size,) + (2,) * (num_stages - 1)
        if not (isinstance(given['strides'], Sequence) and tuple(given['strides']) == want):
            refuse('strides', f'must be {want}: mmvtx\'s Swin embeds non-overlapping patches '
                   f'(strides[0] = patch_size = {patch_size}) and merges 2x2 neighbourhoods '
                   'between stages (2)')
    if given.get('use_abs_pos_embed', False) is not False:
        refuse('use_abs_pos_embed', 'asks for an absolute position embedding (the paper\'s '
               '"abs. pos." ablation), which mmvtx\'s Swin does not build; no released Swin '
               'uses it: use_abs_pos_embed=False')
    for key, kind, allowed in (('act_cfg', 'GELU', ()), ('norm_cfg', 'LN', (('eps', 1e-5),
                                                                             ('requires_grad',
                                                                              True)))):
        cfg = given.get(key)
        if cfg is not None and not (isinstance(cfg, dict) and cfg.get('type') == kind and all(
                k == 'type' or (k, v) in allowed for k, v in cfg.items())):
            extra = ''.join(f', {k}={v!r}' for k, v in allowed)
            refuse(key, f"asks for a network mmvtx's Swin does not build; it takes "
                   f"dict(type='{kind}'{extra}) (the paper's)")
    return dict(given=sorted(given), qk_scale=qk_scale or None, patch_norm=bool(patch_norm))


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
            a window (mmdet, mmseg, mmpretrain, transformers ``SwinBackbone`` and the authors'
            detection/segmentation releases, whose backbones have ``norm0``..``norm3``); ``False``
            follows the authors' rule (also timm's and transformers ``SwinModel``'s): a stage
            whose map has ``min(H, W) <= M`` does not shift. ``None`` (default): the rule of
            the codebase the loaded checkpoint comes from, the authors' rule when none is
            loaded; the log says which rule was taken. At 224x224 the two differ in stage 4.
            The rule in use is kept in the ``shift_rule`` buffer, so the run's own checkpoints
            bring it back (``tools/test.py``, ``--resume``).
        with_cp: activation checkpointing of each block (non-reentrant, DDP-safe).
        norm_eval: keep BatchNorm layers (none in Swin itself) in eval mode while training.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH)`` loads the authors', timm,
            transformers or mmdet/mmseg/mmpretrain weights (see :mod:`mmvtx.utils.checkpoint`).
        **kwargs: mmdet's and mmseg's own Swin keywords (:data:`MMDET_SWIN_KWARGS`), so that
            their configs build this class with only ``type`` changed: ``qk_scale`` and
            ``patch_norm`` build their network, ``strides``, ``act_cfg``, ``norm_cfg`` and
            ``use_abs_pos_embed`` are taken at the values of the network built here (others are
            refused by value), ``pretrain_img_size`` and ``convert_weights`` have no effect.
            Any of them given with ``always_shift=None`` shifts every SW-MSA block, as theirs.
            An unknown keyword is refused naming its nearest argument.
    """
    family = 'SwinTransformer'
    hf_model_types = ('swin', 'maskformer-swin', 'donut-swin')
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
                 norm_eval: bool = False, init_cfg: Optional[dict] = None,
                 pretrained: Optional[str] = None, **kwargs):
        super().__init__(init_cfg=self.pretrained_init_cfg(pretrained, init_cfg))
        cfg = self.resolve_arch(arch, embed_dims=embed_dims, depths=depths, num_heads=num_heads)
        depths = self.check_ints('depths', cfg['depths'])
        num_heads = self.check_ints('num_heads', cfg['num_heads'])
        if len(depths) != len(num_heads):
            raise ValueError(f'SwinTransformer: depths {depths} and num_heads {num_heads} differ '
                             'in length (one entry per stage)')
        num_stages = len(depths)
        out_indices = self.check_out_indices(out_indices, num_stages)
        dims = [self.check_int('embed_dims', cfg['embed_dims']) * 2 ** i
                for i in range(num_stages)]
        self.check_heads(dims, num_heads)
        self.check_frozen_stages(frozen_stages, num_stages)
        for name, value in dict(in_channels=in_channels, window_size=window_size,
                                patch_size=patch_size).items():
            self.check_int(name, value)
        self.check_positive('mlp_ratio', mlp_ratio)
        self.check_rates(drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                         drop_path_rate=drop_path_rate)
        self.check_bools(qkv_bias=qkv_bias, with_cp=with_cp, norm_eval=norm_eval)
        self.check_hidden(dims, mlp_ratio)
        if always_shift not in (None, True, False):
            raise ValueError(f'SwinTransformer: always_shift={always_shift!r} must be None, True '
                             'or False')
        twin = mmdet_swin_kwargs(kwargs, patch_size, num_stages)
        self.refuse_unknown_arguments(kwargs, also=MMDET_SWIN_KWARGS)
        self.shift_rule_origin = 'set explicitly'
        if twin['given'] and always_shift is None:
            # mmdet's and mmseg's Swin shift every SW-MSA block: their config, their network
            always_shift = True
            self.shift_rule_origin = "as in mmdet's/mmseg's Swin, whose keywords were given"
            print_log("SwinTransformer: a config for mmdet's/mmseg's Swin ("
                      f"{', '.join(twin['given'])} given): every SW-MSA block shifts as in "
                      "theirs (always_shift=True; always_shift=False for the authors' rule)",
                      logger='current')

        self.arch_settings = dict(embed_dims=cfg['embed_dims'], depths=depths, num_heads=num_heads)
        self.embed_dims = cfg['embed_dims']
        self.num_features = dims
        self.window_size = window_size
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.always_shift = always_shift  # None: follow the loaded checkpoint

        self.patch_embed = PatchEmbed(in_channels, dims[0], patch_size, norm=twin['patch_norm'])
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = drop_path_rates(drop_path_rate, depths)
        self.stages = nn.ModuleList([
            SwinStage(dims[i], depths[i], num_heads[i], window_size, dpr[i],
                      downsample=i < num_stages - 1, with_cp=with_cp,
                      always_shift=bool(always_shift), patch_norm=twin['patch_norm'],
                      mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_rate=drop_rate,
                      attn_drop_rate=attn_drop_rate, qk_scale=twin['qk_scale'])
            for i in range(num_stages)])
        for i in out_indices:
            self.add_module(f'norm{i}', LayerNorm(dims[i]))
        self._register_setting('shift_rule', SHIFT_RULES, SHIFT_RULES[bool(always_shift)],
                               explicit=always_shift is not None)
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

    def _unreached_modules(self) -> list:
        last = self.out_indices[-1]  # the forward stops there: its downsampling is not read
        return [m for m in [self.stages[last].downsample, *self.stages[last + 1:]]
                if m is not None]

    def output_modules(self, read) -> list:
        return [getattr(self, f'norm{i}') for p, i in enumerate(self.out_indices)
                if p not in read]

    def _frozen_modules(self) -> list:
        frozen = [self.patch_embed, self.pos_drop]
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
        self.set_setting('shift_rule', SHIFT_RULES[bool(always_shift)])

    def _apply_setting(self, name: str, value: str):
        for stage in self.stages:
            stage.always_shift = value == 'always'
            stage.geometry_cache.clear()

    def _applied_setting(self, name: str) -> str:
        return SHIFT_RULES[self.shifts_every_block]

    def checkpoint_architecture(self, sd: dict) -> dict:
        depths = stage_depths(sd)
        heads = tuple(sd[f'stages.{i}.blocks.0.attn.relative_position_bias_table'].shape[1]
                      for i in range(len(depths)))
        return dict(embed_dims=sd['patch_embed.proj.weight'].shape[0], depths=depths,
                    num_heads=heads)

    def convert_layout(self, state_dict: dict,
                       source_config: Optional[dict] = None) -> ConvertedCheckpoint:
        converted = convert_swin(state_dict, self)
        source = converted.source
        if source == 'mmdet':  # mmdet, mmseg and mmpretrain share one layout and one rule
            source = 'mmdet/mmseg/mmpretrain'
        elif source == 'transformers-maskformer' or (source == 'transformers' and (
                source_config or {}).get('model_type') == 'maskformer-swin'):
            # its backbone's per-stage norms are numbered (hidden_states_norms.0); its
            # MaskFormerSwinModel alone is named as SwinModel, told by its config.json
            source = MASKFORMER_SWIN
        elif source == 'transformers':
            backbone = any(k.startswith('hidden_states_norms.') for k in state_dict)
            source = 'transformers SwinBackbone' if backbone else 'transformers SwinModel'
        elif source == 'official' and any(re.match(r'norm\d+\.', k) for k in state_dict):
            source = AUTHORS_DENSE
        recorded = self.recorded_setting('shift_rule', converted)
        if recorded is not None:
            always = recorded == 'always'
            origin = 'as recorded in the checkpoint'
        else:
            always = source in ALWAYS_SHIFTING_SOURCES
            origin = (f'{source}\'s rule' if source != 'mmvtx' else
                      'the authors\' rule (this mmvtx checkpoint does not record its rule; set '
                      'always_shift=True if it was trained with mmdet\'s)')
        rule = 'every SW-MSA block shifts' if always else \
            'no shift where a map is no larger than a window'
        if self.always_shift is None:
            log_once(f'SwinTransformer: {source} checkpoint: {rule}, {origin} (always_shift='
                     'None; set always_shift to choose)')
        else:
            if bool(self.always_shift) != always and (recorded is not None or source != 'mmvtx'):
                log_once(f'SwinTransformer: always_shift={self.always_shift} '
                         f'{self.shift_rule_origin}, unlike the {source} checkpoint ({rule}, '
                         f'{origin})', 'WARNING')
            always = bool(self.always_shift)
        # the rule travels in the converted weights; loading them applies it
        converted.state_dict['shift_rule'] = self.setting_record('shift_rule', SHIFT_RULES[always])
        return converted


# ------------------------------------------------------------------------- checkpoint formats
def _unfold_to_official(w: torch.Tensor) -> torch.Tensor:
    """mmdet/mmseg/mmpretrain merge 2x2 patches with ``nn.Unfold`` (channel-major, positions
    row-major); the authors concatenate x0..x3 ((0,0), (1,0), (0,1), (1,1)). Reorders the last
    dimension (4C) of a PatchMerging weight from the first layout to the second."""
    C = w.shape[-1] // 4
    w = w.reshape(*w.shape[:-1], C, 4).transpose(-1, -2)  # ..., 4 (row-major), C
    return w[..., [0, 2, 1, 3], :].reshape(*w.shape[:-2], 4 * C)


SWIN_FORMATS = (
    # transformers' MaskFormerSwinBackbone: MaskFormerSwinModel under model., the output norms
    # numbered from 0 (SwinBackbone's are hidden_states_norms.stage1..4)
    KeyRule('transformers-maskformer', prefixes=('hidden_states_norms.0.',)),
    KeyRule('transformers', prefixes=('embeddings.patch_embeddings', 'swin.embeddings')),
    KeyRule('mmdet', contains=('.attn.w_msa.',)),
    KeyRule('mmvtx', prefixes=('stages.',), contains=('.attn.qkv.',)),
    # the authors merge patches at the end of a stage, timm at the start of the next one
    KeyRule('official', prefixes=('layers.0.downsample.reduction.weight',)),
    KeyRule('timm', prefixes=('layers.',), contains=('.downsample.',)),
    KeyRule('official', prefixes=('layers.',)),
)


def detect_swin_format(sd: dict) -> str:
    return detect_format(sd, SWIN_FORMATS, 'Swin Transformer',
                         "the authors' release, timm, transformers SwinModel/SwinBackbone/"
                         'MaskFormerSwin, mmdet/mmseg/mmpretrain or mmvtx')


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


# mmdet/mmseg/mmpretrain SwinTransformer names
MMDET_SWIN_RULES = (
    ('patch_embed.projection', 'patch_embed.proj'), ('attn.w_msa.', 'attn.'),
    ('ffn.layers.0.0', 'mlp.fc1'), ('ffn.layers.1', 'mlp.fc2'),
)


def convert_swin(sd: dict, model: 'SwinTransformer') -> ConvertedCheckpoint:
    """Any public Swin checkpoint -> mmvtx names (window size resized to the model's)."""
    if any(k.startswith('encoder.patch_embed.') for k in sd):
        # the SimMIM authors' pre-training: the authors' Swin under encoder. with its mask
        # token, beside the pixel decoder (decoder.)
        sd = {k[len('encoder.'):]: v for k, v in sd.items() if k.startswith('encoder.')}
    # SimMIM's mask token (the authors', mmpretrain's SimMIMSwinTransformer): no backbone's
    sd = {k: v for k, v in sd.items() if k != 'mask_token'}
    fmt = detect_swin_format(sd)
    last = len(model.stages) - 1
    out = {}
    if fmt == 'transformers-maskformer':  # as SwinBackbone names them
        sd = {re.sub(r'^hidden_states_norms\.(\d+)\.',
                     lambda m: f'hidden_states_norms.stage{int(m.group(1)) + 1}.',
                     k[len('model.'):] if k.startswith('model.') else k): v
              for k, v in sd.items()}
    if fmt in ('transformers', 'transformers-maskformer'):
        # without the heads: classification's, SimMIM's pixel decoder and its mask token
        sd = {k[len('swin.'):] if k.startswith('swin.') else k: v for k, v in sd.items()
              if not k.startswith(('classifier.', 'pooler.', 'decoder.'))}
        sd.pop('embeddings.mask_token', None)
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
        for k, v in rename_keys(sd, MMDET_SWIN_RULES).items():
            if k.endswith(('relative_position_index', 'attn_mask')):
                continue
            if '.downsample.' in k:
                v = _unfold_to_official(v)
            if k.startswith('norm.'):  # mmseg's pretrain files (swin2mmseg): the final norm
                k = k.replace('norm.', f'norm{last}.')
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
    if fmt != 'mmvtx':
        # output norms of levels this model does not return (a release's final norm, a
        # detector's norm0..2) are not loaded; those it returns but the file lacks (a
        # classifier's norm3 only, as mmpretrain saves it) stay at their init
        unused = tuple(f'norm{i}.' for i in range(last + 1) if i not in model.out_indices)
        out = {k: v for k, v in out.items() if not k.startswith(unused)}
    resized = {}
    for k, v in out.items():
        if k.endswith('relative_position_bias_table'):
            # resampled in float32 and kept so (loading casts to the model's dtype): a half
            # precision file's table rounded back to its dtype would be off by that rounding
            table = resize_rel_pos_bias_table(v.float(), model.window_size)
            if table.shape != v.shape:
                out[k], resized[k] = table, v
    may_miss = [] if fmt == 'mmvtx' else [f'norm{i}' for i in model.out_indices]
    hint = ''
    levels = tuple(sorted({int(k[len('norm')]) for k in out
                           if k[:len('norm')] == 'norm' and k[len('norm')].isdigit()}))
    if fmt == 'mmvtx' and levels != model.out_indices:
        hint = ('  hint: this is an mmvtx Swin checkpoint with the output norms of levels '
                f'{levels} (the out_indices it was saved with); the model returns levels '
                f'{model.out_indices}. Build the model with out_indices={levels} (a file of '
                "tools/model_converters/swin2mmvtx.py: convert again with --options "
                "'{\"out_indices\": [...]}'), or load it with strict=False (init_cfg=dict("
                "type='Pretrained', checkpoint=..., strict=False)): the norms of the levels in "
                'both then load, the others keep their init.')
    return ConvertedCheckpoint(out, fmt, may_miss, hint, resized)


SwinTransformer.checkpoint_formats = SWIN_FORMATS
