"""Vision Transformer (Dosovitskiy et al., 2021) as a multi-scale backbone.

As the paper describes it: patch embedding by a convolution whose kernel and
stride are the patch size, a [CLS] token prepended, a learned position embedding added (resized
to the actual patch grid), N pre-norm encoder layers and a final LayerNorm. A plain ViT has a
single stride-16 map; :class:`SimpleFeaturePyramid` (ViTDet) turns it into maps at strides 4, 8,
16 and 32 (two 2x deconvolutions, one, identity, max-pool), either all from the last layer or
each from a chosen intermediate layer (mmseg's UPerNet-ViT recipe takes layers 3/6/9/12).
Optional window attention in all but a few global blocks (ViTDet) for high resolutions, on the
window geometry Swin uses (:mod:`..layers.window`; no shift).
"""
import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn

from mmvtx.registry import MODELS
from mmvtx.utils.checkpoint import (CheckpointMismatchError, ConvertedCheckpoint, KeyRule,
                                    detect_format, merge_qkv, rename_keys)
from ..layers import DropPath, Linear, Mlp, PatchEmbed, attention, drop_path_rates
from ..layers.init import init_transformer_weights, trunc_normal_
from ..layers.norm import LayerNorm2d
from ..layers.pos_embed import resize_pos_embed
from ..layers.window import (WindowGeometry, WindowGeometryCache, tokens_to_windows,
                             windows_to_tokens)
from .base import VisionBackbone, forward_block


class Attention(nn.Module):
    """Multi-head self-attention over a token sequence, or within the windows of a patch map
    (ViTDet): ``forward(x, geo)`` with a :class:`WindowGeometry` gathers the projected tokens of
    the ``h x w`` map into ``M x M`` windows (the map zero-padded to multiples of ``M``, as
    ViTDet pads: padded slots get the projection of a zero token and take part as keys), attends
    per window and gathers back before the output projection."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, geo: Optional[WindowGeometry] = None) -> torch.Tensor:
        """``x``: ``B x L x C`` tokens (with ``geo``: the ``h*w`` patch tokens of its map)."""
        B, L, C = x.shape
        qkv = self.qkv(x)
        if geo is not None:
            gather = geo.gathers[0]
            qkv = tokens_to_windows(qkv, gather, self.qkv.bias)
            qkv = qkv.view(-1, geo.tokens_per_window, 3 * C)  # (B * nW) windows
        b, n = qkv.shape[:2]
        # qkv with shape (3, b, heads, n, head_dim)
        q, k, v = qkv.view(b, n, 3, self.num_heads, self.head_dim).permute(
            2, 0, 3, 1, 4).unbind(0)
        y = attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        y = y.transpose(1, 2).reshape(b, n, C)
        if geo is not None:
            y = windows_to_tokens(y.view(B, -1, C), gather)
        return self.proj_drop(self.proj(y))


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer: ``x + MSA(LN(x))``, then ``x + MLP(LN(x))``.

    With ``window_size > 0`` the attention runs inside non-overlapping windows of the patch
    map (ViTDet); the [CLS] token, if any, is not part of a windowed layer's input."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path: float = 0.0,
                 window_size: int = 0, layer_norm_eps: float = 1e-6):
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop_rate, drop_rate)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.mlp_drop = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor, geo: Optional[WindowGeometry] = None) -> torch.Tensor:
        """``geo``: the window geometry of the patch map, for a windowed layer."""
        x = x + self.drop_path(self.attn(self.norm1(x), geo if self.window_size > 0 else None))
        return x + self.drop_path(self.mlp_drop(self.mlp(self.norm2(x))))


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
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
                self.channels.append(dim)
            else:
                raise ValueError(f'SimpleFeaturePyramid: stride {s} is not one of 4, 8, 16, 32')
        self.scales = nn.ModuleList(layers)

    def forward(self, feats: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        """``feats``: one stride-16 ``B x C x h x w`` map per output level (the same one for
        all levels in ViTDet's layout)."""
        return tuple(layer(f) for layer, f in zip(self.scales, feats))


@MODELS.register_module()
class ViT(VisionBackbone):
    """Vision Transformer backbone with a built-in simple feature pyramid.

    Args:
        arch: ``small`` (384/12/6), ``base`` (768/12/12), ``large`` (1024/24/16) or a dict with
            ``embed_dims``, ``num_layers``, ``num_heads``; explicit arguments override it.
        img_size: the pretraining size; the position embedding covers its patch grid and is
            resized (bicubic, [CLS] position kept) to the grid of each input.
        patch_size: kernel and stride of the patch embedding (16).
        out_indices: which of the pyramid levels (strides 4, 8, 16, 32) to return.
        feature_layers: ``None`` (ViTDet: every level from the last layer), or one encoder
            layer index per level of ``out_indices`` (mmseg's UPerNet-ViT: ``(2, 5, 8, 11)``).
        with_cls_token: prepend the [CLS] token (dropped from the maps).
        output_cls_token: also return the final [CLS] token (``B x C``) after the maps.
        window_size: >0 runs the layers not in ``global_attn_indexes`` with attention inside
            ``window_size x window_size`` windows of the patch map (ViTDet: 14 with global
            layers 2, 5, 8, 11); the [CLS] token is then not used.
        final_norm: LayerNorm on the last layer's output.
        frozen_stages: -1 none; 0 the patch embedding, [CLS] and position embedding; k also
            the first k encoder layers.
        drop_path_rate, with_cp, norm_eval, init_cfg: as in every mmvtx backbone.
    """
    arch_zoo = {
        'small': dict(embed_dims=384, num_layers=12, num_heads=6),
        'base': dict(embed_dims=768, num_layers=12, num_heads=12),
        'large': dict(embed_dims=1024, num_layers=24, num_heads=16),
    }
    arch_aliases = {'s': 'small', 'b': 'base', 'l': 'large'}

    def __init__(self, arch: Union[str, dict] = 'base', embed_dims: Optional[int] = None,
                 num_layers: Optional[int] = None, num_heads: Optional[int] = None,
                 img_size: int = 224, patch_size: int = 16, in_channels: int = 3,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 feature_layers: Optional[Sequence[int]] = None, with_cls_token: bool = True,
                 output_cls_token: bool = False, window_size: int = 0,
                 global_attn_indexes: Sequence[int] = (), final_norm: bool = True,
                 layer_norm_eps: float = 1e-6, frozen_stages: int = -1, with_cp: bool = False,
                 norm_eval: bool = False, init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        cfg = self.resolve_arch(arch, embed_dims=embed_dims, num_layers=num_layers,
                                num_heads=num_heads)
        dim, depth, heads = (self.check_int(k, cfg[k]) for k in ('embed_dims', 'num_layers',
                                                                  'num_heads'))
        self.check_heads([dim], [heads])
        for name, value in dict(in_channels=in_channels, patch_size=patch_size).items():
            self.check_int(name, value)
        self.check_int('img_size', img_size, patch_size)  # the pretraining grid: >= 1 patch
        self.check_int('window_size', window_size, 0)
        self.check_positive('mlp_ratio', mlp_ratio)
        self.check_positive('layer_norm_eps', layer_norm_eps)
        self.check_rates(drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                         drop_path_rate=drop_path_rate)
        if global_attn_indexes and window_size == 0:
            raise ValueError(f'ViT: global_attn_indexes={tuple(global_attn_indexes)} needs '
                             'window_size > 0 (without windows every layer is global)')
        for i in global_attn_indexes:
            self.check_int('global_attn_indexes[...]', i, 0, depth - 1)
        self.out_indices = self.check_out_indices(out_indices, 4)
        if feature_layers is not None:
            feature_layers = self.check_ints('feature_layers', feature_layers, low=-depth)
            feature_layers = tuple(i % depth if i < 0 else i for i in feature_layers)
            if len(feature_layers) != len(self.out_indices) or any(
                    i >= depth for i in feature_layers):
                raise ValueError(f'ViT: feature_layers {feature_layers} needs one layer index '
                                 f'(< {depth}) per output level {self.out_indices}')
        if window_size > 0 and output_cls_token:
            raise ValueError('ViT: window attention drops the [CLS] token; '
                             'output_cls_token needs window_size=0')
        if output_cls_token and not with_cls_token:
            raise ValueError('ViT: output_cls_token needs with_cls_token=True')
        self.check_frozen_stages(frozen_stages, depth, 'layers')

        self.arch_settings = dict(embed_dims=dim, num_layers=depth, num_heads=heads)
        self.embed_dims = dim
        self.patch_size = patch_size
        self.pretrain_grid = (img_size // patch_size, img_size // patch_size)
        self.feature_layers = feature_layers
        self.with_cls_token = with_cls_token
        self.output_cls_token = output_cls_token
        self.window_size = window_size
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp

        self.patch_embed = PatchEmbed(in_channels, dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if with_cls_token else None
        num_pos = self.pretrain_grid[0] * self.pretrain_grid[1] + int(with_cls_token)
        self.pos_embed = nn.Parameter(torch.zeros(1, num_pos, dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = drop_path_rates(drop_path_rate, [depth])[0]
        global_attn_indexes = set(global_attn_indexes)
        self.blocks = nn.ModuleList([
            EncoderLayer(dim, heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, dpr[i],
                         window_size=0 if i in global_attn_indexes else window_size,
                         layer_norm_eps=layer_norm_eps)
            for i in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=layer_norm_eps) if final_norm else nn.Identity()
        self.pyramid = SimpleFeaturePyramid(dim, [(4, 8, 16, 32)[i] for i in self.out_indices])
        self.geometry_cache = WindowGeometryCache()
        self._freeze_stages()

    @property
    def out_channels(self) -> Tuple[int, ...]:
        return tuple(self.pyramid.channels)

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """Adds the position embedding, resized to the ``h x w`` grid of ``x`` (B x h x w x C);
        returns the token sequence (with the [CLS] token first, if any)."""
        B, h, w, C = x.shape
        pos = resize_pos_embed(self.pos_embed, self.pretrain_grid, (h, w),
                               num_extra_tokens=int(self.with_cls_token))
        x = x.reshape(B, h * w, C)
        if self.with_cls_token:
            x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)
        return self.pos_drop(x + pos)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        self.check_input(x)
        H, W = x.shape[-2:]
        x = self.patch_embed(x)
        B, h, w, C = x.shape
        x = self._pos_embed(x)
        n_extra = int(self.with_cls_token)
        if self.window_size > 0 and n_extra:  # as ViTDet: windows hold patch tokens only
            x, n_extra = x[:, 1:], 0
        wanted = set(self.feature_layers) if self.feature_layers is not None else set()
        last = len(self.blocks) - 1
        maps = {}
        geo = None
        if self.window_size > 0:
            geo = self.geometry_cache.get(h, w, self.window_size, 0, x.device,
                                          with_shifted=False)
        for i, block in enumerate(self.blocks):
            x = forward_block(block, x, geo, with_cp=self.with_cp)
            if i == last:
                x = self.norm(x)
            if i in wanted or (i == last and self.feature_layers is None):
                maps[i] = x[:, n_extra:].transpose(1, 2).reshape(B, C, h, w)
        layers = self.feature_layers or [last] * len(self.out_indices)
        outs = self.pyramid([maps[i] for i in layers])
        # the deconvolutions upsample the padded patch grid: crop each level to the
        # ceil(H / stride) x ceil(W / stride) of the contract (a no-op where the patch size
        # divides H, W). The levels are 4x, 2x, 1x and 0.5x the patch grid: strides 4, 8, 16, 32
        # for 16-pixel patches, p/4, p/2, p, 2p for others (stride * p / 16)
        p = self.patch_size
        outs = tuple(o[..., :-(-H * 16 // (s * p)), :-(-W * 16 // (s * p))].contiguous()
                     for o, s in zip(outs, self.pyramid.strides))
        if self.output_cls_token:
            outs = outs + (x[:, 0],)
        return outs

    # -------------------------------------------------------------------- training behaviour
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
            self.pos_embed.requires_grad = False
            if self.cls_token is not None:
                self.cls_token.requires_grad = False

    def _default_init(self):
        init_transformer_weights(self)
        trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            trunc_normal_(self.cls_token, std=0.02)

    def convert_state_dict(self, state_dict: dict) -> ConvertedCheckpoint:
        return convert_vit(state_dict, self)


# ------------------------------------------------------------------------- checkpoint formats
VIT_FORMATS = (
    KeyRule('transformers', prefixes=('embeddings.patch_embeddings', 'vit.embeddings')),
    KeyRule('jax', contains=('Transformer/encoderblock_0',)),
    KeyRule('mmseg', prefixes=('layers.',), contains=('.attn.attn.in_proj_weight',)),
    KeyRule('mmpretrain', prefixes=('layers.',), contains=('.attn.qkv.',)),
    KeyRule('timm', prefixes=('blocks.',)),
)


def detect_vit_format(sd: dict) -> str:
    return detect_format(sd, VIT_FORMATS, 'ViT', 'timm/the JAX release, transformers ViTModel, '
                         'mmseg/mmpretrain VisionTransformer or mmvtx')


def _jax_to_timm(sd: dict) -> dict:
    """The original JAX (``.npz``) layout -> timm's names and PyTorch layouts."""
    out = {}
    dim = sd['cls'].shape[-1]
    for k, v in sd.items():
        v = v.float()
        if k == 'cls':
            out['cls_token'] = v.reshape(1, 1, dim)
        elif k == 'Transformer/posembed_input/pos_embedding':
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
            if name.startswith('LayerNorm_0/'):
                out[p + 'norm1.' + param] = v
            elif name.startswith('LayerNorm_2/'):
                out[p + 'norm2.' + param] = v
            elif name.startswith('MlpBlock_3/Dense_'):
                j = int(name.split('/')[1].split('_')[1])
                out[p + f'mlp.fc{j + 1}.' + param] = v.T if param == 'weight' else v
            elif name.startswith('MultiHeadDotProductAttention_1/'):
                part = name.split('/')[1]
                if part == 'out':
                    out[p + 'attn.proj.' + param] = v.reshape(-1, dim).T if \
                        param == 'weight' else v
                else:
                    out.setdefault(p + 'attn.qkv.' + param, {})[part] = \
                        v.reshape(dim, -1).T if param == 'weight' else v.reshape(-1)
    for k in [k for k, v in out.items() if isinstance(v, dict)]:
        out[k] = torch.cat([out[k]['query'], out[k]['key'], out[k]['value']], 0)
    return out


# transformers ViTModel names, as on the hub (4.x) and as in transformers 5.x
HF_VIT_RULES = (
    ('embeddings.cls_token', 'cls_token'),
    ('embeddings.position_embeddings', 'pos_embed'),
    ('embeddings.patch_embeddings.projection', 'patch_embed.proj'),
    ('encoder.layer.', 'blocks.'), ('layers.', 'blocks.'),
    ('layernorm_before', 'norm1'), ('layernorm_after', 'norm2'),
    ('attention.output.dense', 'attn.proj'), ('attention.o_proj', 'attn.proj'),
    ('intermediate.dense', 'mlp.fc1'), ('output.dense', 'mlp.fc2'),
)


# mmseg/mmpretrain VisionTransformer names (mmseg: nn.MultiheadAttention's in_proj/out_proj)
MMSEG_VIT_RULES = (
    ('patch_embed.projection', 'patch_embed.proj'),
    ('ffn.layers.0.0', 'mlp.fc1'), ('ffn.layers.1', 'mlp.fc2'),
    ('layers.', 'blocks.'), ('.ln1.', '.norm1.'), ('.ln2.', '.norm2.'),
    ('attn.attn.in_proj_weight', 'attn.qkv.weight'), ('attn.attn.in_proj_bias', 'attn.qkv.bias'),
    ('attn.attn.out_proj', 'attn.proj'),
)


def convert_vit(sd: dict, model: 'ViT') -> ConvertedCheckpoint:
    """Any public ViT checkpoint -> mmvtx names; the position embedding is resized from the
    checkpoint's grid to the model's pretraining grid when they differ."""
    fmt = detect_vit_format(sd)
    out = {}
    if fmt == 'jax':
        sd, fmt_in = _jax_to_timm(sd), 'jax'
        fmt = 'timm'
    else:
        fmt_in = fmt
    if fmt == 'transformers':
        sd = {k[len('vit.'):] if k.startswith('vit.') else k: v for k, v in sd.items()
              if not k.startswith(('pooler.', 'classifier.', 'vit.pooler.'))}
        sd = rename_keys(sd, HF_VIT_RULES)
        sd = merge_qkv(sd, ('.attention.attention.query.', '.attention.attention.key.',
                            '.attention.attention.value.'), '.attn.qkv.')
        sd = merge_qkv(sd, ('.attention.q_proj.', '.attention.k_proj.', '.attention.v_proj.'),
                       '.attn.qkv.')
        out = {('norm.' + k[len('layernorm.'):] if k.startswith('layernorm.') else k): v
               for k, v in sd.items()}
    elif fmt in ('mmseg', 'mmpretrain'):
        for k, v in rename_keys(sd, MMSEG_VIT_RULES).items():
            if k.startswith(('head.', 'neck.')):
                continue
            if k.startswith('ln1.'):  # the final norm (final_norm=True)
                k = 'norm.' + k[len('ln1.'):]
            out[k] = v
        if 'patch_embed.proj.bias' not in out and 'patch_embed.proj.weight' in out:
            # mmseg's ViT has no bias in its patch embedding (patch_bias=False): a zero bias
            out['patch_embed.proj.bias'] = out['patch_embed.proj.weight'].new_zeros(
                out['patch_embed.proj.weight'].shape[0])
    else:  # timm / mmvtx
        for k, v in sd.items():
            if k.startswith(('head', 'fc_norm', 'pre_logits')):
                continue
            out[k] = v
    if 'dist_token' in out:
        raise CheckpointMismatchError(
            'ViT: a distilled DeiT checkpoint (dist_token, two extra positions) is not '
            'supported; use the non-distilled release')
    if 'pos_embed' in out and out['pos_embed'].shape != model.pos_embed.shape:
        n_extra = int(model.with_cls_token)
        pos = out['pos_embed']
        src_extra = pos.shape[1] - int(math.isqrt(pos.shape[1])) ** 2  # [CLS] slot or none
        side = math.isqrt(pos.shape[1] - src_extra)
        if src_extra > n_extra:  # the model has no [CLS]: drop its position
            pos = pos[:, src_extra - n_extra:]
        elif src_extra < n_extra:  # the checkpoint has no [CLS] position: a zero one
            pos = torch.cat([pos.new_zeros(1, n_extra - src_extra, pos.shape[2]), pos], 1)
        out['pos_embed'] = resize_pos_embed(pos, (side, side), model.pretrain_grid, n_extra)
    if isinstance(model.norm, nn.Identity):  # final_norm=False: the release's norm is unused
        out = {k: v for k, v in out.items() if not k.startswith('norm.')}
    if 'cls_token' in out and model.cls_token is None:
        out.pop('cls_token')
    may_miss = ['pyramid'] + ([] if 'norm.weight' in out else ['norm'])
    return ConvertedCheckpoint(out, fmt_in, may_miss)
