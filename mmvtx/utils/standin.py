"""Stand-in pretrained checkpoints: random weights in the exact layout of a public release.

The real recipes name the public releases of their weights in
``init_cfg=dict(type='Pretrained', checkpoint=URL or file name)``. mmvtx reads a URL from
``torch.hub.get_dir()/checkpoints/<basename>`` (downloading it once) and a bare file name from
the working directory or else that same folder (:func:`mmvtx.utils.checkpoint.
checkpoint_cache_dir`). A file written there under the release's name, with the release's
wrapper, key names, shapes, dtypes and buffers but seeded random values, lets the unchanged
recipe run end to end without network: the loading path (format detection, name conversion,
window / position-embedding resizing, strict key check) is the real one.

THESE ARE RANDOM WEIGHTS. They test the pipeline, not the accuracy: a model fine-tuned from a
stand-in learns from scratch. Every stand-in carries a marker record in its zip archive
(invisible to ``torch.load``; see :func:`is_standin_checkpoint`), and nothing here overwrites
an existing file unless told to (it could be the user's real download).

Supported releases, by file name (:data:`RELEASE_PATTERNS`; :func:`known_releases` lists the
published ones):

- Swin, microsoft/Swin-Transformer (``SwinTransformer/storage`` v1.0.0 / v1.0.8):
  ``swin_{tiny,small,base,large}_patch4_window{7,12}_{224,384}[_22k|_22kto1k|_22kto1k_finetune]``
  ``.pth`` (window 7 with 224, 12 with 384)
- MAE, facebookresearch/mae: ``mae_pretrain_vit_{base,large,huge}.pth``
- DeiT, facebookresearch/deit: ``deit_{tiny,small,base}_patch16_{224,384}-<8 hex>.pth``
- CvT, microsoft/CvT: ``CvT-{13,21}-{224x224,384x384}-IN-{1k,22k}.pth``,
  ``CvT-w24-384x384-IN-22k.pth``
- DINOv2, facebookresearch/dinov2: ``dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth``
- DINOv3, facebookresearch/dinov3: ``dinov3_vit{s,b,l}16_pretrain_lvd1689m-<8 hex>.pth``
"""
import json
import os
import os.path as osp
import re
import shutil
import tempfile
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import torch

STANDIN_RECORD = 'mmvtx_standin.json'
WARNING = ('RANDOM WEIGHTS: stand-ins in the layout of the public releases, for testing the '
           'pipeline only. They are NOT the pretrained weights; delete them before training '
           'for real.')


# ------------------------------------------------------------------------------ tensor specs
@dataclass(frozen=True)
class TensorSpec:
    """Shape, dtype and how to fill one tensor of a stand-in.

    ``init``: ``weight`` (N(0, 0.02)), ``bias`` (N(0, 0.02)), ``norm_weight`` (1 + N(0, 0.1)),
    ``bn_mean`` (N(0, 0.1)), ``bn_var`` (U(0.5, 1.5), positive), ``count`` (an int64 scalar),
    or an exact value: ``rel_index`` (Swin's relative position index of an ``M x M`` window),
    ``attn_mask`` (Swin's shifted-window mask), ``sincos`` (MAE's fixed 2-D sin-cos position
    embedding), ``rope_periods``, ``bias_mask`` (DINOv3's buffers)."""
    shape: Tuple[int, ...]
    init: str = 'weight'
    args: tuple = ()

    @property
    def dtype(self) -> torch.dtype:
        return torch.int64 if self.init in ('count', 'rel_index') else torch.float32


def _generator(seed: int, key: str) -> torch.Generator:
    """One generator per tensor, from the seed and the key: a tensor's values do not depend
    on which other tensors the layout holds or on their order."""
    g = torch.Generator()
    g.manual_seed((seed * 0x9E3779B97F4A7C15 + zlib.crc32(key.encode())) % (2 ** 63))
    return g


def _materialise(key: str, spec: TensorSpec, seed: int) -> torch.Tensor:
    if spec.init == 'rel_index':
        return swin_relative_position_index(*spec.args)
    if spec.init == 'attn_mask':
        return swin_attn_mask(*spec.args)
    if spec.init == 'rope_periods':  # DINOv3's RoPE periods buffer
        head_dim, base = spec.args
        return base ** (2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2))
    if spec.init == 'bias_mask':  # DINOv3's key-bias mask: 1 for q and v, 0 for k
        C = spec.args[0]
        return torch.cat([torch.ones(C), torch.zeros(C), torch.ones(C)])
    if spec.init == 'sincos':
        return mae_sincos_pos_embed(*spec.args)
    g = _generator(seed, key)
    if spec.init == 'count':
        return torch.randint(1, 10 ** 6, (), generator=g, dtype=torch.int64)
    if spec.init == 'bn_var':
        return 0.5 + torch.rand(spec.shape, generator=g)
    x = torch.randn(spec.shape, generator=g)
    if spec.init in ('weight', 'bias'):
        return x.mul_(0.02)
    if spec.init == 'norm_weight':
        return x.mul_(0.1).add_(1.0)
    if spec.init == 'bn_mean':
        return x.mul_(0.1)
    raise ValueError(f'{key}: unknown init {spec.init!r}')


# --------------------------------------------------------------- exact values of the releases
def swin_relative_position_index(M: int) -> torch.Tensor:
    """The authors' ``relative_position_index`` buffer of an ``M x M`` window
    (``M^2 x M^2``, int64), written as in microsoft/Swin-Transformer's ``WindowAttention``."""
    coords = torch.stack(torch.meshgrid([torch.arange(M), torch.arange(M)], indexing='ij'))
    flat = torch.flatten(coords, 1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += M - 1
    rel[:, :, 1] += M - 1
    rel[:, :, 0] *= 2 * M - 1
    return rel.sum(-1)


def swin_attn_mask(H: int, W: int, M: int, shift: int) -> torch.Tensor:
    """The authors' ``attn_mask`` buffer of a shifted block at resolution ``H x W``
    (``nW x M^2 x M^2``, 0 / -100), as in their ``SwinTransformerBlock``."""
    img_mask = torch.zeros((1, H, W, 1))
    slices = (slice(0, -M), slice(-M, -shift), slice(-shift, None))
    cnt = 0
    for h in slices:
        for w in slices:
            img_mask[:, h, w, :] = cnt
            cnt += 1
    windows = img_mask.view(1, H // M, M, W // M, M, 1).permute(0, 1, 3, 2, 4, 5)
    windows = windows.reshape(-1, M * M)
    mask = windows.unsqueeze(1) - windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, float(-100.0)).masked_fill(mask == 0, float(0.0))


def mae_sincos_pos_embed(dim: int, grid: int) -> torch.Tensor:
    """MAE's fixed position embedding (``1 x (1 + grid^2) x dim``; zeros for [CLS]), as their
    ``get_2d_sincos_pos_embed(dim, grid, cls_token=True)`` (float64 maths, stored float32)."""
    gh = torch.arange(grid, dtype=torch.float64)
    gw = torch.arange(grid, dtype=torch.float64)
    g = torch.stack(torch.meshgrid(gw, gh, indexing='xy'))  # numpy's meshgrid(w, h): w first

    def one_d(d, pos):
        omega = torch.arange(d // 2, dtype=torch.float64) / (d / 2.0)
        omega = 1.0 / 10000 ** omega
        out = pos.reshape(-1)[:, None] * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    emb = torch.cat([one_d(dim // 2, g[0]), one_d(dim // 2, g[1])], dim=1)
    emb = torch.cat([torch.zeros(1, dim, dtype=torch.float64), emb], dim=0)
    return emb.float().unsqueeze(0)


# ------------------------------------------------------------------------------- layouts

def _linear(out: 'OrderedDict', p: str, d_out: int, d_in: int, bias: bool = True):
    out[p + '.weight'] = TensorSpec((d_out, d_in))
    if bias:
        out[p + '.bias'] = TensorSpec((d_out,), 'bias')


def _norm(out: 'OrderedDict', p: str, d: int):
    out[p + '.weight'] = TensorSpec((d,), 'norm_weight')
    out[p + '.bias'] = TensorSpec((d,), 'bias')


def swin_layout(embed_dims: int, depths: Sequence[int], num_heads: Sequence[int],
                window_size: int, img_size: int, num_classes: int,
                patch_size: int = 4) -> 'OrderedDict[str, TensorSpec]':
    """The state dict of microsoft/Swin-Transformer's ``SwinTransformer`` (``ape=False``,
    ``patch_norm=True``), in its ``state_dict()`` order: per block the ``attn_mask`` buffer
    (shifted blocks whose map is larger than the window; at the pretraining resolution),
    the bias table and ``relative_position_index``; ``layers.{i}.downsample`` (PatchMerging,
    x0..x3 order) at the END of stage ``i``; final ``norm``; ``head``."""
    M = window_size
    C = embed_dims
    out = OrderedDict()
    out['patch_embed.proj.weight'] = TensorSpec((C, 3, patch_size, patch_size))
    out['patch_embed.proj.bias'] = TensorSpec((C,), 'bias')
    _norm(out, 'patch_embed.norm', C)
    res = img_size // patch_size
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
        dim = C * 2 ** i
        for j in range(depth):
            p = f'layers.{i}.blocks.{j}.'
            # the authors: no shift (and a window no larger than the map) where the map fits
            # in one window
            shift = 0 if (j % 2 == 0 or res <= M) else M // 2
            if shift:
                out[p + 'attn_mask'] = TensorSpec(((res // M) ** 2, M * M, M * M), 'attn_mask',
                                                  (res, res, M, shift))
            _norm(out, p + 'norm1', dim)
            win = min(M, res)
            out[p + 'attn.relative_position_bias_table'] = TensorSpec(
                ((2 * win - 1) ** 2, heads))
            out[p + 'attn.relative_position_index'] = TensorSpec(
                (win * win, win * win), 'rel_index', (win,))
            _linear(out, p + 'attn.qkv', 3 * dim, dim)
            _linear(out, p + 'attn.proj', dim, dim)
            _norm(out, p + 'norm2', dim)
            _linear(out, p + 'mlp.fc1', 4 * dim, dim)
            _linear(out, p + 'mlp.fc2', dim, 4 * dim)
        if i < len(depths) - 1:
            _linear(out, f'layers.{i}.downsample.reduction', 2 * dim, 4 * dim, bias=False)
            _norm(out, f'layers.{i}.downsample.norm', 4 * dim)
            res //= 2
    last = C * 2 ** (len(depths) - 1)
    _norm(out, 'norm', last)
    _linear(out, 'head', num_classes, last)
    return out


def vit_layout(embed_dims: int, num_layers: int, num_heads: int, patch_size: int,
               img_size: int, num_classes: int = 0,
               sincos_pos_embed: bool = False) -> 'OrderedDict[str, TensorSpec]':
    """timm's ``VisionTransformer`` names (as DeiT and MAE save them): ``cls_token``,
    ``pos_embed`` (``1 x (1 + grid^2) x C``), ``patch_embed.proj``, ``blocks.{i}``, ``norm``
    and, where ``num_classes``, ``head``."""
    del num_heads  # no tensor depends on it
    C = embed_dims
    grid = img_size // patch_size
    out = OrderedDict()
    out['cls_token'] = TensorSpec((1, 1, C))
    out['pos_embed'] = TensorSpec((1, 1 + grid * grid, C), 'sincos', (C, grid)) \
        if sincos_pos_embed else TensorSpec((1, 1 + grid * grid, C))
    out['patch_embed.proj.weight'] = TensorSpec((C, 3, patch_size, patch_size))
    out['patch_embed.proj.bias'] = TensorSpec((C,), 'bias')
    for i in range(num_layers):
        p = f'blocks.{i}.'
        _norm(out, p + 'norm1', C)
        _linear(out, p + 'attn.qkv', 3 * C, C)
        _linear(out, p + 'attn.proj', C, C)
        _norm(out, p + 'norm2', C)
        _linear(out, p + 'mlp.fc1', 4 * C, C)
        _linear(out, p + 'mlp.fc2', C, 4 * C)
    _norm(out, 'norm', C)
    if num_classes:
        _linear(out, 'head', num_classes, C)
    return out


def dino_layout(embed_dims: int, num_layers: int, patch_size: int, grid: int,
                registers: int = 0, swiglu_hidden: int = 0, dinov3_heads: int = 0
                ) -> 'OrderedDict[str, TensorSpec]':
    """facebookresearch/dinov2 (``grid``: 37, learned position embedding with a [CLS] slot,
    ``register_tokens``) and facebookresearch/dinov3 (``dinov3_heads``: RoPE periods, 4
    ``storage_tokens``, key bias masked by ``bias_mask``, no position embedding) backbones as
    their hub files hold them: ``mask_token``, LayerScale ``ls1/ls2.gamma``, ``mlp.fc1/fc2`` or
    the fused SwiGLU ``mlp.w12/w3``, final ``norm``, no head."""
    C = embed_dims
    out = OrderedDict()
    out['cls_token'] = TensorSpec((1, 1, C))
    if dinov3_heads:
        out['storage_tokens'] = TensorSpec((1, registers, C))
    else:
        out['pos_embed'] = TensorSpec((1, 1 + grid * grid, C))
        if registers:
            out['register_tokens'] = TensorSpec((1, registers, C))
    out['mask_token'] = TensorSpec((1, C))
    out['patch_embed.proj.weight'] = TensorSpec((C, 3, patch_size, patch_size))
    out['patch_embed.proj.bias'] = TensorSpec((C,), 'bias')
    if dinov3_heads:
        out['rope_embed.periods'] = TensorSpec((C // dinov3_heads // 4,), 'rope_periods',
                                               (C // dinov3_heads, 100.0))
    for i in range(num_layers):
        p = f'blocks.{i}.'
        _norm(out, p + 'norm1', C)
        _linear(out, p + 'attn.qkv', 3 * C, C)
        if dinov3_heads:
            out[p + 'attn.qkv.bias_mask'] = TensorSpec((3 * C,), 'bias_mask', (C,))
        _linear(out, p + 'attn.proj', C, C)
        out[p + 'ls1.gamma'] = TensorSpec((C,), 'bias')
        _norm(out, p + 'norm2', C)
        if swiglu_hidden:
            _linear(out, p + 'mlp.w12', 2 * swiglu_hidden, C)
            _linear(out, p + 'mlp.w3', C, swiglu_hidden)
        else:
            _linear(out, p + 'mlp.fc1', 4 * C, C)
            _linear(out, p + 'mlp.fc2', C, 4 * C)
        out[p + 'ls2.gamma'] = TensorSpec((C,), 'bias')
    _norm(out, 'norm', C)
    return out


CVT_PATCH = ((7, 4), (3, 2), (3, 2))  # (kernel, stride) of each stage's ConvEmbed


def cvt_layout(embed_dims: Sequence[int], depths: Sequence[int], num_heads: Sequence[int],
               num_classes: int = 1000) -> 'OrderedDict[str, TensorSpec]':
    """microsoft/CvT's ``ConvolutionalVisionTransformer`` (``cls_cvt.py``, ``dw_bn``
    projections, qkv bias, [CLS] in the last stage) in its ``state_dict()`` order: a bare state
    dict with ``stage{i}.`` modules, ``stage2.cls_token``, ``norm`` and ``head``."""
    del num_heads
    out = OrderedDict()
    in_ch = 3
    for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
        s = f'stage{i}.'
        if i == len(embed_dims) - 1:
            out[s + 'cls_token'] = TensorSpec((1, 1, dim))
        k = CVT_PATCH[i][0]
        out[s + 'patch_embed.proj.weight'] = TensorSpec((dim, in_ch, k, k))
        out[s + 'patch_embed.proj.bias'] = TensorSpec((dim,), 'bias')
        _norm(out, s + 'patch_embed.norm', dim)
        for j in range(depth):
            p = f'{s}blocks.{j}.'
            _norm(out, p + 'norm1', dim)
            for t in 'qkv':
                c = f'{p}attn.conv_proj_{t}.'
                out[c + 'conv.weight'] = TensorSpec((dim, 1, 3, 3))
                out[c + 'bn.weight'] = TensorSpec((dim,), 'norm_weight')
                out[c + 'bn.bias'] = TensorSpec((dim,), 'bias')
                out[c + 'bn.running_mean'] = TensorSpec((dim,), 'bn_mean')
                out[c + 'bn.running_var'] = TensorSpec((dim,), 'bn_var')
                out[c + 'bn.num_batches_tracked'] = TensorSpec((), 'count')
            for t in 'qkv':
                _linear(out, f'{p}attn.proj_{t}', dim, dim)
            _linear(out, p + 'attn.proj', dim, dim)
            _norm(out, p + 'norm2', dim)
            _linear(out, p + 'mlp.fc1', 4 * dim, dim)
            _linear(out, p + 'mlp.fc2', dim, 4 * dim)
        in_ch = dim
    _norm(out, 'norm', embed_dims[-1])
    _linear(out, 'head', num_classes, embed_dims[-1])
    return out


# ------------------------------------------------------------------------------- releases
SWIN_ARCHS = {  # embed_dims, depths, num_heads (the authors' configs/swin/*.yaml)
    'tiny': (96, (2, 2, 6, 2), (3, 6, 12, 24)),
    'small': (96, (2, 2, 18, 2), (3, 6, 12, 24)),
    'base': (128, (2, 2, 18, 2), (4, 8, 16, 32)),
    'large': (192, (2, 2, 18, 2), (6, 12, 24, 48)),
}
VIT_ARCHS = {  # embed_dims, num_layers, num_heads
    'tiny': (192, 12, 3), 'small': (384, 12, 6), 'base': (768, 12, 12),
    'large': (1024, 24, 16), 'huge': (1280, 32, 16), 'giant': (1536, 40, 24),
}
DINO_SIZES = {'s': 'small', 'b': 'base', 'l': 'large', 'g': 'giant'}
MAE_PATCH = {'base': 16, 'large': 16, 'huge': 14}  # MAE's ViT-H is /14
CVT_ARCHS = {  # embed_dims, depths, num_heads (microsoft/CvT experiments/imagenet/cvt/*.yaml)
    '13': ((64, 192, 384), (1, 2, 10), (1, 3, 6)),
    '21': ((64, 192, 384), (1, 4, 16), (1, 3, 6)),
    'w24': ((192, 768, 1024), (2, 2, 20), (3, 12, 16)),
}

SWIN_URL = 'https://github.com/SwinTransformer/storage/releases/download/{}/{}'
# the files the authors published (timm's default_cfgs point at the same URLs)
PUBLISHED = {
    **{n: SWIN_URL.format('v1.0.0', n) for n in (
        'swin_tiny_patch4_window7_224.pth', 'swin_small_patch4_window7_224.pth',
        'swin_base_patch4_window7_224.pth', 'swin_base_patch4_window12_384.pth',
        'swin_base_patch4_window7_224_22k.pth', 'swin_base_patch4_window12_384_22k.pth',
        'swin_large_patch4_window7_224_22k.pth', 'swin_large_patch4_window12_384_22k.pth',
        'swin_base_patch4_window7_224_22kto1k.pth', 'swin_base_patch4_window12_384_22kto1k.pth',
        'swin_large_patch4_window7_224_22kto1k.pth',
        'swin_large_patch4_window12_384_22kto1k.pth')},
    **{n: SWIN_URL.format('v1.0.8', n) for n in (
        'swin_tiny_patch4_window7_224_22k.pth', 'swin_small_patch4_window7_224_22k.pth',
        'swin_tiny_patch4_window7_224_22kto1k_finetune.pth',
        'swin_small_patch4_window7_224_22kto1k_finetune.pth')},
    **{n: f'https://dl.fbaipublicfiles.com/mae/pretrain/{n}' for n in (
        'mae_pretrain_vit_base.pth', 'mae_pretrain_vit_large.pth', 'mae_pretrain_vit_huge.pth')},
    **{n: f'https://dl.fbaipublicfiles.com/deit/{n}' for n in (
        'deit_tiny_patch16_224-a1311bcf.pth', 'deit_small_patch16_224-cd65a155.pth',
        'deit_base_patch16_224-b5f2ef4d.pth', 'deit_base_patch16_384-8de9b5d1.pth')},
    **{f'dinov2_vit{s}14{r}_pretrain.pth':
       f'https://dl.fbaipublicfiles.com/dinov2/dinov2_vit{s}14/dinov2_vit{s}14{r}_pretrain.pth'
       for s in 'sblg' for r in ('', '_reg4')},
    # facebookresearch/dinov3: URLs are sent per user after a request form, no public URL
    **{n: None for n in (
        'dinov3_vits16_pretrain_lvd1689m-08c60483.pth',
        'dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth',
        'dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth')},
    # microsoft/CvT: OneDrive folder of the README's model zoo, no direct URL
    **{n: None for n in (
        'CvT-13-224x224-IN-1k.pth', 'CvT-13-384x384-IN-1k.pth', 'CvT-21-224x224-IN-1k.pth',
        'CvT-21-384x384-IN-1k.pth', 'CvT-13-384x384-IN-22k.pth', 'CvT-21-384x384-IN-22k.pth',
        'CvT-w24-384x384-IN-22k.pth')},
}


@dataclass
class Release:
    """One public release, parsed from its file name.

    ``wrapper``: the top-level key the state dict sits under (``None``: a bare state dict).
    ``backbone``: an mmvtx backbone config with the release's architecture at its
    pretraining geometry (what loads it with no resizing). ``published``: the name is one of
    the files the authors put online (:data:`PUBLISHED`); a name that only fits the pattern
    still gets a stand-in, with a warning from the tool."""
    name: str
    family: str
    source: str
    wrapper: Optional[str]
    layout_fn: Callable[[], 'OrderedDict[str, TensorSpec]'] = field(repr=False)
    backbone: dict = field(default_factory=dict)
    description: str = ''

    @property
    def published(self) -> bool:
        return self.name in PUBLISHED

    @property
    def url(self) -> Optional[str]:
        return PUBLISHED.get(self.name)

    def layout(self) -> 'OrderedDict[str, TensorSpec]':
        return self.layout_fn()


def _swin(m) -> Release:
    arch, window, size, suffix = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4) or ''
    if (window, size) not in ((7, 224), (12, 384)):
        raise ValueError(f'{m.group(0)}: the Swin releases pair window 7 with 224 and window 12 '
                         'with 384')
    classes = 21841 if suffix == '_22k' else 1000
    C, depths, heads = SWIN_ARCHS[arch]
    data = {'': 'ImageNet-1k', '_22k': 'ImageNet-22k',
            '_22kto1k': 'ImageNet-22k, fine-tuned on 1k',
            '_22kto1k_finetune': 'ImageNet-22k, fine-tuned on 1k'}[suffix]
    return Release(
        m.group(0), 'swin', 'microsoft/Swin-Transformer', 'model',
        lambda: swin_layout(C, depths, heads, window, size, classes),
        dict(type='mmvtx.SwinTransformer', arch=arch, window_size=window),
        f'Swin-{arch[0].upper()} {size}px window {window}, {data} ({classes} classes)')


def _mae(m) -> Release:
    arch = m.group(1)
    C, depth, heads = VIT_ARCHS[arch]
    patch = MAE_PATCH[arch]
    return Release(
        m.group(0), 'mae', 'facebookresearch/mae', 'model',
        lambda: vit_layout(C, depth, heads, patch, 224, sincos_pos_embed=True),
        dict(type='mmvtx.ViT', arch=dict(embed_dims=C, num_layers=depth, num_heads=heads),
             patch_size=patch, img_size=224),
        f'MAE ViT-{arch[0].upper()}/{patch} encoder, self-supervised on ImageNet-1k (no head)')


def _deit(m) -> Release:
    arch, size = m.group(1), int(m.group(2))
    C, depth, heads = VIT_ARCHS[arch]
    return Release(
        m.group(0), 'deit', 'facebookresearch/deit', 'model',
        lambda: vit_layout(C, depth, heads, 16, size, num_classes=1000),
        dict(type='mmvtx.ViT', arch=dict(embed_dims=C, num_layers=depth, num_heads=heads),
             patch_size=16, img_size=size),
        f'DeiT-{arch[0].upper()}/16 {size}px, ImageNet-1k (1000 classes)')


def _cvt(m) -> Release:
    arch, size, data = m.group(1), int(m.group(2)[:3]), m.group(3)
    if arch == 'w24' and (size, data) != (384, '22k'):
        raise ValueError(f'{m.group(0)}: CvT-W24 was released at 384x384 from ImageNet-22k only '
                         '(CvT-w24-384x384-IN-22k.pth)')
    dims, depths, heads = CVT_ARCHS[arch]
    data = 'ImageNet-1k' if data == '1k' else 'ImageNet-22k, fine-tuned on 1k'
    return Release(
        m.group(0), 'cvt', 'microsoft/CvT', None,
        lambda: cvt_layout(dims, depths, heads, 1000),
        dict(type='mmvtx.CvT', arch=arch),
        f'CvT-{arch.upper() if arch == "w24" else arch} {size}px, {data} (1000 classes)')


def _dinov2(m) -> Release:
    arch, reg = DINO_SIZES[m.group(1)], bool(m.group(2))
    C, depth, heads = VIT_ARCHS[arch]
    swiglu = 4096 if arch == 'giant' else 0
    return Release(
        m.group(0), 'dinov2', 'facebookresearch/dinov2', None,
        lambda: dino_layout(C, depth, 14, 37, registers=4 if reg else 0, swiglu_hidden=swiglu),
        dict(type='mmvtx.ViT', arch=f'dinov2{"-reg" if reg else ""}-{m.group(1)}'),
        f'DINOv2 ViT-{m.group(1).upper()}/14{" with 4 registers" if reg else ""}, '
        'self-supervised on LVD-142M (no head)')


def _dinov3(m) -> Release:
    arch = DINO_SIZES[m.group(1)]
    C, depth, heads = VIT_ARCHS[arch]
    return Release(
        m.group(0), 'dinov3', 'facebookresearch/dinov3', None,
        lambda: dino_layout(C, depth, 16, 0, registers=4, dinov3_heads=heads),
        dict(type='mmvtx.ViT', arch=f'dinov3-{m.group(1)}'),
        f'DINOv3 ViT-{m.group(1).upper()}/16 distilled, self-supervised on LVD-1689M (no head)')


RELEASE_PATTERNS: List[Tuple['re.Pattern', Callable]] = [
    (re.compile(r'swin_(tiny|small|base|large)_patch4_window(7|12)_(224|384)'
                r'(_22k|_22kto1k|_22kto1k_finetune)?\.pth'), _swin),
    (re.compile(r'mae_pretrain_vit_(base|large|huge)\.pth'), _mae),
    (re.compile(r'deit_(tiny|small|base)_patch16_(224|384)-([0-9a-f]{8})\.pth'), _deit),
    (re.compile(r'CvT-(13|21|w24)-(224x224|384x384)-IN-(1k|22k)\.pth'), _cvt),
    (re.compile(r'dinov2_vit([sblg])14(_reg4)?_pretrain\.pth'), _dinov2),
    (re.compile(r'dinov3_vit([sbl])16_pretrain_lvd1689m-([0-9a-f]{8})\.pth'), _dinov3),
]


def standin_checkpoint_name(checkpoint: str) -> str:
    """The file name a checkpoint (URL, bare file name or path) is stored under: the basename,
    without a URL's query, as :func:`mmvtx.utils.checkpoint.resolve_checkpoint_path` caches it."""
    if not isinstance(checkpoint, str) or not checkpoint:
        raise ValueError(f'not a checkpoint name: {checkpoint!r}')
    name = checkpoint.split('?')[0] if checkpoint.startswith(('http://', 'https://')) \
        else checkpoint
    return osp.basename(name.rstrip('/'))


def find_release(checkpoint: str) -> Release:
    """The release a checkpoint (URL, file name or path) names, by its file name; raises a
    ValueError naming the file when none matches."""
    name = standin_checkpoint_name(checkpoint)
    for pattern, build in RELEASE_PATTERNS:
        m = pattern.fullmatch(name)
        if m:
            return build(m)
    raise ValueError(
        f'{name}: no known public release has this file name, so no stand-in can be written '
        'for it. Known: Swin (swin_{tiny,small,base,large}_patch4_window{7,12}_{224,384}'
        '[_22k|_22kto1k|_22kto1k_finetune].pth), MAE (mae_pretrain_vit_{base,large,huge}.pth), '
        'DeiT (deit_{tiny,small,base}_patch16_{224,384}-<hash>.pth), CvT '
        '(CvT-{13,21}-{224x224,384x384}-IN-{1k,22k}.pth, CvT-w24-384x384-IN-22k.pth), DINOv2 '
        '(dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth), DINOv3 '
        '(dinov3_vit{s,b,l}16_pretrain_lvd1689m-<hash>.pth).')


def known_releases() -> List[Release]:
    """Every published release this module writes (:data:`PUBLISHED`), in table order."""
    return [find_release(n) for n in PUBLISHED]


def standin_layout(checkpoint: str) -> 'OrderedDict[str, Tuple[Tuple[int, ...], torch.dtype]]':
    """``key -> (shape, dtype)`` of the state dict of the release ``checkpoint`` names."""
    return OrderedDict((k, (s.shape, s.dtype)) for k, s in find_release(checkpoint).layout()
                       .items())


def standin_state_dict(checkpoint: str, seed: int = 0,
                       device: Union[str, torch.device] = 'cpu') -> 'OrderedDict':
    """The stand-in's state dict (without the wrapper). ``device='meta'`` gives shapes and
    dtypes only (no memory, no time): for checking a layout against a model."""
    release = find_release(checkpoint)
    if str(device) == 'meta':
        return OrderedDict((k, torch.empty(s.shape, dtype=s.dtype, device='meta'))
                           for k, s in release.layout().items())
    return OrderedDict((k, _materialise(k, s, seed).to(device))
                       for k, s in release.layout().items())


def standin_checkpoint(checkpoint: str, seed: int = 0):
    """What the release's file holds: ``{'model': state_dict}`` (Swin, MAE, DeiT) or the bare
    state dict (CvT)."""
    release = find_release(checkpoint)
    sd = standin_state_dict(checkpoint, seed)
    return {release.wrapper: sd} if release.wrapper else sd


# ---------------------------------------------------------------------------------- files
def _archive_prefix(path: str) -> Optional[str]:
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return names[0].split('/')[0] if names and '/' in names[0] else None


def standin_info(path: str) -> Optional[dict]:
    """The stand-in record of a checkpoint file written here (release, seed, warning), or
    ``None`` for any other file (a real download, a legacy-format or non-zip file)."""
    try:
        with zipfile.ZipFile(path) as z:
            for n in z.namelist():
                if n.endswith('/' + STANDIN_RECORD):
                    return json.loads(z.read(n).decode())
    except (OSError, zipfile.BadZipFile, ValueError):
        return None
    return None


def is_standin_checkpoint(path: str) -> bool:
    """Whether ``path`` is a stand-in written by this module (random weights)."""
    return standin_info(path) is not None


def mark_standin(path: str, record: dict):
    """Adds the stand-in ``record`` to the ``torch.save`` file ``path`` (a zip archive), where
    :func:`standin_info` finds it and ``torch.load`` ignores it."""
    prefix = _archive_prefix(path)
    with zipfile.ZipFile(path, 'a') as z:
        z.writestr(f'{prefix}/{STANDIN_RECORD}' if prefix else STANDIN_RECORD,
                   json.dumps(record, indent=1))


def write_standin_checkpoint(checkpoint: str, out_dir: str, seed: int = 0,
                             overwrite: bool = False) -> str:
    """Writes the stand-in of the release ``checkpoint`` names (URL, bare file name or path:
    only its file name counts) to ``out_dir/<file name>``; returns that path.

    Raises ValueError when no known release has that file name, FileExistsError when the file
    exists and ``overwrite`` is False (it could be the real download). The file is written
    under a temporary name and moved into place, so that an interrupted write never leaves a
    partial file under the release's name."""
    release = find_release(checkpoint)
    os.makedirs(out_dir, exist_ok=True)
    path = osp.join(out_dir, release.name)
    if osp.exists(path) and not overwrite:
        what = 'a stand-in written earlier' if is_standin_checkpoint(path) else \
            'not a stand-in: possibly the real download'
        raise FileExistsError(f'{path} exists ({what}); not overwritten (overwrite=True to '
                              'replace it)')
    obj = standin_checkpoint(release.name, seed)
    tmp_dir = tempfile.mkdtemp(prefix='.standin-', dir=out_dir)
    try:
        tmp = osp.join(tmp_dir, release.name)  # the archive's folder is named after the file
        torch.save(obj, tmp)
        del obj
        mark_standin(tmp, dict(mmvtx_standin=True, release=release.name,
                               source=release.source, seed=seed, warning=WARNING))
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


# --------------------------------------------------------------------------------- configs
def iter_pretrained_checkpoints(obj, where: str = 'model') -> Iterator[Tuple[str, str]]:
    """``(config path, checkpoint)`` of every ``dict(type='Pretrained', checkpoint=...)``
    under ``obj`` (a model config: dicts and lists, any depth), and of every ``pretrained=``
    path (mmseg's ``model.pretrained``, which its segmentors pass to the backbone, where mmvtx's
    backbones load it as that ``init_cfg``)."""
    if isinstance(obj, dict):
        if obj.get('type') == 'Pretrained' and isinstance(obj.get('checkpoint'), str):
            yield where, obj['checkpoint']
        if isinstance(obj.get('pretrained'), str):
            yield f'{where}.pretrained', obj['pretrained']
        for k, v in obj.items():
            yield from iter_pretrained_checkpoints(v, f'{where}.{k}')
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from iter_pretrained_checkpoints(v, f'{where}[{i}]')


def pretrained_checkpoints(config) -> List[str]:
    """The distinct ``Pretrained`` checkpoints of a config's model (a path or a Config)."""
    if isinstance(config, str):
        from mmengine.config import Config

        from mmvtx.utils.cli import config_path
        config = Config.fromfile(config_path(config))
    found = []
    for _, ckpt in iter_pretrained_checkpoints(config.get('model', {})):
        if ckpt not in found:
            found.append(ckpt)
    return found


def _config_name(config) -> str:
    return config if isinstance(config, str) else (getattr(config, 'filename', None) or
                                                   'the config')


def write_standins_for_config(config, out_dir: Optional[str] = None, seed: int = 0,
                              overwrite: bool = False) -> List[str]:
    """Writes a stand-in for every ``Pretrained`` checkpoint of the config's model (path or
    :class:`mmengine.config.Config`) into ``out_dir`` (default: where the recipe will look,
    :func:`mmvtx.utils.checkpoint.checkpoint_cache_dir`); returns the paths written.

    Files already there are kept (logged; it could be the real download) unless
    ``overwrite``. Checkpoints that name an existing local file (or folder) are the user's own
    and are left alone. Every other name must be a known release: otherwise a ValueError names them
    all, before anything is written."""
    from mmengine.logging import print_log

    from .checkpoint import checkpoint_cache_dir
    out_dir = out_dir or checkpoint_cache_dir()
    todo, unknown = [], []
    for ckpt in pretrained_checkpoints(config):
        is_url = ckpt.startswith(('http://', 'https://'))
        if not is_url and osp.exists(osp.expanduser(ckpt)):  # a file, or a save_pretrained folder
            print_log(f'stand-in: {ckpt} is a local file; left alone', logger='current')
            continue
        try:
            release = find_release(ckpt)
        except ValueError:
            unknown.append(ckpt)
            continue
        if not is_url and osp.dirname(ckpt):
            print_log(f'stand-in: the config reads {ckpt} from that path only; the stand-in '
                      f'goes to {osp.join(out_dir, release.name)} (copy it there, or name the '
                      'file without a folder)', logger='current', level=30)
        if release.name not in [r.name for r in todo]:
            todo.append(release)
    if unknown:
        raise ValueError('no stand-in written: no known public release has the file name of '
                         + ', '.join(unknown) + f' (named in the model of {_config_name(config)})'
                         '; mmvtx.utils.standin.known_releases() lists those it knows')
    written = []
    for release in todo:
        path = osp.join(out_dir, release.name)
        if osp.exists(path) and not overwrite:
            kind = 'a stand-in' if is_standin_checkpoint(path) else 'not a stand-in'
            print_log(f'stand-in: {path} exists ({kind}); kept', logger='current')
            continue
        written.append(write_standin_checkpoint(release.name, out_dir, seed, overwrite))
    return written
