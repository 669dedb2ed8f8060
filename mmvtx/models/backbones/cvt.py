"""CvT, the Convolutional vision Transformer (Wu et al., 2021), as a multi-scale backbone.

As the paper describes it: each of three stages starts with a convolutional token
embedding (:class:`ConvTokenEmbedding`: an overlapping convolution on the 2-D token map, kernel 7
stride 4 first, then kernel 3 stride 2, followed by LayerNorm), and its blocks use a
convolutional projection for attention (:class:`ConvProjection`: depthwise 3x3 convolution +
BatchNorm, then a linear map; stride 1 for queries, 2 for keys and values, so the attention cost
drops while the output length stays the same). No position embedding; the [CLS] token joins in
the last stage only; widths grow as resolution shrinks.

Dense prediction: the stage maps come out at strides 4, 8 and 16; the stride-32 level is a 2x2
max-pool (ceil mode) of the stride-16 map, parameter-free as ViTDet's P5 and FPN's extra levels,
so that the FPN/UPerNet configs of Swin fit with only ``in_channels`` changed.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from mmvtx.registry import MODELS
from mmvtx.utils.checkpoint import ConvertedCheckpoint, KeyRule, detect_format, rename_keys
from mmvtx.utils.logging import log_once
from ..layers import DropPath, Linear, Mlp, attention, drop_path_rates, pad_hw
from ..layers.init import init_transformer_weights, trunc_normal_
from ..layers.mlp import Activation
from ..layers.norm import LayerNorm, LayerNorm2d
from .base import VisionBackbone, forward_block, stage_depths


class ConvTokenEmbedding(nn.Module):
    """Overlapping convolution on the 2-D token map, then LayerNorm over channels.
    ``B x C x H x W`` -> ``B x C' x ceil(H/s) x ceil(W/s)`` (inputs padded to a multiple of s)."""

    def __init__(self, in_channels: int, embed_dim: int, kernel_size: int, stride: int,
                 padding: int):
        super().__init__()
        self.stride = stride
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size, stride, padding)
        self.norm = LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(pad_hw(x, self.stride))
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvProjection(nn.Module):
    """Depthwise 3x3 convolution + BatchNorm on the token map (the ``dw_bn`` projection);
    returns tokens ``B x N' x C``."""

    def __init__(self, dim: int, kernel_size: int = 3, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size, stride, kernel_size // 2, groups=dim,
                              bias=False)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.bn.training and y.shape[0] * y.shape[2] * y.shape[3] == 1:
            # batch statistics of a single value per channel do not exist (PyTorch refuses
            # them with a message that names neither the layer nor a way out)
            raise ValueError(
                f'CvT: a training batch of {x.shape[0]} image(s) whose token map is '
                f'{x.shape[2]}x{x.shape[3]} leaves the BatchNorm of a convolutional projection '
                'one value per channel (the 1x1 keys and values of a map of at most 2x2: the '
                'last stage of inputs up to 32 px), so no batch statistics: train with 2 or '
                'more images per batch, larger images, or norm_eval=True (running statistics)')
        return self.bn(y).flatten(2).transpose(1, 2)


class ConvAttention(nn.Module):
    """Multi-head attention with convolutional projections of Q (stride 1) and K, V (stride 2).

    The scale is ``dim ** -0.5`` with the full width, as in the released code (and transformers),
    not the per-head width. The [CLS] token, if any, skips the convolutions and is prepended to
    Q, K and V."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, kernel_size: int = 3,
                 stride_q: int = 1, stride_kv: int = 2, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.scale = dim ** -0.5
        self.conv_proj_q = ConvProjection(dim, kernel_size, stride_q)
        self.conv_proj_k = ConvProjection(dim, kernel_size, stride_kv)
        self.conv_proj_v = ConvProjection(dim, kernel_size, stride_kv)
        self.proj_q = Linear(dim, dim, bias=qkv_bias)
        self.proj_k = Linear(dim, dim, bias=qkv_bias)
        self.proj_v = Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int], num_cls: int) -> torch.Tensor:
        B, N, C = x.shape
        H, W = hw
        cls, x = x[:, :num_cls], x[:, num_cls:]
        x = x.transpose(1, 2).reshape(B, C, H, W)
        q, k, v = self.conv_proj_q(x), self.conv_proj_k(x), self.conv_proj_v(x)
        if num_cls:
            q, k, v = (torch.cat([cls, t], dim=1) for t in (q, k, v))
        heads, hd = self.num_heads, C // self.num_heads
        # (B, heads, tokens, head_dim); keys/values have about a quarter of the query tokens
        q = self.proj_q(q).unflatten(-1, (heads, hd)).transpose(1, 2)
        k = self.proj_k(k).unflatten(-1, (heads, hd)).transpose(1, 2)
        v = self.proj_v(v).unflatten(-1, (heads, hd)).transpose(1, 2)
        x = attention(q, k, v, scale=self.scale,
                      dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))


class CvtBlock(nn.Module):
    """Pre-norm block: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path: float = 0.0,
                 act: str = 'gelu'):
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = ConvAttention(dim, num_heads, qkv_bias, attn_drop=attn_drop_rate,
                                  proj_drop=drop_rate)
        self.drop_path = DropPath(drop_path)
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act)
        self.mlp_drop = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int], num_cls: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw, num_cls))
        return x + self.drop_path(self.mlp_drop(self.mlp(self.norm2(x))))


class CvtStage(nn.Module):
    def __init__(self, in_channels: int, dim: int, depth: int, num_heads: int,
                 patch_size: int, patch_stride: int, patch_padding: int, with_cls_token: bool,
                 drop_paths: Sequence[float], with_cp: bool = False, **block_kwargs):
        super().__init__()
        self.with_cp = with_cp
        self.patch_embed = ConvTokenEmbedding(in_channels, dim, patch_size, patch_stride,
                                              patch_padding)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if with_cls_token else None
        self.blocks = nn.ModuleList([CvtBlock(dim, num_heads, drop_path=drop_paths[i],
                                              **block_kwargs) for i in range(depth)])

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        x = self.patch_embed(x)
        B, C, H, W = x.shape
        x = x.flatten(2).transpose(1, 2)
        num_cls = 0
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)
            num_cls = 1
        for block in self.blocks:
            x = forward_block(block, x, (H, W), num_cls, with_cp=self.with_cp)
        cls = x[:, 0] if num_cls else None
        return x[:, num_cls:].transpose(1, 2).reshape(B, C, H, W), cls


# the MLP activations of CvT's releases: transformers' GELU, the authors' QuickGELU
CVT_ACTS = ('gelu', 'quick_gelu')


@MODELS.register_module()
class CvT(VisionBackbone):
    """CvT backbone: NCHW maps at strides 4, 8, 16 (the three stages) and 32 (max-pool).

    Args:
        arch: ``13`` (64/192/384, depths 1/2/10, heads 1/3/6), ``21`` (depths 1/4/16), ``w24``
            (192/768/1024, depths 2/2/20, heads 3/12/16) or a dict with ``embed_dims``,
            ``depths``, ``num_heads``; explicit arguments override it.
        act: ``gelu`` (transformers), ``quick_gelu`` (the authors' released models), or
            ``auto``: GELU, switched to QuickGELU when a checkpoint in the authors' naming is
            loaded, so that the converted model computes what its source computed. The
            activation in use is kept in the ``mlp_act`` buffer, so the run's own checkpoints
            bring it back (``tools/test.py``, ``--resume``).
        out_indices: levels (strides 4, 8, 16, 32) to return.
        output_cls_token: also return the last stage's [CLS] token (``B x C``) after the maps.
        out_norms: a LayerNorm on each returned map (new layers, kept at their init when a
            released checkpoint loads); the raw stage maps otherwise, as the released models.
        frozen_stages: -1 none; 0 the first token embedding; k also the first k stages (and
            their ``out_norms``).
        drop_path_rate, with_cp, norm_eval (BatchNorm of the projections in eval mode),
        init_cfg: as in every mmvtx backbone.
    """
    family = 'CvT'
    hf_model_types = ('cvt',)
    input_conv = 'stages.0.patch_embed.proj.weight'
    arch_zoo = {
        '13': dict(embed_dims=(64, 192, 384), depths=(1, 2, 10), num_heads=(1, 3, 6)),
        '21': dict(embed_dims=(64, 192, 384), depths=(1, 4, 16), num_heads=(1, 3, 6)),
        'w24': dict(embed_dims=(192, 768, 1024), depths=(2, 2, 20), num_heads=(3, 12, 16)),
    }
    arch_aliases = {'cvt-13': '13', 'cvt-21': '21', 'cvt-w24': 'w24', 'cvt13': '13',
                    'cvt21': '21', 'cvtw24': 'w24'}
    patch_sizes = (7, 3, 3)
    patch_strides = (4, 2, 2)
    patch_paddings = (2, 1, 1)

    def __init__(self, arch: Union[str, int, dict] = '13',
                 embed_dims: Optional[Sequence[int]] = None,
                 depths: Optional[Sequence[int]] = None,
                 num_heads: Optional[Sequence[int]] = None, in_channels: int = 3,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1, act: str = 'auto',
                 out_indices: Sequence[int] = (0, 1, 2, 3), output_cls_token: bool = False,
                 out_norms: bool = False,
                 frozen_stages: int = -1, with_cp: bool = False, norm_eval: bool = False,
                 init_cfg: Optional[dict] = None,
                 pretrained: Optional[str] = None, **kwargs):
        super().__init__(init_cfg=self.pretrained_init_cfg(pretrained, init_cfg))
        self.refuse_unknown_arguments(kwargs)
        cfg = self.resolve_arch(str(arch) if isinstance(arch, int) and not isinstance(arch, bool)
                                else arch,
                                embed_dims=embed_dims, depths=depths, num_heads=num_heads)
        dims, depths, heads = (self.check_ints(k, cfg[k], length=3)
                               for k in ('embed_dims', 'depths', 'num_heads'))
        self.check_int('in_channels', in_channels)
        self.check_positive('mlp_ratio', mlp_ratio)
        self.check_rates(drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                         drop_path_rate=drop_path_rate)
        self.check_heads(dims, heads)
        self.check_bools(qkv_bias=qkv_bias, output_cls_token=output_cls_token,
                         out_norms=out_norms, with_cp=with_cp, norm_eval=norm_eval)
        self.check_hidden(dims, mlp_ratio)
        if act not in ('auto',) + CVT_ACTS:
            raise ValueError(f"CvT: act must be 'auto', 'gelu' or 'quick_gelu', not {act!r}")
        self.check_frozen_stages(frozen_stages, 3)
        self.arch_settings = dict(embed_dims=dims, depths=depths, num_heads=heads)
        self.act = act
        self.out_indices = self.check_out_indices(out_indices, 4)
        self.output_cls_token = output_cls_token
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        dpr = drop_path_rates(drop_path_rate, depths)
        self.stages = nn.ModuleList([
            CvtStage(in_channels if i == 0 else dims[i - 1], dims[i], depths[i], heads[i],
                     self.patch_sizes[i], self.patch_strides[i], self.patch_paddings[i],
                     with_cls_token=i == 2, drop_paths=dpr[i], with_cp=with_cp,
                     mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_rate=drop_rate,
                     attn_drop_rate=attn_drop_rate,
                     act='quick_gelu' if act == 'quick_gelu' else 'gelu')
            for i in range(3)])
        self.num_features = (dims[0], dims[1], dims[2], dims[2])
        # optional LayerNorm on each returned map (as Swin's outputs), not in the released models
        self.out_norms = nn.ModuleList([LayerNorm2d(self.num_features[i]) for i in range(3)]) \
            if out_norms else None
        self._register_setting('mlp_act', CVT_ACTS,
                               'quick_gelu' if act == 'quick_gelu' else 'gelu',
                               explicit=act != 'auto')
        self._freeze_stages()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        self.check_input(x)
        maps, cls = [], None
        last_stage = min(self.out_indices[-1], 2) if not self.output_cls_token else 2
        for i, stage in enumerate(self.stages[:last_stage + 1]):
            x, cls = stage(x)
            maps.append(x)
        if self.out_norms is not None:
            maps = [norm(m) for norm, m in zip(self.out_norms, maps)]
        if 3 in self.out_indices:
            maps.append(F.max_pool2d(maps[2], 2, ceil_mode=True))
        # contiguous NCHW: the stage maps are channels-last views of the token sequence, and
        # mmcv's CPU RoIAlign reads its input as contiguous NCHW whatever its strides
        outs = tuple(maps[i].contiguous() for i in self.out_indices)
        return outs + ((cls,) if self.output_cls_token else ())

    def set_activation(self, act: str):
        """Sets every MLP activation (``gelu`` or ``quick_gelu``); modules stay as they are."""
        self.set_setting('mlp_act', act)

    def _apply_setting(self, name: str, value: str):
        for m in self.modules():
            if isinstance(m, Activation):
                m.name = value

    def _applied_setting(self, name: str) -> str:
        return next(m.name for m in self.modules() if isinstance(m, Activation))

    # -------------------------------------------------------------------- training behaviour
    def _unreached_modules(self) -> list:
        last_stage = min(self.out_indices[-1], 2) if not self.output_cls_token else 2
        return list(self.stages[last_stage + 1:]) + self.output_modules(
            range(len(self.out_indices)))

    def output_modules(self, read) -> list:
        if self.out_norms is None:
            return []
        levels = {self.out_indices[p] for p in read}
        if 3 in levels:  # the stride-32 map is pooled from the normed stride-16 one
            levels.add(2)
        return [norm for i, norm in enumerate(self.out_norms) if i not in levels]

    def _frozen_modules(self) -> list:
        frozen = [self.stages[0].patch_embed]
        frozen += [self.stages[i] for i in range(self.frozen_stages)]
        if self.out_norms is not None:  # a frozen stage's map stays as it was (Swin's norm_i)
            frozen += [self.out_norms[i] for i in range(self.frozen_stages)]
        return frozen

    def _default_init(self):
        init_transformer_weights(self)
        trunc_normal_(self.stages[2].cls_token, std=0.02)

    def checkpoint_architecture(self, sd: dict) -> dict:
        """(A head count changes no shape: not shown.)"""
        depths = stage_depths(sd)
        dims = tuple(sd[f'stages.{i}.patch_embed.proj.weight'].shape[0]
                     for i in range(len(depths)))
        return dict(embed_dims=dims, depths=depths)

    def convert_layout(self, state_dict: dict,
                       source_config: Optional[dict] = None) -> ConvertedCheckpoint:
        converted = convert_cvt(state_dict)
        act = self.recorded_setting('mlp_act', converted) or (
            'quick_gelu' if converted.source == 'official' else 'gelu')
        if self.act == 'auto':
            if act == 'quick_gelu':
                log_once(f'CvT: {converted.source} checkpoint: using the authors\' QuickGELU '
                         'activation (act="auto")')
        else:
            if self.act != act:
                log_once(f'CvT: act={self.act!r} set explicitly, unlike the {converted.source} '
                         f'checkpoint ({act})', 'WARNING')
            act = self.act
        # the activation travels in the converted weights; loading them applies it
        converted.state_dict['mlp_act'] = self.setting_record('mlp_act', act)
        return converted


# ------------------------------------------------------------------------- checkpoint formats
HF_CVT_RULES = (
    ('encoder.stages.', 'stages.'),
    ('embedding.convolution_embeddings.projection', 'patch_embed.proj'),
    ('embedding.convolution_embeddings.normalization', 'patch_embed.norm'),
    ('.layers.', '.blocks.'),
    ('attention.attention.convolution_projection_query.convolution_projection.convolution',
     'attn.conv_proj_q.conv'),
    ('attention.attention.convolution_projection_query.convolution_projection.normalization',
     'attn.conv_proj_q.bn'),
    ('attention.attention.convolution_projection_key.convolution_projection.convolution',
     'attn.conv_proj_k.conv'),
    ('attention.attention.convolution_projection_key.convolution_projection.normalization',
     'attn.conv_proj_k.bn'),
    ('attention.attention.convolution_projection_value.convolution_projection.convolution',
     'attn.conv_proj_v.conv'),
    ('attention.attention.convolution_projection_value.convolution_projection.normalization',
     'attn.conv_proj_v.bn'),
    ('attention.attention.projection_query', 'attn.proj_q'),
    ('attention.attention.projection_key', 'attn.proj_k'),
    ('attention.attention.projection_value', 'attn.proj_v'),
    ('attention.output.dense', 'attn.proj'),
    ('intermediate.dense', 'mlp.fc1'), ('output.dense', 'mlp.fc2'),
    ('layernorm_before', 'norm1'), ('layernorm_after', 'norm2'),
)


CVT_FORMATS = (
    KeyRule('transformers', prefixes=('encoder.stages.', 'cvt.encoder.stages.')),
    KeyRule('official', prefixes=('stage0.',)),
    KeyRule('mmvtx', prefixes=('stages.0.patch_embed',)),
)


def detect_cvt_format(sd: dict) -> str:
    return detect_format(sd, CVT_FORMATS, 'CvT', 'microsoft/CvT, transformers CvtModel or mmvtx')


def convert_cvt(sd: dict) -> ConvertedCheckpoint:
    """microsoft/CvT (``stage{i}.``) or transformers ``CvtModel`` names -> mmvtx names."""
    fmt = detect_cvt_format(sd)
    if fmt == 'transformers':
        sd = {k[len('cvt.'):] if k.startswith('cvt.') else k: v for k, v in sd.items()
              if not k.startswith(('classifier.', 'layernorm.'))}
        sd = rename_keys(sd, HF_CVT_RULES)
    elif fmt == 'official':
        sd = {'stages.' + k[len('stage'):]: v for k, v in sd.items()
              if k.startswith('stage')}
    return ConvertedCheckpoint(dict(sd), fmt, ('out_norms',))


CvT.checkpoint_formats = CVT_FORMATS
