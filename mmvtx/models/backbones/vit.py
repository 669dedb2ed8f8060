"""Vision Transformer (Dosovitskiy et al., 2021) as a multi-scale backbone.

As the paper describes it: patch embedding by a convolution whose kernel and
stride are the patch size, a [CLS] token prepended, a learned position embedding added (resized
to the actual patch grid), N pre-norm encoder layers and a final LayerNorm. A plain ViT has a
single stride-16 map; :class:`SimpleFeaturePyramid` (ViTDet) turns it into maps at strides 4, 8,
16 and 32 (two 2x deconvolutions, one, identity, max-pool), either all from the last layer or
each from a chosen intermediate layer (mmseg's UPerNet-ViT recipe takes layers 3/6/9/12).
Optional window attention in all but a few global blocks (ViTDet) for high resolutions, on the
window geometry Swin uses (:mod:`..layers.window`; no shift), and the options of the ViT families
released since (ViTDet/SAM relative positions, DINOv2/DINOv3 registers, LayerScale, SwiGLU,
rotary positions), each a preset of :class:`ViT`.
"""
import math
import numbers
import re
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn

from mmvtx.registry import MODELS
from mmvtx.utils.logging import log_once
from mmvtx.utils.checkpoint import (CheckpointMismatchError, ConvertedCheckpoint, KeyRule,
                                    detect_format, merge_qkv, rename_keys)
from ..layers import (DropPath, LayerScale, Linear, Mlp, PatchEmbed, SwiGLU, attention,
                      drop_path_rates)
from ..layers.init import init_transformer_weights, trunc_normal_
from ..layers.norm import LayerNorm, LayerNorm2d
from ..layers.padding import crop_hw, max_pool2d_ceil
from ..layers.pos_embed import resize_pos_embed
from ..layers.position import (Rope2d, apply_rope, decomposed_rel_pos,
                              resize_rel_pos_table)
from ..layers.window import (WindowGeometry, WindowGeometryCache, tokens_to_windows,
                             windows_to_tokens)
from .base import VisionBackbone, forward_block


class Attention(nn.Module):
    """Multi-head self-attention over a token sequence, or within the windows of a patch map
    (ViTDet): ``forward(x, geo)`` with a :class:`WindowGeometry` gathers the projected tokens of
    the ``h x w`` map into ``M x M`` windows (the map zero-padded to multiples of ``M``, as
    ViTDet pads: padded slots get the projection of a zero token and take part as keys), attends
    per window and gathers back before the output projection.

    ``qkv_bias='qv'``: biases on queries and values only (DINOv3; its released key bias is
    masked to zero — with rotary positions a key bias would not cancel in the softmax).
    ``rel_pos_size=(h, w)``: ViTDet's decomposed relative position tables ``rel_pos_h`` /
    ``rel_pos_w`` (``2h-1`` / ``2w-1`` rows of ``head_dim``) learned for an ``h x w`` grid (the
    window, or the pretraining patch grid in global blocks), zero-initialised as ViTDet does when
    the pretrained weights have none, and interpolated to other grids."""

    def __init__(self, dim: int, num_heads: int, qkv_bias=True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, rel_pos_size: Optional[Tuple[int, int]] = None):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias is True)
        if qkv_bias == 'qv':
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        if rel_pos_size is not None:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * rel_pos_size[0] - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * rel_pos_size[1] - 1, self.head_dim))
        else:
            self.rel_pos_h = self.rel_pos_w = None
        self.attn_drop = attn_drop
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _qkv_bias(self) -> Optional[torch.Tensor]:
        if self.q_bias is None:
            return self.qkv.bias
        return torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])

    def forward(self, x: torch.Tensor, geo: Optional[WindowGeometry] = None,
                hw: Optional[Tuple[int, int]] = None, rope=None,
                out_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x``: ``B x L x C`` tokens (with ``geo``: the ``h*w`` patch tokens of its map);
        ``hw``: the patch grid (for relative positions in a global block); ``rope``: the
        ``(cos, sin)`` of the patch tokens (the last ``h*w`` of ``x``); ``out_scale``: the
        block's LayerScale, folded into the output projection."""
        B, L, C = x.shape
        qkv = self.qkv(x)
        if self.q_bias is not None:
            qkv = qkv + self._qkv_bias()
        if geo is not None:
            gather = geo.gathers[0]
            qkv = tokens_to_windows(qkv, gather, self._qkv_bias())
            slots, N = qkv.shape[1], geo.tokens_per_window
            qkv = qkv.view(B * (slots // N), N, 3 * C)  # (B * nW) windows
        b, n = qkv.shape[:2]
        # qkv with shape (3, b, heads, n, head_dim)
        q, k, v = qkv.view(b, n, 3, self.num_heads, self.head_dim).permute(
            2, 0, 3, 1, 4).unbind(0)
        rel_pos = None
        if self.rel_pos_h is not None:
            grid = (geo.window_size, geo.window_size) if geo is not None else hw
            rel_pos = decomposed_rel_pos(q, grid, self.rel_pos_h, self.rel_pos_w)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        y = attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0,
                      rel_pos=rel_pos)
        y = y.transpose(1, 2).reshape(b, n, C)
        if geo is not None:
            y = windows_to_tokens(y.view(B, slots, C), gather)
        return self.proj_drop(self.proj(y, out_scale))


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer: ``x + MSA(LN(x))``, then ``x + MLP(LN(x))``, each
    branch scaled per channel by LayerScale (``ls1``/``ls2``) if ``layer_scale_init`` (folded
    into the branch's last linear map: the same values, less memory kept for backward).

    With ``window_size > 0`` the attention runs inside non-overlapping windows of the patch
    map (ViTDet); the [CLS] token, if any, is not part of a windowed layer's input."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias=True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path: float = 0.0,
                 window_size: int = 0, layer_norm_eps: float = 1e-6,
                 rel_pos_size: Optional[Tuple[int, int]] = None,
                 layer_scale_init: Optional[float] = None, mlp_type: str = 'gelu',
                 mlp_hidden_dims: Optional[int] = None):
        super().__init__()
        self.window_size = window_size
        self.norm1 = LayerNorm(dim, eps=layer_norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop_rate, drop_rate,
                              rel_pos_size=rel_pos_size)
        self.ls1 = LayerScale(dim, layer_scale_init) if layer_scale_init else nn.Identity()
        self.drop_path = DropPath(drop_path)
        self.norm2 = LayerNorm(dim, eps=layer_norm_eps)
        hidden = mlp_hidden_dims or int(dim * mlp_ratio)
        self.mlp = SwiGLU(dim, hidden) if mlp_type == 'swiglu' else \
            Mlp(dim, hidden, act='gelu_tanh' if mlp_type == 'gelu_tanh' else 'gelu')
        self.mlp_drop = nn.Dropout(drop_rate)
        self.ls2 = LayerScale(dim, layer_scale_init) if layer_scale_init else nn.Identity()

    def forward(self, x: torch.Tensor, geo: Optional[WindowGeometry] = None,
                hw: Optional[Tuple[int, int]] = None, rope=None) -> torch.Tensor:
        """``geo``: the window geometry of the patch map, for a windowed layer; ``hw``, ``rope``:
        see :class:`Attention`."""
        ls1, ls2 = (self.ls1.gamma, self.ls2.gamma) if isinstance(self.ls1, LayerScale) \
            else (None, None)
        y = self.attn(self.norm1(x), geo if self.window_size > 0 else None, hw, rope,
                      out_scale=ls1)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp_drop(self.mlp(self.norm2(x), out_scale=ls2)))


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid over stride-16 maps: for strides 4, 8, 16, 32,
    ConvT(2, 2) -> LN -> GELU -> ConvT(2, 2); ConvT(2, 2); identity; max-pool(2).
    Output widths C/4, C/2, C, C."""

    def __init__(self, dim: int, strides: Sequence[int] = (4, 8, 16, 32)):
        super().__init__()
        self.strides = tuple(strides)
        self.channels = []
        layers = []
        for s in self.strides:
            if s == 4:
                layers.append(nn.Sequential(
                    nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), LayerNorm2d(dim // 2),
                    nn.GELU(), nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2)))
                self.channels.append(dim // 4)
            elif s == 8:
                layers.append(nn.ConvTranspose2d(dim, dim // 2, 2, stride=2))
                self.channels.append(dim // 2)
            elif s == 16:
                layers.append(nn.Identity())
                self.channels.append(dim)
            elif s == 32:
                layers.append(_MaxPoolCeil(2, ceil_mode=True))
                self.channels.append(dim)
            else:
                raise ValueError(f'SimpleFeaturePyramid: stride {s} is not one of 4, 8, 16, 32')
        self.scales = nn.ModuleList(layers)

    def forward(self, feats: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        """``feats``: one stride-16 ``B x C x h x w`` map per output level (the same one for
        all levels in ViTDet's layout)."""
        return tuple(layer(f) for layer, f in zip(self.scales, feats))


class _MaxPoolCeil(nn.MaxPool2d):
    """``nn.MaxPool2d(2, ceil_mode=True)`` written so that ``torch.export`` with dynamic sizes
    takes it (:func:`~mmvtx.models.layers.padding.max_pool2d_ceil`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool2d_ceil(x)


# ViTDet's global blocks by depth (the same for SAM's image encoders)
_GLOBAL_BLOCKS = {12: (2, 5, 8, 11), 24: (5, 11, 17, 23), 32: (7, 15, 23, 31)}
_SIZES = {'s': 'small', 'b': 'base', 'l': 'large', 'h': 'huge', 'g': 'giant'}


def _family_presets() -> dict:
    """``<family>-<size>`` -> settings: the architectures whose released weights dense-prediction
    users fine-tune (see the class docstring)."""
    vitdet = dict(img_size=224, rel_pos_img_size=1024, with_cls_token=False, window_size=14,
                  use_rel_pos=True, final_norm=False)
    sam = dict(vitdet, img_size=1024, rel_pos_img_size=None)  # tables of its own grid
    dinov2 = dict(patch_size=14, img_size=518, layer_scale_init=1e-5, feature_norm=True,
                  interpolate_offset=0.1)
    dinov2_reg = dict(dinov2, num_register_tokens=4, interpolate_antialias=True,
                      interpolate_offset=0.0)
    dinov3 = dict(pos_embed='rope', rope_theta=100.0, num_register_tokens=4,
                  layer_scale_init=1e-5, layer_norm_eps=1e-5, qkv_bias='qv', feature_norm=True)
    deit3 = dict(layer_scale_init=1e-4)
    families = {'vitdet': (vitdet, 'blh'), 'sam': (sam, 'blh'), 'dinov2': (dinov2, 'sblg'),
                'dinov2-reg': (dinov2_reg, 'sblg'), 'dinov3': (dinov3, 'sbl'),
                'deit3': (deit3, 'sblh')}
    presets = {}
    for family, (settings, sizes) in families.items():
        for size in sizes:
            cfg = dict(settings, arch=_SIZES[size])
            if family in ('vitdet', 'sam'):
                depth = ViT.arch_zoo[_SIZES[size]]['num_layers']
                cfg['global_attn_indexes'] = _GLOBAL_BLOCKS[depth]
            if family.startswith('dinov2') and size == 'g':  # ViT-g/14: SwiGLU, 4096 hidden
                cfg.update(mlp_type='swiglu', mlp_hidden_dims=4096)
            presets[f'{family}-{size}'] = cfg
    return presets


# Keyword arguments of mmseg's VisionTransformer that mmvtx's ViT has no argument of its own for.
# Its configs (mmseg::vit, setr, segmenter, dpt) return stride-16 maps of the layers counted by
# ``out_indices`` to a separate neck (MultiLevelNeck, MLANeck) or head (SETR, Segmenter, DPT).
MMSEG_VIT_KWARGS = ('patch_pad', 'out_origin', 'norm_cfg', 'act_cfg', 'patch_norm', 'patch_bias',
                    'pre_norm', 'interpolate_mode', 'num_fcs', 'frozen_exclude')
# what mmseg's VisionTransformer builds where its config is silent and mmvtx's default differs
MMSEG_VIT_DEFAULTS = dict(final_norm=False, layer_norm_eps=1e-5, drop_path_rate=0.0)


def mmseg_vit_kwargs(kwargs: dict, out_indices) -> Optional[dict]:
    """The network a config for mmseg's VisionTransformer asks for, or ``None`` for a config in
    mmvtx's own terms. Such a config gives one of :data:`MMSEG_VIT_KWARGS` (popped from
    ``kwargs``) or ``out_indices`` that count encoder layers (an entry beyond the four pyramid
    levels: DPT's ``(2, 5, 8, 11)``). It then returns ``dict(layers=..., interpolate_mode=...,
    layer_norm_eps=...)``: the stride-16 maps of those layers (mmseg's ``out_indices``, default
    ``-1``: the last) are returned as mmseg returns them. A value asking for a network mmvtx's
    ViT does not build (SAN's CLIP encoder: ``pre_norm``, ``out_origin``, QuickGELU, no patch
    bias) is refused naming it."""
    given = {k: kwargs.pop(k) for k in MMSEG_VIT_KWARGS if k in kwargs}
    indices = (out_indices,) if isinstance(out_indices, numbers.Integral) else out_indices
    counts_layers = isinstance(indices, Sequence) and not isinstance(indices, (str, bytes)) and \
        any(isinstance(i, numbers.Integral) and not isinstance(i, bool) and not -4 <= i < 4
            for i in indices)
    if not given and not counts_layers:
        return None

    def refuse(key: str, why: str):
        raise ValueError(f"ViT: {key}={given[key]!r} (a keyword of mmseg's VisionTransformer) "
                         f'{why}')

    clip = "asks for SAN's CLIP image encoder, which mmvtx's ViT does not build: keep mmseg's " \
           "VisionTransformer for it"
    for key, want in (('pre_norm', False), ('out_origin', False), ('patch_bias', True),
                      ('patch_norm', False), ('num_fcs', 2), ('patch_pad', 'corner')):
        if key in given and not (given[key] == want and type(given[key]) is type(want)):
            refuse(key, clip if key in ('pre_norm', 'out_origin', 'patch_bias') else
                   f'asks for a network mmvtx\'s ViT does not build; it takes {key}={want!r}')
    if 'frozen_exclude' in given and list(given['frozen_exclude'] or ()) != ['all']:
        refuse('frozen_exclude', "freezes parameters by name (SAN): mmvtx's ViT freezes by "
               "frozen_stages; it takes frozen_exclude=['all'] (mmseg's default: none frozen)")
    act = given.get('act_cfg', dict(type='GELU'))
    # mmcv's GELU is torch's nn.GELU: approximate='tanh' is SigLIP's MLP (mlp_type='gelu_tanh')
    approximate = act.get('approximate', 'none') if isinstance(act, dict) else None
    if not (isinstance(act, dict) and act.get('type') == 'GELU' and set(act) <= {
            'type', 'approximate'} and approximate in ('none', 'tanh')):
        refuse('act_cfg', clip if isinstance(act, dict) and act.get('type') == 'QuickGELU' else
               "asks for a network mmvtx's ViT does not build; it takes dict(type='GELU') or "
               "dict(type='GELU', approximate='tanh') (mlp_type='gelu_tanh')")
    norm = given.get('norm_cfg', dict(type='LN'))
    eps = norm.get('eps', 1e-5) if isinstance(norm, dict) else None
    if not (isinstance(norm, dict) and norm.get('type') == 'LN' and set(norm) <= {
            'type', 'eps', 'requires_grad'} and norm.get('requires_grad', True) is True
            and isinstance(eps, numbers.Real) and not isinstance(eps, bool) and eps > 0):
        refuse('norm_cfg', "asks for a network mmvtx's ViT does not build; it takes "
               "dict(type='LN', eps=<a number > 0>)")
    mode = given.get('interpolate_mode', 'bicubic')
    if mode not in ('bicubic', 'bilinear'):
        refuse('interpolate_mode', "must be 'bicubic' (mmseg's default) or 'bilinear' (SETR's): "
               'how the position embedding is resized to the input')
    if out_indices is None:
        out_indices = -1  # mmseg's default: the last layer
    return dict(given=sorted(given), layers=out_indices, interpolate_mode=mode,
                layer_norm_eps=float(eps), act_cfg=act,
                # act_cfg given with approximate: that MLP, as mlp_type would set it
                mlp_type=None if 'approximate' not in act else
                'gelu_tanh' if approximate == 'tanh' else 'gelu')


@MODELS.register_module()
class ViT(VisionBackbone):
    """Vision Transformer backbone with a built-in simple feature pyramid.

    The plain ViT (Dosovitskiy et al.) and the variants whose weights dense-prediction users
    bring today, as presets of one class (``arch='<family>-<s|b|l|h|g>'``; explicit arguments
    override a preset):

    * ``vitdet-*`` (Li et al. 2022, with MAE weights): no [CLS], window attention 14 with global
      blocks (2/5/8/11 for B), decomposed relative positions (zero when the weights have none),
      224-pixel absolute position embedding resized to the input, no final norm.
    * ``sam-*``: SAM's image encoder (the same architecture at 1024 pixels). SAM's neck (two
      convolutions to 256 channels for the mask decoder) is not loaded: the pyramid replaces it.
    * ``dinov2-*`` / ``dinov2-reg-*``: patch 14 at 518 pixels, LayerScale, 4 register tokens
      (dropped from the maps), SwiGLU for ViT-g, DINOv2's own position-embedding resampling
      (offset 0.1 for the first release, antialiased for the register release, as the authors
      load them).
    * ``dinov3-*``: rotary position embedding (no absolute one), 4 storage (register) tokens,
      LayerScale, query/value biases only, LayerNorm eps 1e-5.
    * ``deit3-*``: LayerScale (DeiT-III).

    The distilled DeiTs (``dist_token``; transformers' ``DeiTModel``) load into a ViT with
    ``num_register_tokens=1``: the distillation token attends as a register token, its
    position added to it.

    Patch sizes other than 16 (DINOv2's 14) keep their native token grid through the encoder;
    the map handed to the pyramid is then resampled bilinearly, pixel-aligned (cell centres at
    ``(i + 0.5) p`` mapped to ``(j + 0.5) 16``), to the stride-16 grid ``ceil(H/16) x ceil(W/16)``,
    so every backbone's maps are at strides 4/8/16/32.

    Args:
        arch: ``small`` (384/12/6), ``base`` (768/12/12), ``large`` (1024/24/16), ``huge``
            (1280/32/16), ``giant`` (1536/40/24), a family preset above, or a dict with
            ``embed_dims``, ``num_layers``, ``num_heads``.
        img_size: the pretraining size (a side or ``(h, w)``); the position embedding covers its
            patch grid (``ceil(side / patch)``, the grid of an input of that size; a
            checkpoint's table of another grid is resampled to it at load) and is resized
            (bicubic, with ``interpolate_*``) to the grid of each input.
        patch_size: kernel and stride of the patch embedding (16).
        out_indices: which of the pyramid levels (strides 4, 8, 16, 32) to return (default
            all four). In a config for mmseg's VisionTransformer (below): encoder layers.
        feature_layers: ``None`` (ViTDet: every level from the last layer), or one encoder
            layer index per level of ``out_indices`` (mmseg's UPerNet-ViT: ``(2, 5, 8, 11)``).
        feature_norm: apply the final LayerNorm to the intermediate ``feature_layers`` too
            (DINOv2/DINOv3's ``get_intermediate_layers(norm=True)``).
        with_cls_token: prepend the [CLS] token (dropped from the maps).
        output_cls_token: also return the final [CLS] token (``B x C``) after the maps.
        num_register_tokens: register/storage tokens after the [CLS] token (no position
            embedding; dropped from the maps).
        pos_embed: ``'learned'`` absolute position embedding, ``'rope'`` (rotary, DINOv3,
            ``rope_theta``) or ``'none'``.
        interpolate_antialias, interpolate_offset: how the position embedding is resampled
            (DINOv2's arguments of the same names).
        window_size: >0 runs the layers not in ``global_attn_indexes`` with attention inside
            ``window_size x window_size`` windows of the patch map (ViTDet: 14 with global
            layers 2, 5, 8, 11); the [CLS] token is then not used. ``window_size=0`` on a
            windowed preset makes every layer global (the preset's global layers dropped).
        use_rel_pos: ViTDet's decomposed relative positions in every block, learned for the
            window (windowed blocks) or the ``rel_pos_img_size`` patch grid (global blocks;
            default ``img_size``).
        layer_scale_init: LayerScale on both residual branches, initialised to this value
            (``None``/0: none).
        qkv_bias: ``True``, ``False`` or ``'qv'`` (no key bias).
        mlp_type: ``'gelu'`` MLP, ``'gelu_tanh'`` (GELU's tanh approximation: SigLIP's,
            which loads into ``with_cls_token=False, mlp_type='gelu_tanh'``) or ``'swiglu'``;
            ``mlp_hidden_dims`` overrides ``embed_dims * mlp_ratio``. Not set (None), a GELU
            MLP follows the checkpoint it loads (a SigLIP file: the tanh approximation); the
            activation in use is kept in the ``mlp_act`` buffer, so converted files and the
            run's own checkpoints bring it back (set explicitly, it is kept, with a warning
            where a checkpoint records the other).
        final_norm: LayerNorm on the last layer's output.
        frozen_stages: -1 none; 0 the patch embedding, [CLS], register and position embedding;
            k also the first k encoder layers.
        drop_path_rate, with_cp, norm_eval, init_cfg: as in every mmvtx backbone
            (``drop_path_rate`` 0.1 by default).
        **kwargs: mmseg's own VisionTransformer keywords (:data:`MMSEG_VIT_KWARGS`), so that
            its configs (UPerNet with MultiLevelNeck, SETR, Segmenter, DPT) build this class
            with only ``type`` changed. Such a config (one of those keywords, or
            ``out_indices`` beyond the four levels: DPT's ``(2, 5, 8, 11)``) gets mmseg's
            network and outputs: the maps of the encoder layers its ``out_indices`` count
            (default -1, the last) at the patch grid, in layer order, for its neck or head
            (no pyramid; ``[map, [CLS] token]`` pairs with ``output_cls_token``), and mmseg's
            defaults where it is silent (``final_norm=False``, LayerNorm eps 1e-5,
            ``drop_path_rate=0``, the position embedding resized by ``interpolate_mode``).
    """
    family = 'ViT'
    hf_model_types = ('vit', 'vit_mae', 'vit_msn', 'deit', 'dinov2', 'dinov2_with_registers',
                      'dinov3_vit', 'vitdet', 'sam_vision_model', 'beit', 'data2vec-vision',
                      'ijepa')
    arch_zoo = {
        'small': dict(embed_dims=384, num_layers=12, num_heads=6),
        'base': dict(embed_dims=768, num_layers=12, num_heads=12),
        'large': dict(embed_dims=1024, num_layers=24, num_heads=16),
        'huge': dict(embed_dims=1280, num_layers=32, num_heads=16),
        'giant': dict(embed_dims=1536, num_layers=40, num_heads=24),
    }
    arch_aliases = {'s': 'small', 'b': 'base', 'l': 'large', 'h': 'huge', 'g': 'giant'}
    # the settings a family preset may set, with their values outside presets
    defaults = dict(img_size=224, patch_size=16, mlp_ratio=4.0, qkv_bias=True,
                    with_cls_token=True, window_size=0, global_attn_indexes=(),
                    final_norm=True, layer_norm_eps=1e-6, use_rel_pos=False,
                    rel_pos_img_size=None, num_register_tokens=0, layer_scale_init=None,
                    mlp_type='gelu', mlp_hidden_dims=None, pos_embed='learned',
                    rope_theta=100.0, interpolate_antialias=False, interpolate_offset=0.0,
                    feature_norm=False)

    # the arguments whose None default stands for these (mmseg's VisionTransformer config,
    # where it is silent, asks for its own: MMSEG_VIT_DEFAULTS, out_indices=-1)
    call_defaults = dict(out_indices=(0, 1, 2, 3), drop_path_rate=0.1)

    def __init__(self, arch: Union[str, dict] = 'base', embed_dims: Optional[int] = None,
                 num_layers: Optional[int] = None, num_heads: Optional[int] = None,
                 img_size: Union[int, Sequence[int], None] = None, patch_size: Optional[int] = None,
                 in_channels: int = 3, mlp_ratio: Optional[float] = None, qkv_bias=None,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: Optional[float] = None,
                 out_indices: Union[int, Sequence[int], None] = None,
                 feature_layers: Optional[Sequence[int]] = None,
                 feature_norm: Optional[bool] = None, with_cls_token: Optional[bool] = None,
                 output_cls_token: bool = False, num_register_tokens: Optional[int] = None,
                 pos_embed: Optional[str] = None, rope_theta: Optional[float] = None,
                 interpolate_antialias: Optional[bool] = None,
                 interpolate_offset: Optional[float] = None, window_size: Optional[int] = None,
                 global_attn_indexes: Optional[Sequence[int]] = None,
                 use_rel_pos: Optional[bool] = None,
                 rel_pos_img_size: Union[int, Sequence[int], None] = None,
                 layer_scale_init: Optional[float] = None, mlp_type: Optional[str] = None,
                 mlp_hidden_dims: Optional[int] = None, final_norm: Optional[bool] = None,
                 layer_norm_eps: Optional[float] = None, frozen_stages: int = -1,
                 with_cp: bool = False, norm_eval: bool = False, init_cfg: Optional[dict] = None,
                 pretrained: Optional[str] = None, **kwargs):
        super().__init__(init_cfg=self.pretrained_init_cfg(pretrained, init_cfg))
        twin = mmseg_vit_kwargs(kwargs, out_indices)
        self.refuse_unknown_arguments(kwargs)
        if twin is not None:  # a config for mmseg's VisionTransformer: its network and outputs
            if feature_layers is not None:
                raise ValueError(
                    f'ViT: feature_layers={feature_layers!r} with a config for mmseg\'s '
                    f"VisionTransformer ({', '.join(twin['given']) or 'out_indices'} given), "
                    f'whose out_indices={out_indices!r} already name the layers whose maps are '
                    'returned')
            feature_layers = twin['layers']
            if twin['mlp_type'] is not None:
                if mlp_type is not None and mlp_type != twin['mlp_type']:
                    raise ValueError(
                        f"ViT: mlp_type={mlp_type!r} with act_cfg="
                        f"{twin['act_cfg']!r}, which asks for "
                        f"mlp_type={twin['mlp_type']!r}: give one")
                mlp_type = twin['mlp_type']
            if not (isinstance(arch, str) and arch.lower() in self.presets):
                # mmseg's network; a family preset (arch='dinov2-b' put in mmseg's config)
                # keeps the norms its weights were trained with
                final_norm = MMSEG_VIT_DEFAULTS['final_norm'] if final_norm is None \
                    else final_norm
                if layer_norm_eps is None:
                    layer_norm_eps = twin['layer_norm_eps']
            if drop_path_rate is None:
                drop_path_rate = MMSEG_VIT_DEFAULTS['drop_path_rate']
        else:
            out_indices = self.call_defaults['out_indices'] if out_indices is None \
                else out_indices
            drop_path_rate = self.call_defaults['drop_path_rate'] if drop_path_rate is None \
                else drop_path_rate
        given = dict(img_size=img_size, patch_size=patch_size, mlp_ratio=mlp_ratio,
                     qkv_bias=qkv_bias, with_cls_token=with_cls_token, window_size=window_size,
                     global_attn_indexes=global_attn_indexes, final_norm=final_norm,
                     layer_norm_eps=layer_norm_eps, use_rel_pos=use_rel_pos,
                     rel_pos_img_size=rel_pos_img_size, num_register_tokens=num_register_tokens,
                     layer_scale_init=layer_scale_init, mlp_type=mlp_type,
                     mlp_hidden_dims=mlp_hidden_dims, pos_embed=pos_embed,
                     rope_theta=rope_theta, interpolate_antialias=interpolate_antialias,
                     interpolate_offset=interpolate_offset, feature_norm=feature_norm)
        arch_name = arch
        arch, opt = self.resolve_settings(arch, **given)
        self.preset_settings = opt
        cfg = self.resolve_arch(arch, embed_dims=embed_dims, num_layers=num_layers,
                                num_heads=num_heads)
        dim, depth, heads = (self.check_int(k, cfg[k]) for k in ('embed_dims', 'num_layers',
                                                                  'num_heads'))
        self.check_heads([dim], [heads])
        patch_size, img_size, window_size = opt['patch_size'], opt['img_size'], opt['window_size']
        for name, value in dict(in_channels=in_channels, patch_size=patch_size).items():
            self.check_int(name, value)
        img_hw = self.check_size('img_size', img_size, patch_size)  # pretraining grid >= 1 patch
        self.check_int('window_size', window_size, 0)
        self.check_int('num_register_tokens', opt['num_register_tokens'], 0)
        self.check_positive('mlp_ratio', opt['mlp_ratio'])
        self.check_positive('layer_norm_eps', opt['layer_norm_eps'])
        if opt['mlp_hidden_dims'] is not None:
            self.check_int('mlp_hidden_dims', opt['mlp_hidden_dims'])
        if opt['layer_scale_init']:
            self.check_positive('layer_scale_init', opt['layer_scale_init'])
        for name, allowed in (('qkv_bias', (True, False, 'qv')),
                              ('mlp_type', ('gelu', 'gelu_tanh', 'swiglu')),
                              ('pos_embed', ('learned', 'rope', 'none'))):
            if not any(opt[name] is a or opt[name] == a and type(opt[name]) is type(a)
                       for a in allowed):
                raise ValueError(f'ViT: {name}={opt[name]!r} must be one of {allowed}')
        self.check_rates(drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                         drop_path_rate=drop_path_rate)
        self.check_bools(with_cls_token=opt['with_cls_token'], final_norm=opt['final_norm'],
                         feature_norm=opt['feature_norm'], use_rel_pos=opt['use_rel_pos'],
                         interpolate_antialias=opt['interpolate_antialias'],
                         output_cls_token=output_cls_token, with_cp=with_cp, norm_eval=norm_eval)
        self.check_hidden([dim], opt['mlp_ratio'])
        if opt['pos_embed'] == 'rope':
            self.check_positive('rope_theta', opt['rope_theta'])
        offset = opt['interpolate_offset']
        if isinstance(offset, bool) or not isinstance(offset, numbers.Real) or not (
                0 <= offset < 1):
            raise ValueError(f'ViT: interpolate_offset={offset!r} must be a number in [0, 1) '
                             '(DINOv2 uses 0.1)')
        if opt['rel_pos_img_size'] is not None:
            self.check_size('rel_pos_img_size', opt['rel_pos_img_size'], patch_size)
        if twin is None and 0 in self.check_out_indices(out_indices, 4) and dim < 4:
            raise ValueError(f'ViT: embed_dims={dim} is too narrow for the stride-4 level '
                             '(embed_dims // 4 channels); leave level 0 out of out_indices')
        global_attn_indexes = opt['global_attn_indexes']
        if isinstance(global_attn_indexes, (str, bytes)) or not isinstance(
                global_attn_indexes, Sequence):
            raise ValueError(f'ViT: global_attn_indexes={global_attn_indexes!r} must be a '
                             'sequence of layer indices')
        global_attn_indexes = tuple(global_attn_indexes)
        if global_attn_indexes and given['global_attn_indexes'] is None:
            # a windowed preset's global blocks (ViTDet's four evenly spaced ones): they name
            # the blocks among windowed ones that attend globally, for the preset's depth
            if window_size == 0:  # no windows set explicitly: every block is global
                global_attn_indexes = ()
            elif max(global_attn_indexes) >= depth:
                raise ValueError(
                    f'ViT: arch={arch_name!r} attends globally in blocks {global_attn_indexes} '
                    f'of its windowed ones; with num_layers={depth} set global_attn_indexes '
                    f'to indices in [0, {depth}) (or window_size=0 for global attention in '
                    'every block)')
        if global_attn_indexes and window_size == 0:
            raise ValueError(f'ViT: global_attn_indexes={global_attn_indexes} needs '
                             'window_size > 0 (without windows every layer is global)')
        for i in global_attn_indexes:
            self.check_int('global_attn_indexes[...]', i, 0, depth - 1)
        # the maps of encoder layers at the patch grid, as mmseg's VisionTransformer returns
        # them (one per layer of its out_indices, in layer order), instead of the pyramid
        layer_maps = twin is not None
        if layer_maps:
            layers = self.check_ints('out_indices', (feature_layers,) if isinstance(
                feature_layers, numbers.Integral) else feature_layers, low=-depth)
            if any(i >= depth for i in layers):
                raise ValueError(f'ViT: out_indices={out_indices!r} (layers, as mmseg\'s '
                                 f'VisionTransformer counts them) must be in [0, {depth})')
            feature_layers = tuple(sorted({i % depth for i in layers}))
            self.out_indices = tuple(range(len(feature_layers)))
            # read from out_indices alone (DPT's config has none of mmseg's own keywords): a
            # warning, as out_indices beyond the four levels may also be a slip
            log_once(f"ViT: a config for mmseg's VisionTransformer ("
                     + (', '.join(twin['given']) or f'out_indices={out_indices!r} count layers, '
                        'beyond the 4 pyramid levels') +
                     f'): returns the maps of layers {feature_layers} at the patch grid (stride '
                     f'{patch_size}), as mmseg\'s, for its neck or head (no feature pyramid)',
                     'INFO' if twin['given'] else 'WARNING')
        else:
            self.out_indices = self.check_out_indices(out_indices, 4)
        if feature_layers is not None and not layer_maps:
            feature_layers = self.check_ints('feature_layers', feature_layers, low=-depth)
            feature_layers = tuple(i % depth if i < 0 else i for i in feature_layers)
            if len(feature_layers) != len(self.out_indices) or any(
                    i >= depth for i in feature_layers):
                raise ValueError(f'ViT: feature_layers {feature_layers} needs one layer index '
                                 f'(< {depth}) per output level {self.out_indices}')
            # paired with out_indices as given, then put in the order of the sorted levels
            levels = [i % 4 for i in ((out_indices,) if isinstance(out_indices, int)
                                      else out_indices)]
            feature_layers = tuple(layer for _, layer in sorted(zip(levels, feature_layers)))
        with_cls_token, n_reg = opt['with_cls_token'], opt['num_register_tokens']
        if window_size > 0 and output_cls_token:
            raise ValueError('ViT: window attention drops the [CLS] token; '
                             'output_cls_token needs window_size=0')
        if output_cls_token and not with_cls_token:
            raise ValueError('ViT: output_cls_token needs with_cls_token=True')
        if window_size > 0 and (n_reg or opt['pos_embed'] == 'rope'):
            raise ValueError(f'ViT: window_size={window_size} cannot be combined with register '
                             'tokens or rotary positions (global-attention models)')
        if opt['use_rel_pos'] and window_size == 0 and (with_cls_token or n_reg):
            raise ValueError('ViT: use_rel_pos (relative positions on the patch grid) needs '
                             'with_cls_token=False and no register tokens')
        if opt['pos_embed'] == 'rope' and (dim // heads) % 4:
            raise ValueError(f'ViT: pos_embed=rope needs a head dimension divisible by 4, '
                             f'got {dim // heads}')
        self.check_frozen_stages(frozen_stages, depth, 'layers')

        self.arch_settings = dict(embed_dims=dim, num_layers=depth, num_heads=heads)
        self.embed_dims = dim
        self.patch_size = patch_size
        # the grid an img_size input gets: inputs are padded to a multiple of the patch, so a
        # side that is not one (DINOv2's 512-px crops: 37 cells of 14) has ceil(side / patch)
        # cells; with the floor (36) the table would be resampled at load and back at every
        # forward of an img_size input, and an image of the pretraining size would not see the
        # checkpoint's embedding
        self.pretrain_grid = (-(-img_hw[0] // patch_size), -(-img_hw[1] // patch_size))
        self.feature_layers = feature_layers
        self.feature_norm = opt['feature_norm']
        self.with_cls_token = with_cls_token
        self.num_register_tokens = n_reg
        self.output_cls_token = output_cls_token
        self.window_size = window_size
        self.interpolate = dict(antialias=opt['interpolate_antialias'],
                                offset=opt['interpolate_offset'],
                                mode=twin['interpolate_mode'] if twin else 'bicubic')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp

        self.patch_embed = PatchEmbed(in_channels, dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if with_cls_token else None
        self.register_tokens = nn.Parameter(torch.zeros(1, n_reg, dim)) if n_reg else None
        if opt['pos_embed'] == 'learned':
            num_pos = self.pretrain_grid[0] * self.pretrain_grid[1] + int(with_cls_token)
            self.pos_embed = nn.Parameter(torch.zeros(1, num_pos, dim))
        else:
            self.pos_embed = None
        self.rope = Rope2d(dim // heads, opt['rope_theta']) if opt['pos_embed'] == 'rope' \
            else None
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = drop_path_rates(drop_path_rate, [depth])[0]
        global_attn_indexes = set(global_attn_indexes)
        rel_hw = img_hw if opt['rel_pos_img_size'] is None else self.check_size(
            'rel_pos_img_size', opt['rel_pos_img_size'], patch_size)
        rel_grid = (-(-rel_hw[0] // patch_size), -(-rel_hw[1] // patch_size))  # as above

        def rel_pos_size(i):
            if not opt['use_rel_pos']:
                return None
            if window_size > 0 and i not in global_attn_indexes:
                return (window_size, window_size)
            return rel_grid

        self.blocks = nn.ModuleList([
            EncoderLayer(dim, heads, opt['mlp_ratio'], opt['qkv_bias'], drop_rate,
                         attn_drop_rate, dpr[i],
                         window_size=0 if i in global_attn_indexes else window_size,
                         layer_norm_eps=opt['layer_norm_eps'], rel_pos_size=rel_pos_size(i),
                         layer_scale_init=opt['layer_scale_init'] or None,
                         mlp_type=opt['mlp_type'], mlp_hidden_dims=opt['mlp_hidden_dims'])
            for i in range(depth)])
        self.norm = LayerNorm(dim, eps=opt['layer_norm_eps']) if opt['final_norm'] \
            else nn.Identity()
        self.pyramid = None if layer_maps else SimpleFeaturePyramid(
            dim, [(4, 8, 16, 32)[i] for i in self.out_indices])
        self.geometry_cache = WindowGeometryCache()
        if isinstance(self.blocks[0].mlp, Mlp):
            # the activation in use is kept in the mlp_act buffer: a converted or trained
            # checkpoint brings it back (a SigLIP file computes GELU's tanh approximation)
            self._register_setting('mlp_act', VIT_ACTS, opt['mlp_type'],
                                   explicit=given['mlp_type'] is not None)
        self._freeze_stages()

    @classmethod
    def resolve_settings(cls, arch, **given) -> Tuple[Union[str, dict], dict]:
        """``(size arch, settings)``: a family preset's name resolved to its size preset and
        the :attr:`defaults` settings it sets, then the ``given`` ones that are not None."""
        preset = {}
        if isinstance(arch, str) and arch.lower() in cls.presets:
            preset = dict(cls.presets[arch.lower()])
            arch = preset.pop('arch')
        elif isinstance(arch, (str, int)) and not isinstance(arch, bool) and \
                str(arch).lower() not in cls.arch_zoo and \
                cls.arch_aliases.get(str(arch).lower()) not in cls.arch_zoo:
            raise ValueError(f'ViT: unknown arch {arch!r}; sizes are {sorted(cls.arch_zoo)}, '
                             f'families {sorted(cls.presets)}, or a dict')
        unknown = sorted(set(given) - set(cls.defaults))
        if unknown:
            raise TypeError(f'ViT: not a preset setting: {unknown}')
        opt = {k: (given[k] if given.get(k) is not None else preset.get(k, v))
               for k, v in cls.defaults.items()}
        return arch, opt

    @property
    def layer_maps(self) -> bool:
        """Whether the ViT returns the maps of encoder layers at the patch grid, as mmseg's
        VisionTransformer does (built from its config), instead of its pyramid."""
        return self.pyramid is None

    @property
    def out_channels(self) -> Tuple[int, ...]:
        if self.layer_maps:
            return (self.embed_dims,) * len(self.feature_layers)
        return tuple(self.pyramid.channels)

    @property
    def out_strides(self) -> Tuple[int, ...]:
        if self.layer_maps:  # mmseg's layout: every map at the patch grid
            return (self.patch_size,) * len(self.feature_layers)
        return super().out_strides

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens: [CLS] and registers."""
        return int(self.with_cls_token) + self.num_register_tokens

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens of ``x`` (B x h x w x C) -> the token sequence: [CLS], position
        embedding (resized to ``h x w``) added to [CLS] and patches, then the register tokens
        inserted after [CLS] (DINOv2's order)."""
        B, h, w, C = x.shape
        x = x.reshape(B, h * w, C)
        if self.with_cls_token:
            x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)
        if self.pos_embed is not None:
            x = x + resize_pos_embed(self.pos_embed, self.pretrain_grid, (h, w),
                                     num_extra_tokens=int(self.with_cls_token),
                                     **self.interpolate)
        if self.register_tokens is not None:
            n = int(self.with_cls_token)
            x = torch.cat([x[:, :n], self.register_tokens.expand(B, -1, -1), x[:, n:]], dim=1)
        return self.pos_drop(x)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        self.check_input(x)
        H, W = x.shape[-2:]
        x = self.patch_embed(x)
        B, h, w, C = x.shape
        x = self._embed(x)
        n_extra = self.num_prefix_tokens
        if self.window_size > 0 and n_extra:  # as ViTDet: windows hold patch tokens only
            x, n_extra = x[:, n_extra:], 0
        wanted = set(self.feature_layers) if self.feature_layers is not None else set()
        last = len(self.blocks) - 1
        deepest = self._deepest_block()
        maps, cls = {}, {}
        geo = None
        if self.window_size > 0:
            geo = self.geometry_cache.get(h, w, self.window_size, 0, x.device,
                                          with_shifted=False)
        rope = self.rope(h, w, x.dtype) if self.rope is not None else None
        # the layers after the deepest of feature_layers feed no map (nor the [CLS] token):
        # not run, and not trained (_unreached_modules)
        for i, block in enumerate(self.blocks[:deepest + 1]):
            x = forward_block(block, x, geo, (h, w), rope, with_cp=self.with_cp)
            if i == last:
                x = self.norm(x)
            if i in wanted or (i == last and self.feature_layers is None):
                y = self.norm(x) if self.feature_norm and i != last else x
                maps[i] = y[:, n_extra:].transpose(1, 2).reshape(B, C, h, w)
                if self.layer_maps and self.output_cls_token:  # (with_cls_token: checked)
                    cls[i] = y[:, 0]
        if self.layer_maps:  # mmseg's VisionTransformer's outputs: [map, [CLS]] pairs with
            # output_cls_token (DPT's readout)
            return tuple([maps[i].contiguous(), cls[i]] if self.output_cls_token
                         else maps[i].contiguous() for i in self.feature_layers)
        layers = self.feature_layers or [last] * len(self.out_indices)
        feats = [self._to_stride16(maps[i], H, W) for i in layers]
        outs = self.pyramid(feats)
        # the deconvolutions upsample the padded stride-16 grid: crop each level to the
        # ceil(H / stride) x ceil(W / stride) of the contract (a no-op where 16 divides H, W)
        outs = tuple(crop_hw(o, (H + s - 1) // s, (W + s - 1) // s).contiguous()
                     for o, s in zip(outs, self.pyramid.strides))
        if self.output_cls_token:
            outs = outs + (x[:, 0],)
        return outs

    def _to_stride16(self, feat: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """The ``B x C x h x w`` patch map resampled to ``ceil(H/16) x ceil(W/16)`` where the
        patch size is not 16: bilinear with the scale ``p / 16`` so that cell centres stay at
        their pixel positions (``F.interpolate(size=...)`` would stretch the padded extent).
        Written out per axis: PyTorch's eager ``upsample_bilinear2d`` ignores the given scale
        on an axis whose two sizes are equal (e.g. 37 px: 3 cells of 14 and 3 of 16) and copies
        it, where its ``torch.compile`` decomposition resamples it."""
        p = self.patch_size
        if p == 16:
            return feat
        feat = _resample_linear(feat, -2, -(-H // 16), 16 / p)
        return _resample_linear(feat, -1, -(-W // 16), 16 / p)

    # -------------------------------------------------------------------- training behaviour
    def _deepest_block(self) -> int:
        """The last encoder layer a returned map or token depends on."""
        last = len(self.blocks) - 1
        if self.feature_layers is None or self.output_cls_token and not self.layer_maps:
            return last
        return max(self.feature_layers)

    def _unreached_modules(self) -> list:
        deepest = self._deepest_block()
        unreached = list(self.blocks[deepest + 1:])
        if deepest < len(self.blocks) - 1 and not self.feature_norm:
            unreached.append(self.norm)  # the final norm follows the last layer only
        return unreached

    def output_modules(self, read) -> list:
        if self.layer_maps:  # maps of layers: every layer before the deepest is needed
            return []
        return [m for p, m in enumerate(self.pyramid.scales) if p not in read]

    def _frozen_modules(self) -> list:
        frozen = [self.patch_embed, self.pos_drop]
        for i in range(self.frozen_stages):
            frozen.append(self.blocks[i])
        if self.frozen_stages == len(self.blocks):
            frozen.append(self.norm)
        return frozen

    def _freeze_stages(self):
        super()._freeze_stages()
        if self.frozen_stages >= 0:
            for p in (self.pos_embed, self.cls_token, self.register_tokens):
                if p is not None:
                    p.requires_grad = False

    def _default_init(self):
        init_transformer_weights(self)
        for p in (self.pos_embed, self.cls_token, self.register_tokens):
            if p is not None:
                trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, LayerScale):
                nn.init.constant_(m.gamma, m.init_value)
            elif isinstance(m, Attention):
                for p in (m.q_bias, m.v_bias, m.rel_pos_h, m.rel_pos_w):
                    if p is not None:  # ViTDet zero-initialises the relative positions
                        nn.init.zeros_(p)

    def checkpoint_architecture(self, sd: dict) -> dict:
        """(A head count changes no shape: not shown.)"""
        layers = {int(m.group(1)) for m in (re.match(r'blocks\.(\d+)\.', k) for k in sd) if m}
        return dict(embed_dims=sd['patch_embed.proj.weight'].shape[0],
                    num_layers=max(layers) + 1)

    def _apply_setting(self, name: str, value: str):
        for block in self.blocks:
            block.mlp.act.name = value

    def _applied_setting(self, name: str) -> str:
        return self.blocks[0].mlp.act.name

    def convert_layout(self, state_dict: dict,
                       source_config: Optional[dict] = None) -> ConvertedCheckpoint:
        converted = convert_vit(state_dict, self, source_config)
        if not isinstance(self.blocks[0].mlp, Mlp):  # SwiGLU: no activation to set
            converted.state_dict.pop('mlp_act', None)
            return converted
        recorded = self.recorded_setting('mlp_act', converted)
        siglip = any(SIGLIP_KEYS.search(k) for k in _unwrap(state_dict))
        act = recorded or ('gelu_tanh' if siglip else 'gelu')
        origin = 'as the checkpoint records' if recorded else "SigLIP's" if siglip else ''
        applied = self._applied_setting('mlp_act')
        if self.setting_explicit('mlp_act'):
            if recorded is not None and act != applied:
                log_once(f"ViT: mlp_type={applied!r} set explicitly, unlike the "
                         f"{converted.source} checkpoint, whose MLP computes {act!r} "
                         f"({origin}): the features are not the ones it was trained with",
                         'WARNING')
            act = applied
        elif act != applied:
            log_once(f"ViT: {converted.source} checkpoint: the MLP computes {act!r} ({origin}; "
                     'mlp_type not set)')
        # the activation travels in the converted weights; loading them applies it
        converted.state_dict['mlp_act'] = self.setting_record('mlp_act', act)
        return converted


def _resample_linear(x: torch.Tensor, dim: int, size: int, step: float) -> torch.Tensor:
    """``x`` resampled linearly along ``dim`` to ``size`` cells, output cell ``j`` reading the
    input at ``(j + 0.5) * step - 0.5`` (clamped to the input's cells; ``upsample_bilinear2d``'s
    ``align_corners=False`` rule with the scale ``1 / step``)."""
    n = x.shape[dim]
    src = ((torch.arange(size, device=x.device, dtype=torch.float32) + 0.5) * step
           - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n - 1)
    i1 = (i0 + 1).clamp(max=n - 1)
    lam = (src - i0).clamp(0, 1).to(x.dtype).view([size] + [1] * (-dim - 1))
    return x.index_select(dim, i0) * (1 - lam) + x.index_select(dim, i1) * lam


# values of the mlp_act setting (a ViT with a GELU MLP; SwiGLU has none)
VIT_ACTS = ('gelu', 'gelu_tanh')


# ------------------------------------------------------------------------- checkpoint formats
VIT_FORMATS = (
    KeyRule('sam', prefixes=('blocks.',), contains=('.mlp.lin1.',)),
    KeyRule('transformers-sam', prefixes=('layers.',), contains=('.layer_norm1.',)),
    KeyRule('transformers-vitdet', prefixes=('embeddings.projection.',)),
    KeyRule('transformers-dinov3', prefixes=('embeddings.patch_embeddings.weight',)),
    KeyRule('transformers-dinov2', contains=('.layer_scale1.lambda1',)),
    KeyRule('transformers-siglip', prefixes=('embeddings.patch_embedding.',)),
    KeyRule('transformers', prefixes=('embeddings.patch_embeddings', 'vit.embeddings')),
    KeyRule('jax', contains=('Transformer/encoderblock_0',)),
    KeyRule('jax', contains=('Transformer/encoderblock/',)),  # big_vision's scanned blocks
    KeyRule('mmseg', prefixes=('layers.',), contains=('.attn.attn.in_proj_weight',)),
    KeyRule('mmpretrain', prefixes=('layers.',), contains=('.attn.qkv.',)),
    KeyRule('dinov3', prefixes=('storage_tokens',)),
    KeyRule('dinov3', contains=('.attn.qkv.bias_mask',)),
    KeyRule('mmvtx', prefixes=('pyramid.',)),  # timm's names and mmvtx's feature pyramid
    # timm's BEiT names: separate query and value biases (DeiT-III's LayerScale names beside)
    KeyRule('beit', prefixes=('blocks.',), contains=('.attn.q_bias',)),
    KeyRule('deit3', prefixes=('blocks.',), contains=('.gamma_1',)),
    KeyRule('timm', prefixes=('blocks.',)),
)
# wrappers around a ViT's weights: SAM's whole model (authors', transformers), detectron2's
# ViTDet backbone (``backbone.net.``, ``backbone.`` already cut), transformers' task models
_WRAPPERS = ('image_encoder.', 'vision_encoder.', 'net.', 'dinov2.', 'dinov2_with_registers.',
             'deit.', 'vision_model.')


def detect_vit_format(sd: dict) -> str:
    return detect_format(sd, VIT_FORMATS, 'ViT', 'timm/the JAX release/DeiT-III/MAE/detectron2 '
                         'ViTDet, SAM (authors, transformers SamVisionModel), DINOv2 (authors, '
                         'transformers Dinov2Model/WithRegisters), DINOv3 (authors, transformers '
                         'DINOv3ViTModel), SigLIP (big_vision, transformers '
                         'SiglipVisionModel, timm), transformers ViTModel/VitDetBackbone, '
                         'mmseg/mmpretrain VisionTransformer or mmvtx')


# where the JAX releases keep the image encoder: the original and AugReg files at the top,
# flax training states under opt/target/, big_vision under params/ (params/img/: the image
# tower of a two-tower model)
_JAX_PREFIXES = ('opt/target/', 'params/img/', 'params/', 'img/', '')
# a block's modules as the original release (LayerNorm_2, MlpBlock_3,
# MultiHeadDotProductAttention_1) and big_vision (LayerNorm_1, MlpBlock_0, ..._0) number them
_JAX_BLOCK = ((re.compile(r'^LayerNorm_0/'), 'norm1'), (re.compile(r'^LayerNorm_[12]/'), 'norm2'),
              (re.compile(r'^MlpBlock_\d+/Dense_(\d+)/'), 'mlp'),
              (re.compile(r'^MultiHeadDotProductAttention_\d+/(\w+)/'), 'attn'))


def _jax_to_timm(sd: dict) -> dict:
    """The JAX (``.npz``) layouts -> timm's names and PyTorch layouts: the original and AugReg
    releases (``cls``, ``Transformer/posembed_input``; an i21k file's ``pre_logits`` and
    ``head`` are dropped), and big_vision's (``params/``, ``pos_embedding`` at the top, blocks
    numbered from 0, no ``cls`` for a ``gap`` model, the blocks stacked along a first axis
    where they were scanned: ``Transformer/encoderblock/``)."""
    prefix = next(p for p in _JAX_PREFIXES if p + 'embedding/kernel' in sd or not p)
    sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    if 'embedding/kernel' not in sd:
        raise CheckpointMismatchError(
            'ViT: a JAX (.npz) checkpoint without a patch embedding (embedding/kernel, also '
            f'looked for under {", ".join(p for p in _JAX_PREFIXES if p)}): not a ViT image '
            'encoder; first keys: ' + ', '.join(sorted(sd)[:8]))
    stacked = 'Transformer/encoderblock/'
    for k in [k for k in sd if k.startswith(stacked)]:  # scanned blocks: one slice each
        v = sd.pop(k)
        for i in range(v.shape[0]):
            sd[f'Transformer/encoderblock_{i}/{k[len(stacked):]}'] = v[i]
    dim = sd['embedding/kernel'].shape[-1]
    out = {}
    for k, v in sd.items():
        v = v.float()
        if k == 'cls':
            out['cls_token'] = v.reshape(1, 1, dim)
        elif k in ('Transformer/posembed_input/pos_embedding', 'pos_embedding'):
            out['pos_embed'] = v.reshape(1, -1, dim)
        elif k == 'embedding/kernel':
            out['patch_embed.proj.weight'] = v.permute(3, 2, 0, 1)
        elif k == 'embedding/bias':
            out['patch_embed.proj.bias'] = v
        elif k.startswith('Transformer/encoder_norm/'):
            out['norm.' + ('weight' if k.endswith('scale') else 'bias')] = v
        elif k.startswith('Transformer/encoderblock_'):
            i = int(k.split('/')[1].rsplit('_', 1)[1])
            p = f'blocks.{i}.'
            name = '/'.join(k.split('/')[2:])
            param = 'weight' if name.endswith(('kernel', 'scale')) else 'bias'
            for pattern, module in _JAX_BLOCK:
                m = pattern.match(name)
                if m is None:
                    continue
                if module == 'mlp':
                    out[p + f'mlp.fc{int(m.group(1)) + 1}.' + param] = \
                        v.T if param == 'weight' else v
                elif module == 'attn':
                    part = m.group(1)
                    if part == 'out':
                        out[p + 'attn.proj.' + param] = v.reshape(-1, dim).T if \
                            param == 'weight' else v
                    else:
                        out.setdefault(p + 'attn.qkv.' + param, {})[part] = \
                            v.reshape(dim, -1).T if param == 'weight' else v.reshape(-1)
                else:
                    out[f'{p}{module}.{param}'] = v
                break
    for k in [k for k, v in out.items() if isinstance(v, dict)]:
        out[k] = torch.cat([out[k]['query'], out[k]['key'], out[k]['value']], 0)
    return out


# transformers ViTModel names, as on the hub (4.x) and as in transformers 5.x; also the
# encoder layers of Dinov2Model / Dinov2WithRegistersModel (LayerScale, SwiGLU), 4.x and 5.x
HF_VIT_RULES = (
    ('embeddings.cls_token', 'cls_token'),
    ('embeddings.register_tokens', 'register_tokens'),
    ('embeddings.distillation_token', 'dist_token'),  # DeiTModel (the distilled DeiTs)
    ('embeddings.position_embeddings', 'pos_embed'),
    ('embeddings.patch_embeddings.projection', 'patch_embed.proj'),
    ('encoder.layer.', 'blocks.'), ('layers.', 'blocks.'),
    ('layernorm_before', 'norm1'), ('layernorm_after', 'norm2'),
    ('attention.output.dense', 'attn.proj'), ('attention.o_proj', 'attn.proj'),
    ('intermediate.dense', 'mlp.fc1'), ('output.dense', 'mlp.fc2'),
    ('layer_scale1.lambda1', 'ls1.gamma'), ('layer_scale2.lambda1', 'ls2.gamma'),
    ('.lambda_1', '.ls1.gamma'), ('.lambda_2', '.ls2.gamma'),  # BeitModel's LayerScale
    ('mlp.weights_in', 'mlp.w12'), ('mlp.weights_out', 'mlp.w3'), ('mlp.down_proj', 'mlp.w3'),
)
# transformers DINOv3ViTModel (5.x puts the layers under model.)
HF_DINOV3_RULES = (
    ('embeddings.cls_token', 'cls_token'), ('embeddings.register_tokens', 'register_tokens'),
    ('embeddings.patch_embeddings', 'patch_embed.proj'), ('model.layer.', 'blocks.'),
    ('layer.', 'blocks.'), ('attention.o_proj', 'attn.proj'),
    ('attention.q_proj.bias', 'attn.q_bias'), ('attention.v_proj.bias', 'attn.v_bias'),
    ('layer_scale1.lambda1', 'ls1.gamma'), ('layer_scale2.lambda1', 'ls2.gamma'),
)
# transformers VitDetBackbone / VitDetModel
HF_VITDET_RULES = (
    ('embeddings.position_embeddings', 'pos_embed'), ('embeddings.projection', 'patch_embed.proj'),
    ('encoder.layer.', 'blocks.'), ('.attention.', '.attn.'),
)
# SAM's image encoder: the authors' names (mlp.lin1/lin2) and transformers SamVisionModel's
SAM_RULES = (
    ('patch_embed.projection', 'patch_embed.proj'), ('layers.', 'blocks.'),
    ('layer_norm1', 'norm1'), ('layer_norm2', 'norm2'),
    ('mlp.lin1', 'mlp.fc1'), ('mlp.lin2', 'mlp.fc2'),
)
# the DeiT-III authors' LayerScale names, DINOv2/v3 and timm register token names
LAYER_SCALE_RULES = (('.gamma_1', '.ls1.gamma'), ('.gamma_2', '.ls2.gamma'),
                     ('storage_tokens', 'register_tokens'), ('reg_token', 'register_tokens'))
# what no backbone keeps: classifier heads, MAE's decoder, mask tokens of the self-supervised
# objectives, SAM's neck (the pyramid replaces it), DINOv3's RoPE periods (computed),
# detectron2's simple feature pyramid
_DROPPED = ('head', 'fc_norm', 'pre_logits', 'decoder', 'mask_token', 'embeddings.mask_token',
            'attn_pool.',
            'neck.', 'rope_embed.',
            'rope_embeddings.', 'local_cls_norm', 'simfp_', 'pooler.', 'classifier.',
            'cls_classifier.', 'distillation_classifier.')


def _unwrap(sd: dict) -> dict:
    for prefix in _WRAPPERS:
        if any(k.startswith(prefix) for k in sd) and not any(
                k.startswith(('blocks.', 'layers.', 'encoder.', 'embeddings.')) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


# transformers SiglipVisionModel (its MAP head, head., is dropped as classifiers are)
HF_SIGLIP_RULES = (
    ('embeddings.patch_embedding', 'patch_embed.proj'),
    ('embeddings.position_embedding.weight', 'pos_embed'), ('encoder.layers.', 'blocks.'),
    ('layer_norm1', 'norm1'), ('layer_norm2', 'norm2'), ('self_attn.out_proj', 'attn.proj'),
    ('post_layernorm', 'norm'),
)
# SigLIP's image encoder (transformers' position_embedding.weight: an embedding table without
# a [CLS] slot; its MAP head: transformers head.probe, big_vision MAPHead_0, timm attn_pool)
SIGLIP_KEYS = re.compile(r'(^|\.)(embeddings\.position_embedding\.weight|head\.probe|'
                         r'attn_pool\.latent)$|(^|/)MAPHead_0/')


def _check_siglip(model: 'ViT'):
    """SigLIP's image encoder has no [CLS] token and computes GELU's tanh approximation (as
    big_vision and transformers do): built otherwise, the model would load its weights and
    compute other features."""
    mlp = model.blocks[0].mlp
    # mlp_type not set: the activation follows the checkpoint (ViT.convert_layout)
    tanh = isinstance(mlp, Mlp) and (mlp.act.name == 'gelu_tanh' or
                                     not model.setting_explicit('mlp_act'))
    if model.cls_token is None and tanh:
        return
    want = ', '.join(w for w, ok in (('with_cls_token=False', model.cls_token is None),
                                     ("mlp_type='gelu_tanh'", isinstance(mlp, Mlp) and
                                      mlp.act.name == 'gelu_tanh')) if not ok)
    raise CheckpointMismatchError(
        f'ViT: a SigLIP image encoder checkpoint: it has no [CLS] token and its MLP computes '
        f'GELU\'s tanh approximation; build the ViT with {want} to compute its features')


# mmseg/mmpretrain VisionTransformer names (mmseg: nn.MultiheadAttention's in_proj/out_proj;
# mmpretrain: LayerScale as attn.gamma1 / ffn.gamma2 (DeiT3, DINOv2), SwiGLU as ffn.w12 / ffn.w3)
MMSEG_VIT_RULES = (
    ('patch_embed.projection', 'patch_embed.proj'),
    ('ffn.layers.0.0', 'mlp.fc1'), ('ffn.layers.1', 'mlp.fc2'),
    ('.attn.gamma1.weight', '.ls1.gamma'), ('.ffn.gamma2.weight', '.ls2.gamma'),
    ('.ffn.w12.', '.mlp.w12.'), ('.ffn.w3.', '.mlp.w3.'),
    ('layers.', 'blocks.'), ('.ln1.', '.norm1.'), ('.ln2.', '.norm2.'),
    ('attn.attn.in_proj_weight', 'attn.qkv.weight'), ('attn.attn.in_proj_bias', 'attn.qkv.bias'),
    ('attn.attn.out_proj', 'attn.proj'),
)


def convert_vit(sd: dict, model: 'ViT',
                source_config: Optional[dict] = None) -> ConvertedCheckpoint:
    """Any public ViT checkpoint -> mmvtx names; the position embedding is resized from the
    checkpoint's grid (the one transformers' ``source_config`` gives, where there is one) to
    the model's pretraining grid when they differ, ViTDet's relative position tables to the
    model's grids."""
    sd = _unwrap(sd)
    fmt = detect_vit_format(sd)
    if fmt == 'transformers-siglip':
        patch = sd.get('embeddings.patch_embedding.weight')
        if patch is not None and patch.dim() == 2:
            raise CheckpointMismatchError(
                'ViT: a SigLIP 2 NaFlex image encoder checkpoint (transformers '
                f'Siglip2VisionModel: embeddings.patch_embedding.weight {tuple(patch.shape)}, a '
                'linear map of flattened patches), whose position table is resampled bilinearly '
                'with antialiasing to each image\'s patch grid; mmvtx\'s ViT does not compute '
                'that. The fixed-resolution SigLIP 2 releases (model_type siglip) load into '
                "ViT(with_cls_token=False, mlp_type='gelu_tanh')")
    if any(SIGLIP_KEYS.search(k) for k in sd):
        _check_siglip(model)
    if fmt == 'jax':
        sd, fmt_in = _jax_to_timm(sd), 'jax'
        fmt = 'timm'
    else:
        fmt_in = fmt
    if fmt == 'transformers' or fmt == 'transformers-dinov2':
        sd = {k[len('vit.'):] if k.startswith('vit.') else k: v for k, v in sd.items()}
        sd = rename_keys(sd, HF_VIT_RULES)
        sd = _zero_key_bias(sd, ('.attention.attention.query.', '.attention.attention.key.'))
        sd = _zero_key_bias(sd, ('.attention.q_proj.', '.attention.k_proj.'))
        sd = merge_qkv(sd, ('.mlp.gate_proj.', '.mlp.up_proj.'), '.mlp.w12.')
        sd = merge_qkv(sd, ('.attention.attention.query.', '.attention.attention.key.',
                            '.attention.attention.value.'), '.attn.qkv.')
        sd = merge_qkv(sd, ('.attention.q_proj.', '.attention.k_proj.', '.attention.v_proj.'),
                       '.attn.qkv.')
        sd = {('norm.' + k[len('layernorm.'):] if k.startswith('layernorm.') else k): v
              for k, v in sd.items()}
    elif fmt == 'transformers-dinov3':
        sd = rename_keys(sd, HF_DINOV3_RULES)
        if any('.mlp.gate_proj.' in k for k in sd):  # the gated MLP (SwiGLU) of ViT-H+/7B
            sd = merge_qkv(sd, ('.mlp.gate_proj.', '.mlp.up_proj.'), '.mlp.w12.')
            sd = rename_keys(sd, (('mlp.down_proj', 'mlp.w3'),))
        else:
            sd = rename_keys(sd, (('mlp.up_proj', 'mlp.fc1'), ('mlp.down_proj', 'mlp.fc2')))
        sd = merge_qkv(sd, ('.attention.q_proj.', '.attention.k_proj.', '.attention.v_proj.'),
                          '.attn.qkv.')
    elif fmt == 'transformers-vitdet':
        sd = rename_keys(sd, HF_VITDET_RULES)
    elif fmt == 'transformers-siglip':
        sd = merge_qkv(rename_keys(sd, HF_SIGLIP_RULES), (
            '.self_attn.q_proj.', '.self_attn.k_proj.', '.self_attn.v_proj.'), '.attn.qkv.')
        if 'pos_embed' in sd and sd['pos_embed'].dim() == 2:  # N x C (an nn.Embedding)
            sd['pos_embed'] = sd['pos_embed'][None]
    elif fmt in ('sam', 'transformers-sam'):
        sd = rename_keys(sd, SAM_RULES)
    elif fmt in ('mmseg', 'mmpretrain'):
        out = {}
        for k, v in rename_keys(sd, MMSEG_VIT_RULES).items():
            if k.startswith('ln1.'):  # the final norm (final_norm=True)
                k = 'norm.' + k[len('ln1.'):]
            elif k.startswith('ln2.'):
                # mmpretrain's norm of the averaged patch tokens (out_type='avg_featmap', its
                # MAE/BEiT fine-tuned classifiers), classification's as timm's fc_norm is
                continue
            out[k] = v
        sd = out
        if 'patch_embed.proj.bias' not in sd and 'patch_embed.proj.weight' in sd:
            # mmseg's ViT has no bias in its patch embedding (patch_bias=False): a zero bias
            sd['patch_embed.proj.bias'] = sd['patch_embed.proj.weight'].new_zeros(
                sd['patch_embed.proj.weight'].shape[0])
        if fmt == 'mmseg':
            # mmseg's qkv_bias=False builds nn.MultiheadAttention(bias=False), which drops
            # the output projection's bias with the qkv one: a zero bias
            for k in [k for k in sd if k.endswith('.attn.proj.weight')]:
                bias = k[:-len('weight')] + 'bias'
                if bias not in sd:
                    sd[bias] = sd[k].new_zeros(sd[k].shape[0])
    sd = rename_keys(sd, LAYER_SCALE_RULES)
    # DINOv2's training checkpoints group the blocks in chunks: blocks.<chunk>.<i>.
    sd = {re.sub(r'^blocks\.\d+\.(\d+)\.', r'blocks.\1.', k): v for k, v in sd.items()}
    sd = merge_qkv(sd, ('.mlp.w1.', '.mlp.w2.'), '.mlp.w12.')  # DINOv3's unfused SwiGLU
    if isinstance(model.blocks[0].mlp, SwiGLU) and not any('.mlp.w12.' in k for k in sd):
        # timm's DINOv2 ViT-g (SwiGLUPacked): the fused gate and up projection as mlp.fc1
        # (the same [W1; W2] stacking), the down projection as mlp.fc2
        sd = rename_keys(sd, (('.mlp.fc1.', '.mlp.w12.'), ('.mlp.fc2.', '.mlp.w3.')))
    out = {k: v for k, v in sd.items() if not k.startswith(_DROPPED)}
    if 'dist_token' in out:
        _fold_distillation_token(out, model)
    _convert_qkv_bias(out, model)
    resized = {}  # the file's tensors that are resampled to the model's grids
    _convert_pos_embed(out, model, resized, _config_grid(source_config))
    _convert_rel_pos(out, model, resized)
    if model.layer_maps:  # maps of layers (mmseg's config): an mmvtx file's pyramid is not
        # part of this network, its encoder is
        out = {k: v for k, v in out.items() if not k.startswith('pyramid.')}
    hint = _pyramid_by_level(out, model) if fmt == 'mmvtx' and not model.layer_maps else ''
    hint = '\n'.join(h for h in (hint, _patch_size_hint(out, model), _structure_hint(out, model))
                     if h)
    if isinstance(model.norm, nn.Identity):  # final_norm=False: the release's norm is unused
        out = {k: v for k, v in out.items() if not k.startswith('norm.')}
    if 'cls_token' in out and model.cls_token is None:
        out.pop('cls_token')
    if 'register_tokens' in out and out['register_tokens'].numel() == 0 and \
            model.register_tokens is None:
        # transformers' DINOv3 and DINOv2-with-registers keep a 1 x 0 x C tensor when
        # built without registers: nothing to load
        out.pop('register_tokens')
    if 'norm.weight' not in out and not isinstance(model.norm, nn.Identity):
        # the network the file comes from had no final norm (mmseg's and mmpretrain's default
        # final_norm=False): with one at its init the features are not that network's
        log_once(f'ViT: the {fmt_in} checkpoint has no final norm (norm.*), so the model\'s '
                 '(final_norm=True) keeps its init (weight 1, bias 0) and normalises features '
                 'the source network did not: build the ViT with final_norm=False to compute '
                 'that network\'s features', 'WARNING')
    # an mmvtx checkpoint brings its pyramid: levels the file lacks are not left at init
    may_miss = ([] if fmt == 'mmvtx' else ['pyramid']) + \
        ([] if 'norm.weight' in out else ['norm'])
    if not any('.rel_pos_' in k for k in out):  # ViTDet: zero-initialised without them
        may_miss += [f'blocks.{i}.attn.rel_pos_{a}' for i in range(len(model.blocks))
                     for a in 'hw']
    return ConvertedCheckpoint(out, fmt_in, may_miss, hint, resized)


def _zero_key_bias(sd: dict, names: Tuple[str, str]) -> dict:
    """A zero key bias beside a query bias where the key projection has none (BEiT's and
    data2vec's attention: biases on queries and values only), so that the three projections
    merge into one ``qkv`` (the key bias shifts every logit of a query alike: none and zero
    compute the same)."""
    query, key = names
    for k in [k for k in sd if query in k and k.endswith('.bias')]:
        kb = k.replace(query, key)
        if kb not in sd and kb[:-len('bias')] + 'weight' in sd:
            sd[kb] = torch.zeros_like(sd[k])
    return sd


def _patch_size_hint(out: dict, model: 'ViT') -> str:
    """What to do where the checkpoint's patch embedding has another kernel than the model's
    (DINOv2's patch 14 given to a patch-16 ViT: the mismatch named only the tensor's shape):
    the patch size to build with, or ''."""
    weight = out.get('patch_embed.proj.weight')
    own = model.patch_embed.proj.weight
    if weight is None or weight.dim() != 4 or weight.shape[-2:] == own.shape[-2:]:
        return ''
    kh, kw = weight.shape[-2:]
    theirs = f'  hint: the checkpoint\'s patches are {kh}x{kw} pixels, the model\'s ' \
        f'{own.shape[-2]}x{own.shape[-1]}'
    if kh != kw:
        return f'{theirs}: non-square patches, which this ViT does not build'
    return (f'{theirs}: build the ViT with patch_size={kh} (DINOv2: arch=\'dinov2-s|b|l|g\'); '
            'its token map is resampled to the stride-16 grid, so the pyramid stays at strides '
            '4/8/16/32')


def _structure_hint(out: dict, model: 'ViT') -> str:
    """The constructor arguments that give the model the checkpoint's structure where it
    differs (a BEiT / data2vec / DeiT-III file's LayerScale given to a default ViT: the mismatch
    listed ``blocks.N.ls1.gamma`` keys, naming no argument), or ''."""
    want = []
    has_ls = any(re.search(r'\.ls[12]\.gamma$', k) for k in out)
    if has_ls != isinstance(model.blocks[0].ls1, LayerScale):
        want.append('layer_scale_init=0.1 (any value: the checkpoint\'s LayerScale replaces it)'
                    if has_ls else 'layer_scale_init=None (the checkpoint has no LayerScale)')
    if 'cls_token' not in out and model.cls_token is not None and 'pos_embed' in out:
        want.append('with_cls_token=False (the checkpoint has no [CLS] token)')
    attn = model.blocks[0].attn
    biases = [k for k in out if re.match(r'blocks\.\d+\.attn\.(qkv\.bias|[qv]_bias)$', k)]
    own_bias = attn.qkv.bias is not None or attn.q_bias is not None
    if biases and not own_bias:
        want.append("qkv_bias=True (or 'qv': the checkpoint's attention has biases)")
    elif not biases and own_bias and any(k.endswith('.attn.qkv.weight') for k in out):
        want.append('qkv_bias=False (the checkpoint\'s attention has no biases)')
    if not want:
        return ''
    return '  hint: build the ViT with ' + '; '.join(want)


def _fold_distillation_token(out: dict, model: 'ViT'):
    """A distilled DeiT (the authors' and timm's ``dist_token``, transformers' ``DeiTModel``):
    [CLS], the distillation token, then the patches, each with a position (two extra slots).
    The distillation token attends as a register token does: it loads as the model's one
    register token with its position added to it (as timm folds DINOv2's [CLS] position into
    its token), so that a ViT with ``num_register_tokens=1`` computes the release's features."""
    dist = out.pop('dist_token')
    if model.num_register_tokens != 1 or model.cls_token is None:
        raise CheckpointMismatchError(
            'ViT: a distilled DeiT checkpoint (a distillation token after [CLS], two extra '
            'positions): build the ViT with num_register_tokens=1 (and with_cls_token=True), so '
            'that the distillation token loads as its register token, its position added to '
            'it, and the model computes the release\'s features')
    pos = out.get('pos_embed')
    if pos is not None and pos.dim() == 3 and pos.shape[1] >= 2:
        dist = dist + pos[:, 1:2]
        out['pos_embed'] = torch.cat([pos[:, :1], pos[:, 2:]], 1)
    out['register_tokens'] = dist.reshape(1, 1, -1)


def _pyramid_by_level(out: dict, model: 'ViT') -> str:
    """mmvtx's pyramid names a level by its position in ``out_indices``
    (``pyramid.scales.<position>``), so a file saved with other ``out_indices`` holds its levels
    under other positions. The levels with weights are told apart by their layers (stride 4: a
    sequence, ``scales.<p>.<n>.*``; stride 8: one deconvolution, ``scales.<p>.weight/bias``;
    strides 16 and 32 have none): they are moved to the model's positions, so that no level
    receives another's weights and ``strict=False`` loads the levels both have. Returns what
    to do if the levels with weights differ (for the mismatch error), else ''."""
    position = {level: i for i, level in enumerate(model.out_indices)}
    found = set()
    for k in [k for k in out if k.startswith('pyramid.scales.')]:
        _, rest = k[len('pyramid.scales.'):].split('.', 1)
        level = 0 if rest.split('.', 1)[0].isdigit() else 1
        found.add(level)
        v = out.pop(k)
        out[f'pyramid.scales.{position[level]}.{rest}' if level in position else k] = v
    wanted = {level for level in model.out_indices if level < 2}
    if found == wanted:
        return ''
    names = {0: 'stride 4', 1: 'stride 8'}
    have = ', '.join(names[i] for i in sorted(found)) or 'none'
    return ('  hint: this is an mmvtx ViT checkpoint whose feature pyramid was built for other '
            f'out_indices (its levels with weights: {have}; the model returns levels '
            f'{model.out_indices}). Build the model with the out_indices it was saved with '
            "(a file of tools/model_converters/vit2mmvtx.py: convert again with --options "
            "'{\"out_indices\": [...]}'), or load it with strict=False (init_cfg=dict("
            "type='Pretrained', checkpoint=..., strict=False)): the encoder and the pyramid "
            'levels in both then load, the others keep their init.')


def _convert_qkv_bias(out: dict, model: 'ViT'):
    """DINOv3's masked key bias applied; a fused ``qkv.bias`` split into the query and value
    biases of a ``qkv_bias='qv'`` model, or those joined (zero key bias) for a plain one."""
    for k in [k for k in out if k.endswith('.attn.qkv.bias_mask')]:
        mask = out.pop(k)
        bias = k[:-len('_mask')]
        if bias in out:
            out[bias] = out[bias] * mask.to(out[bias].dtype)
    qv_model = model.blocks[0].attn.q_bias is not None
    for k in [k for k in out if k.endswith('.attn.qkv.bias')]:
        if qv_model:
            q, _, v = out.pop(k).chunk(3)
            out[k[:-len('qkv.bias')] + 'q_bias'], out[k[:-len('qkv.bias')] + 'v_bias'] = q, v
    for k in [k for k in out if k.endswith('.attn.q_bias')]:
        if not qv_model:
            head = k[:-len('q_bias')]
            q, v = out.pop(k), out.pop(head + 'v_bias')
            out[head + 'qkv.bias'] = torch.cat([q, torch.zeros_like(q), v])


def _convert_pos_embed(out: dict, model: 'ViT', resized: dict,
                       known: Optional[Tuple[int, int]] = None):
    """``known``: the file's grid as its config.json gives it (None: not known)."""
    if 'pos_embed' not in out:
        return
    pos = out['pos_embed']
    if pos.dim() == 4:  # SAM: 1 x h x w x C, no [CLS] slot
        pos = pos.flatten(1, 2)
    if model.pos_embed is None:
        out['pos_embed'] = pos
        return
    if pos.shape == model.pos_embed.shape and (
            out['pos_embed'].dim() == 4 or known in (None, model.pretrain_grid)):
        if known is None and _ambiguous_grid(model):
            gh, gw = model.pretrain_grid
            side = math.isqrt(gh * gw)
            log_once(f'ViT: the checkpoint\'s pos_embed {tuple(pos.shape)} fits the model\'s '
                     f'{gh}x{gw} grid and a square {side}x{side} one alike: read as {gh}x{gw} '
                     '(a file saved from this model). A release pretrained at a square size '
                     f'(e.g. {side * model.patch_size}x{side * model.patch_size}) is read right '
                     'by a ViT built with img_size set to it (inputs of other sizes are '
                     'resampled to at run time)', 'WARNING')
        out['pos_embed'] = pos
        return
    n_extra = int(model.with_cls_token)
    grid, src_extra = _pos_grid(out['pos_embed'], model, 'cls_token' in out, known)
    if src_extra > n_extra:  # the model has no [CLS]: drop its position
        pos = pos[:, src_extra - n_extra:]
    elif src_extra < n_extra:  # the checkpoint has no [CLS] position: a zero one
        pos = torch.cat([pos.new_zeros(1, n_extra - src_extra, pos.shape[2]), pos], 1)
    # resampled as the model resamples at run time (DINOv2's offset / antialiasing), so that at
    # an input of img_size the embedding is the one the family's own code uses; in float32,
    # and kept so (loading casts to the model's dtype: a half-precision file's embedding
    # rounded back to its dtype would be off by that rounding)
    if grid != model.pretrain_grid:  # (a [CLS] slot dropped or added is the same network)
        resized['pos_embed'] = out['pos_embed']
        pos = pos.float()
    out['pos_embed'] = resize_pos_embed(pos, grid, model.pretrain_grid, n_extra,
                                        **model.interpolate)


def _config_grid(config: Optional[dict]) -> Optional[Tuple[int, int]]:
    """The position embedding's patch grid that transformers' config.json gives (``image_size``
    over ``patch_size``; VitDet's ``pretrain_image_size``), or None."""
    if not config:
        return None
    size = config.get('pretrain_image_size') or config.get('image_size')
    patch = config.get('patch_size')
    pair = (lambda v: tuple(v) if isinstance(v, (list, tuple)) and len(v) == 2 else (v, v))
    try:
        (h, w), (ph, pw) = pair(size), pair(patch)
        grid = (int(h) // int(ph), int(w) // int(pw))
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return grid if min(grid) > 0 else None


def _ambiguous_grid(model: 'ViT') -> bool:
    """Whether the model's grid is not square but holds a square number of positions."""
    gh, gw = model.pretrain_grid
    return gh != gw and math.isqrt(gh * gw) ** 2 == gh * gw


def _pos_grid(pos: torch.Tensor, model: 'ViT', has_cls: bool,
              known: Optional[Tuple[int, int]] = None) -> Tuple[Tuple[int, int], int]:
    """The patch grid ``(h, w)`` of a checkpoint's position embedding and how many slots
    precede it (a [CLS] position or none): SAM's ``1 x h x w x C`` says it; a sequence is the
    grid its config.json gives (``known``), the model's own pretraining grid or a square one,
    after a [CLS] slot first if the checkpoint has a [CLS] token (some, e.g. DeiT-III, keep
    none for it), else after none first."""
    if pos.dim() == 4:
        return (pos.shape[1], pos.shape[2]), 0
    n = pos.shape[1]
    gh, gw = model.pretrain_grid
    for extra in ((1, 0) if has_cls else (0, 1)):
        side = math.isqrt(max(n - extra, 0))
        for grid in (known or (gh, gw), (gh, gw), (side, side)):
            if grid[0] * grid[1] == n - extra > 0:
                return grid, extra
    raise CheckpointMismatchError(
        f'ViT: the checkpoint\'s pos_embed {tuple(pos.shape)} holds {n} positions: not a square '
        f'patch grid (with or without a [CLS] slot) nor the model\'s {gh}x{gw} grid, so its '
        'layout is unknown; set img_size=(h, w) to the size it was pretrained at')


def _convert_rel_pos(out: dict, model: 'ViT', resized: dict):
    """Relative position tables learned for another grid, resized (linear, as ViTDet does at
    run time) to the model's, in float32 (as the position embedding)."""
    own = dict(model.named_parameters())
    for k in [k for k in out if '.attn.rel_pos_' in k]:
        if k in own and out[k].shape[1] == own[k].shape[1] and \
                out[k].shape[0] != own[k].shape[0]:
            resized[k] = out[k]
            out[k] = resize_rel_pos_table(out[k].float(), own[k].shape[0])


ViT.presets = _family_presets()
ViT.checkpoint_formats = VIT_FORMATS
