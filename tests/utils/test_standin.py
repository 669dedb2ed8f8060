"""Stand-in checkpoints (``mmvtx.utils.standin``, ``tools/misc/make_standin_checkpoints.py``):
random weights in the exact layout of each public release, written where the recipes look.

Layouts are checked against independent references where this environment has one
(transformers' Swin / ViT / CvT models, built on the meta device, names mapped to the
releases'; its Swin shift rule and masks; a NumPy copy of MAE's sin-cos table) and against the
papers' parameter counts. Loading goes through the real path: ``init_cfg=dict(type=
'Pretrained', checkpoint=<the recipe's URL or file name>)`` with ``TORCH_HOME`` pointing at a
temporary hub cache. Big architectures are checked on the meta device only (no memory, no time).
"""
import functools
import glob
import importlib.util
import os
import os.path as osp
import re

import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmvtx.models.layers.pos_embed import resize_pos_embed
from mmvtx.registry import MODELS
from mmvtx.utils import standin as S
from mmvtx.utils.checkpoint import checkpoint_cache_dir, load_converted

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RECIPES = sorted(
    p for p in glob.glob(osp.join(ROOT, 'configs', '*', '*.py')) +
    glob.glob(osp.join(ROOT, 'projects', '*', 'configs', '*.py')) if '_base_' not in p)
SWIN_URL = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/'
DEIT_TINY_URL = 'https://dl.fbaipublicfiles.com/deit/deit_tiny_patch16_224-a1311bcf.pth'
MAE_BASE_URL = 'https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth'


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh torch hub cache (``$TORCH_HOME``), and a working directory without checkpoints
    (bare file names are looked up there first)."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.chdir(tmp_path)
    d = checkpoint_cache_dir()
    assert d == str(tmp_path / 'torch_home' / 'hub' / 'checkpoints')
    return d


@functools.lru_cache(maxsize=None)
def _config(path):
    return Config.fromfile(path)


def _recipe_naming(name):
    """The first recipe (mask-rcnn before upernet) whose model names release ``name``, found
    by content rather than by file name (recipes get renamed)."""
    for path in RECIPES:
        if name in [S.standin_checkpoint_name(c) for c in
                    S.pretrained_checkpoints(_config(path))]:
            return path
    raise AssertionError(f'no recipe names {name}')


def _shapes(sd):
    return {k: tuple(v.shape) for k, v in sd.items()}


def _params_of(release):
    """Shapes of the parameters (no buffers) of a release's layout."""
    return {k: s.shape for k, s in release.layout().items()
            if s.init not in ('rel_index', 'attn_mask', 'bn_mean', 'bn_var', 'count')}


def _fits(backbone_cfg, checkpoint):
    """The release's layout converts to ``backbone_cfg``'s names and shapes with nothing
    missing, unexpected or mis-shaped (mmvtx's strict check), on the meta device."""
    with torch.device('meta'):
        model = MODELS.build(dict(backbone_cfg))
    converted = model.convert_state_dict(S.standin_state_dict(checkpoint, device='meta'))
    load_converted(model, converted)
    return converted


def _assert_same(file_sd, model, pairs):
    own = model.state_dict()
    for src, dst in pairs:
        assert src in file_sd and dst in own, (src, dst)
        assert torch.equal(own[dst], file_sd[src]), (src, dst)


# --------------------------------------------------------------------------------- the table
def test_table_of_releases_and_name_matching():
    releases = S.known_releases()
    assert len({r.name for r in releases}) == len(releases) == len(S.PUBLISHED)
    assert {r.family for r in releases} == {'swin', 'mae', 'deit', 'cvt', 'dinov2', 'dinov3'}
    for r in releases:
        assert r.published
        assert S.find_release(r.url or r.name).name == r.name
        if r.url:
            assert S.standin_checkpoint_name(r.url) == r.name
    assert S.standin_checkpoint_name(SWIN_URL + 'swin_tiny_patch4_window7_224.pth?dl=1') == \
        'swin_tiny_patch4_window7_224.pth'
    assert S.standin_checkpoint_name('~/weights/CvT-13-224x224-IN-1k.pth') == \
        'CvT-13-224x224-IN-1k.pth'
    # fits a pattern but the authors never published it: still written, flagged unpublished
    assert not S.find_release('swin_large_patch4_window7_224.pth').published
    for bad in ('resnet50-0676ba61.pth', 'swin_tiny_patch4_window12_224.pth',
                'deit_base_patch16_224.pth', 'CvT-w24-224x224-IN-1k.pth',
                'CvT-13-224x384-IN-1k.pth', 'mae_pretrain_vit_small.pth'):
        with pytest.raises(ValueError, match=re.escape(bad)):
            S.find_release(bad)
    with pytest.raises(ValueError, match='resnet50'):
        S.write_standin_checkpoint('https://download.pytorch.org/models/resnet50-0676ba61.pth',
                                   '/nonexistent')


@pytest.mark.parametrize('name,millions', [
    ('swin_tiny_patch4_window7_224.pth', 28), ('swin_small_patch4_window7_224.pth', 50),
    ('swin_base_patch4_window7_224.pth', 88), ('swin_large_patch4_window7_224_22kto1k.pth', 197),
    ('deit_tiny_patch16_224-a1311bcf.pth', 5.7), ('deit_small_patch16_224-cd65a155.pth', 22),
    ('deit_base_patch16_224-b5f2ef4d.pth', 86), ('mae_pretrain_vit_large.pth', 304),
    ('mae_pretrain_vit_huge.pth', 632), ('CvT-13-224x224-IN-1k.pth', 20),
    ('CvT-21-224x224-IN-1k.pth', 32), ('CvT-w24-384x384-IN-22k.pth', 277),
    ('dinov2_vitb14_pretrain.pth', 86), ('dinov2_vitl14_reg4_pretrain.pth', 304),
    ('dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth', 86),
    ('dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth', 300)])
def test_parameter_counts_are_the_papers(name, millions):
    """Swin / ViT / DeiT / CvT / DINOv2 / DINOv3 papers (with the 1000-class head; MAE's and
    DINO's files have none: 1-2M less than ViT-L/H's counts)."""
    n = sum(int(np.prod(s)) for s in _params_of(S.find_release(name)).values())
    assert abs(n / 1e6 - millions) / millions < 0.02, (name, n)


# -------------------------------------------------------------------------------------- Swin
def _rename_hf_shapes(sd, prefix, rules, qkv):
    """``{release name: shape}`` of a transformers state dict: ``prefix`` dropped, the ``rules``
    substitutions applied, the final ``layernorm`` named ``norm`` and the query/key/value
    projections matched by ``qkv`` merged into one ``attn.qkv`` of three times the rows."""
    out = {}
    for k, shape in _shapes(sd).items():
        k = re.sub(prefix, '', k)
        for old, new in rules:
            k = k.replace(old, new)
        k = re.sub(r'^layernorm\.', 'norm.', k)
        m = re.search(qkv, k)
        if m:
            k = k[:m.start()] + 'attn.qkv.' + k[m.end():]
            shape = (shape[0] * 3,) + shape[1:] if k not in out else out[k]
        out[k] = shape
    return out


HF_SWIN_TO_AUTHORS = (
    ('embeddings.patch_embeddings.projection', 'patch_embed.proj'),
    ('embeddings.norm', 'patch_embed.norm'), ('encoder.layers.', 'layers.'),
    ('layernorm_before', 'norm1'), ('layernorm_after', 'norm2'),
    ('attention.relative_position_bias.relative_position_bias_table',
     'attn.relative_position_bias_table'),
    ('attention.self.relative_position_bias_table',
     'attn.relative_position_bias_table'),
    ('attention.output.dense', 'attn.proj'), ('attention.o_proj', 'attn.proj'),
    ('intermediate.dense', 'mlp.fc1'), ('output.dense', 'mlp.fc2'),
    ('classifier', 'head'),
)


def _hf_swin_to_authors(sd):
    """transformers ``SwinForImageClassification`` names (4.x and 5.x) -> the authors'."""
    return _rename_hf_shapes(sd, r'^swin\.', HF_SWIN_TO_AUTHORS,
                             r'attention\.(self\.)?(query|key|value|q_proj|k_proj|v_proj)\.')


@pytest.mark.parametrize('name', [
    'swin_tiny_patch4_window7_224.pth', 'swin_small_patch4_window7_224_22kto1k_finetune.pth',
    'swin_base_patch4_window12_384_22k.pth', 'swin_large_patch4_window7_224_22k.pth'])
def test_swin_layout_is_the_authors(name):
    from transformers import SwinConfig, SwinForImageClassification
    release = S.find_release(name)
    m = re.match(r'swin_([a-z]+)_patch4_window(\d+)_(\d+)', name)
    C, depths, heads = S.SWIN_ARCHS[m.group(1)]
    M, size = int(m.group(2)), int(m.group(3))
    classes = 21841 if name.endswith('_22k.pth') else 1000
    assert release.wrapper == 'model'
    with torch.device('meta'):
        hf = SwinForImageClassification(SwinConfig(
            embed_dim=C, depths=list(depths), num_heads=list(heads), window_size=M,
            image_size=size, num_labels=classes))
    # every parameter, by the authors' name, with transformers' shape (downsample at the end
    # of stage i, final norm, head)
    assert _params_of(release) == _hf_swin_to_authors(hf.state_dict())
    layout = release.layout()
    assert layout['head.weight'].shape == (classes, C * 8)
    # buffers: relative_position_index in every block; attn_mask where the authors shift at
    # the pretraining resolution (transformers' clamping rule: not where map <= window)
    for i, stage in enumerate(hf.swin.encoder.layers):
        for j, block in enumerate(stage.blocks):
            p = f'layers.{i}.blocks.{j}.'
            assert layout[p + 'attn.relative_position_index'].shape == (M * M, M * M)
            block.set_shift_and_window_size(block.input_resolution)
            res = block.input_resolution[0]
            if block.shift_size:
                assert layout[p + 'attn_mask'].shape == ((res // M) ** 2, M * M, M * M)
            else:
                assert p + 'attn_mask' not in layout
    assert sum('attn_mask' in k for k in layout) == sum(d // 2 for d in depths[:3])
    # and it loads into mmvtx's Swin at that geometry, strictly
    assert _fits(release.backbone, name).source == 'official'


@pytest.mark.parametrize('M,size', [(7, 224), (12, 384)])
def test_swin_buffers_hold_the_authors_values(M, size):
    from transformers import SwinConfig, SwinModel

    from mmvtx.models.backbones.swin import get_relative_position_index
    from mmvtx.models.layers.window import shifted_window_mask
    name = f'swin_base_patch4_window{M}_{size}.pth'
    layout = S.find_release(name).layout()
    hf = SwinModel(SwinConfig(embed_dim=8, num_heads=[1, 1, 1, 1], window_size=M,
                              image_size=size))
    checked = 0
    for i, stage in enumerate(hf.encoder.layers):
        for j, block in enumerate(stage.blocks[:2]):
            p = f'layers.{i}.blocks.{j}.'
            index = S._materialise(p + 'attn.relative_position_index',
                                   layout[p + 'attn.relative_position_index'], 0)
            assert index.dtype == torch.int64
            assert torch.equal(index, block.attention.relative_position_bias
                               .relative_position_index.view(M * M, M * M))
            assert torch.equal(index, get_relative_position_index(M))
            block.set_shift_and_window_size(block.input_resolution)
            if block.shift_size:
                res = block.input_resolution[0]
                mask = S._materialise(p + 'attn_mask', layout[p + 'attn_mask'], 0)
                assert torch.equal(mask, block.get_attn_mask(res, res, torch.float32, 'cpu'))
                assert torch.equal(mask, shifted_window_mask(res, res, M, M // 2))
                checked += 1
    assert checked == 3


def test_swin_standin_loads_through_the_recipe(cache):
    """Swin-T: the recipe names the release by URL; the stand-in written for the config is
    what the recipe's backbone loads, tensor for tensor."""
    config = _config(_recipe_naming('swin_tiny_patch4_window7_224.pth'))
    assert config.model.backbone.init_cfg.checkpoint == \
        SWIN_URL + 'swin_tiny_patch4_window7_224.pth'
    paths = S.write_standins_for_config(config, cache)
    assert paths == [osp.join(cache, 'swin_tiny_patch4_window7_224.pth')]
    raw = torch.load(paths[0], map_location='cpu', weights_only=True)
    assert list(raw) == ['model']  # the authors' wrapper, nothing else
    sd = raw['model']
    layout = S.standin_layout(paths[0])
    assert list(sd) == list(layout)  # the authors' keys, in their state_dict() order
    assert all((tuple(v.shape), v.dtype) == layout[k] for k, v in sd.items())
    assert sd['layers.0.blocks.1.attn_mask'].shape == (64, 49, 49)
    assert 'layers.3.blocks.1.attn_mask' not in sd  # 7x7 map: the authors do not shift
    assert sd['head.weight'].shape == (1000, 768)
    assert S.is_standin_checkpoint(paths[0])
    assert S.standin_info(paths[0])['release'] == 'swin_tiny_patch4_window7_224.pth'

    model = MODELS.build(config.model.backbone)
    model.init_weights()
    _assert_same(sd, model, [
        ('patch_embed.proj.weight', 'patch_embed.proj.weight'),
        ('patch_embed.norm.bias', 'patch_embed.norm.bias'),
        ('layers.0.blocks.0.attn.qkv.weight', 'stages.0.blocks.0.attn.qkv.weight'),
        ('layers.0.blocks.1.attn.relative_position_bias_table',
         'stages.0.blocks.1.attn.relative_position_bias_table'),
        ('layers.2.blocks.5.mlp.fc2.bias', 'stages.2.blocks.5.mlp.fc2.bias'),
        ('layers.3.blocks.1.norm1.weight', 'stages.3.blocks.1.norm1.weight'),
        # the authors' merging ends stage i, in their x0..x3 order: mmvtx's is the same
        ('layers.1.downsample.reduction.weight', 'stages.1.downsample.reduction.weight'),
        ('layers.1.downsample.norm.weight', 'stages.1.downsample.norm.weight'),
        ('norm.weight', 'norm3.weight')])


def test_mmseg_model_pretrained_gets_its_standin(cache):
    """mmseg's spelling, ``model.pretrained`` (its segmentors pass it to the backbone, which
    loads it as ``init_cfg``): the stand-in is written for it and is what the backbone loads."""
    recipe = _config(_recipe_naming('swin_tiny_patch4_window7_224.pth'))
    config = Config(dict(model=dict(recipe.model, pretrained='swin_tiny_patch4_window7_224.pth',
                                    backbone=dict(recipe.model.backbone, init_cfg=None))))
    assert S.pretrained_checkpoints(config) == ['swin_tiny_patch4_window7_224.pth']
    paths = S.write_standins_for_config(config, cache)
    assert paths == [osp.join(cache, 'swin_tiny_patch4_window7_224.pth')]
    model = MODELS.build(dict(config.model.backbone, pretrained=config.model.pretrained))
    model.init_weights()  # the bare file name is looked up in the hub cache
    sd = torch.load(paths[0], map_location='cpu', weights_only=True)['model']
    _assert_same(sd, model, [('layers.2.blocks.5.mlp.fc2.bias', 'stages.2.blocks.5.mlp.fc2.bias')])
    # a model-zoo name of another backbone (an mmseg ResNet base config) is named, not skipped
    config.model.pretrained = 'open-mmlab://resnet50_v1c'
    with pytest.raises(ValueError, match='open-mmlab://resnet50_v1c'):
        S.write_standins_for_config(config, cache)


# --------------------------------------------------------------------------------------- ViT
HF_VIT_TO_TIMM = (
    ('embeddings.cls_token', 'cls_token'),
    ('embeddings.position_embeddings', 'pos_embed'),
    ('embeddings.patch_embeddings.projection', 'patch_embed.proj'),
    ('encoder.layer.', 'blocks.'), ('layers.', 'blocks.'),
    ('layernorm_before', 'norm1'), ('layernorm_after', 'norm2'),
    ('attention.output.dense', 'attn.proj'), ('attention.o_proj', 'attn.proj'),
    ('intermediate.dense', 'mlp.fc1'), ('output.dense', 'mlp.fc2'),
    ('classifier', 'head'),
)


def _hf_vit_to_timm(sd):
    return _rename_hf_shapes(sd, r'^vit\.', HF_VIT_TO_TIMM,
                             r'attention\.(attention\.)?(query|key|value|q_proj|k_proj|v_proj)\.')


@pytest.mark.parametrize('name', [
    'deit_tiny_patch16_224-a1311bcf.pth', 'deit_base_patch16_224-b5f2ef4d.pth',
    'deit_base_patch16_384-8de9b5d1.pth', 'mae_pretrain_vit_base.pth',
    'mae_pretrain_vit_large.pth', 'mae_pretrain_vit_huge.pth'])
def test_vit_layouts_are_timms(name):
    """DeiT: timm's VisionTransformer with a 1000-class head; MAE: the encoder only (cls
    token, 1 + grid^2 positions, final norm, no head; ViT-H is /14)."""
    from transformers import ViTConfig, ViTForImageClassification, ViTModel
    release = S.find_release(name)
    assert release.wrapper == 'model'
    b = release.backbone
    C, depth, heads = b['arch']['embed_dims'], b['arch']['num_layers'], b['arch']['num_heads']
    cfg = ViTConfig(hidden_size=C, num_hidden_layers=depth, num_attention_heads=heads,
                    intermediate_size=4 * C, patch_size=b['patch_size'],
                    image_size=b['img_size'], num_labels=1000)
    with torch.device('meta'):
        hf = ViTForImageClassification(cfg) if release.family == 'deit' else \
            ViTModel(cfg, add_pooling_layer=False)
    assert _params_of(release) == _hf_vit_to_timm(hf.state_dict())
    grid = b['img_size'] // b['patch_size']
    assert release.layout()['pos_embed'].shape == (1, 1 + grid * grid, C)
    assert ('head.weight' in release.layout()) == (release.family == 'deit')
    assert _fits(b, name).source == 'timm'


def test_mae_position_embedding_is_maes_sincos_table():
    """MAE's pos_embed is fixed (not learned): the stand-in holds its exact values, checked
    against a NumPy copy of MAE's ``get_2d_sincos_pos_embed(768, 14, cls_token=True)``."""
    def one_d(d, pos):
        omega = 1. / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.))
        out = np.einsum('m,d->md', pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.stack(np.meshgrid(np.arange(14, dtype=np.float32),
                                np.arange(14, dtype=np.float32)), axis=0).reshape(2, 1, 14, 14)
    ref = np.concatenate([one_d(384, grid[0]), one_d(384, grid[1])], axis=1)
    ref = np.concatenate([np.zeros([1, 768]), ref], axis=0)
    layout = S.find_release('mae_pretrain_vit_base.pth').layout()
    got = S._materialise('pos_embed', layout['pos_embed'], 0)
    assert got.shape == (1, 197, 768) and got.dtype == torch.float32
    assert torch.allclose(got[0], torch.from_numpy(ref).float(), atol=1e-6)


def test_deit_standin_loads_with_the_position_embedding_resized(cache):
    path = S.write_standin_checkpoint(DEIT_TINY_URL, cache)
    assert path == osp.join(cache, 'deit_tiny_patch16_224-a1311bcf.pth')
    raw = torch.load(path, map_location='cpu', weights_only=True)
    assert list(raw) == ['model']
    sd = raw['model']
    assert sd['head.weight'].shape == (1000, 192) and sd['pos_embed'].shape == (1, 197, 192)
    # a model pretrained-sized at 256: the 14x14 grid is resized to 16x16 at load
    model = MODELS.build(dict(type='mmvtx.ViT', arch=dict(embed_dims=192, num_layers=12,
                                                          num_heads=3), img_size=256,
                              init_cfg=dict(type='Pretrained', checkpoint=DEIT_TINY_URL)))
    model.init_weights()
    _assert_same(sd, model, [('cls_token', 'cls_token'),
                             ('patch_embed.proj.weight', 'patch_embed.proj.weight'),
                             ('blocks.3.mlp.fc1.weight', 'blocks.3.mlp.fc1.weight'),
                             ('blocks.11.attn.qkv.bias', 'blocks.11.attn.qkv.bias'),
                             ('norm.weight', 'norm.weight')])
    assert torch.equal(model.pos_embed, resize_pos_embed(sd['pos_embed'], (14, 14), (16, 16), 1))


def test_mae_standin_loads_into_the_vitdet_recipe(cache, monkeypatch):
    """The ViTDet recipe's backbone (no [CLS] token, windows of 14) from the MAE release by its
    URL. ViT-B's 343 MB are checked on the meta device above; here the same writer, with the
    'base' sizes shrunk for speed, goes through the file, the URL resolution and the load."""
    config = _config(_recipe_naming('mae_pretrain_vit_base.pth'))
    assert config.model.backbone.init_cfg.checkpoint == MAE_BASE_URL
    monkeypatch.setitem(S.VIT_ARCHS, 'base', (64, 3, 2))
    paths = S.write_standins_for_config(config, cache)
    assert paths == [osp.join(cache, 'mae_pretrain_vit_base.pth')]
    raw = torch.load(paths[0], map_location='cpu', weights_only=True)
    assert list(raw) == ['model']
    sd = raw['model']
    assert 'head.weight' not in sd and sd['norm.weight'].shape == (64,)
    backbone = dict(config.model.backbone, arch=dict(embed_dims=64, num_layers=3, num_heads=2),
                    global_attn_indexes=(2,))  # the recipe's (2, 5, 8, 11) cut to 3 layers
    model = MODELS.build(backbone)
    model.init_weights()
    assert model.cls_token is None
    _assert_same(sd, model, [('blocks.2.attn.qkv.weight', 'blocks.2.attn.qkv.weight'),
                             ('blocks.0.norm2.bias', 'blocks.0.norm2.bias')])
    # the recipe has no final norm (as detectron2's ViT): MAE's norm.* is left out
    assert config.model.backbone.final_norm is False and not any(
        k.startswith('norm.') for k in model.state_dict())
    assert torch.equal(model.pos_embed, sd['pos_embed'][:, 1:])  # the [CLS] slot dropped


# --------------------------------------------------------------------------------------- CvT
def _hf_cvt_to_authors(sd):
    out = {}
    for k, shape in _shapes(sd).items():
        k = re.sub(r'^cvt\.', '', k)
        k = re.sub(r'^encoder\.stages\.(\d+)\.', r'stage\1.', k)
        for old, new in (('embedding.convolution_embeddings.projection', 'patch_embed.proj'),
                         ('embedding.convolution_embeddings.normalization', 'patch_embed.norm'),
                         ('.layers.', '.blocks.'),
                         ('convolution_projection.convolution', 'conv'),
                         ('convolution_projection.normalization', 'bn'),
                         ('attention.attention.convolution_projection_query', 'attn.conv_proj_q'),
                         ('attention.attention.convolution_projection_key', 'attn.conv_proj_k'),
                         ('attention.attention.convolution_projection_value', 'attn.conv_proj_v'),
                         ('attention.attention.projection_query', 'attn.proj_q'),
                         ('attention.attention.projection_key', 'attn.proj_k'),
                         ('attention.attention.projection_value', 'attn.proj_v'),
                         ('attention.output.dense', 'attn.proj'),
                         ('intermediate.dense', 'mlp.fc1'), ('output.dense', 'mlp.fc2'),
                         ('layernorm_before', 'norm1'), ('layernorm_after', 'norm2'),
                         ('classifier', 'head')):
            k = k.replace(old, new)
        out[re.sub(r'^layernorm\.', 'norm.', k)] = shape
    return out


@pytest.mark.parametrize('name', ['CvT-13-224x224-IN-1k.pth', 'CvT-21-384x384-IN-22k.pth',
                                  'CvT-w24-384x384-IN-22k.pth'])
def test_cvt_layout_is_the_authors(name):
    """microsoft/CvT's bare state dict: every tensor (BatchNorm statistics included) with
    transformers' CvtForImageClassification's shape, under the authors' names."""
    from transformers import CvtConfig, CvtForImageClassification
    release = S.find_release(name)
    assert release.wrapper is None
    dims, depths, heads = S.CVT_ARCHS[release.backbone['arch']]
    with torch.device('meta'):
        hf = CvtForImageClassification(CvtConfig(embed_dim=list(dims), depth=list(depths),
                                                 num_heads=list(heads), num_labels=1000))
    layout = release.layout()
    assert {k: s.shape for k, s in layout.items()} == _hf_cvt_to_authors(hf.state_dict())
    assert next(k for k in layout if k.startswith('stage2.')) == 'stage2.cls_token'
    assert _fits(release.backbone, name).source == 'official'


def test_cvt_standin_loads_through_the_recipe(cache):
    """CvT-13: the recipe names the release by its bare file name (no direct URL exists),
    found in the hub cache; the authors' naming switches on their QuickGELU."""
    config = _config(_recipe_naming('CvT-13-224x224-IN-1k.pth'))
    assert config.model.backbone.init_cfg.checkpoint == 'CvT-13-224x224-IN-1k.pth'
    paths = S.write_standins_for_config(config, cache)
    assert paths == [osp.join(cache, 'CvT-13-224x224-IN-1k.pth')]
    sd = torch.load(paths[0], map_location='cpu', weights_only=True)
    assert list(sd) == list(S.standin_layout(paths[0]))  # bare: no wrapper
    assert sd['head.weight'].shape == (1000, 384) and sd['stage2.cls_token'].shape == (1, 1, 384)
    bn = 'stage2.blocks.9.attn.conv_proj_k.bn.'
    assert (sd[bn + 'running_var'] > 0).all()
    assert sd[bn + 'num_batches_tracked'].dtype == torch.int64
    assert sd[bn + 'num_batches_tracked'].dim() == 0

    model = MODELS.build(config.model.backbone)
    model.init_weights()
    assert model.stages[2].blocks[0].mlp.act.name == 'quick_gelu'
    _assert_same(sd, model, [
        ('stage0.patch_embed.proj.weight', 'stages.0.patch_embed.proj.weight'),
        ('stage1.blocks.0.attn.proj_q.weight', 'stages.1.blocks.0.attn.proj_q.weight'),
        ('stage1.blocks.1.attn.conv_proj_v.conv.weight',
         'stages.1.blocks.1.attn.conv_proj_v.conv.weight'),
        (bn + 'running_var', 'stages.2.blocks.9.attn.conv_proj_k.bn.running_var'),
        (bn + 'num_batches_tracked', 'stages.2.blocks.9.attn.conv_proj_k.bn.num_batches_tracked'),
        ('stage2.cls_token', 'stages.2.cls_token'),
        ('stage2.blocks.3.mlp.fc2.weight', 'stages.2.blocks.3.mlp.fc2.weight')])


# ----------------------------------------------------------------------------------- recipes
@pytest.mark.parametrize('path', RECIPES, ids=lambda p: osp.relpath(p, ROOT))
def test_every_recipe_checkpoint_gets_a_standin_that_fits_its_backbone(path, tmp_path,
                                                                       monkeypatch):
    config = _config(path)
    found = list(S.iter_pretrained_checkpoints(config.model))
    for where, ckpt in found:
        release = S.find_release(ckpt)
        assert release.published, ckpt  # the recipes name real releases
        assert where.startswith('model.backbone.init_cfg'), where
        _fits(config.model.backbone, ckpt)  # strictly, on the meta device

    calls = []

    def fake_writer(checkpoint, out_dir, seed=0, overwrite=False):
        calls.append(checkpoint)
        p = osp.join(out_dir, S.standin_checkpoint_name(checkpoint))
        open(p, 'wb').close()
        return p

    monkeypatch.setattr(S, 'write_standin_checkpoint', fake_writer)
    written = S.write_standins_for_config(path, str(tmp_path))
    assert [osp.basename(p) for p in written] == [S.standin_checkpoint_name(c) for _, c in found]
    assert S.write_standins_for_config(path, str(tmp_path)) == []  # kept, not rewritten


def test_the_recipes_name_the_releases_we_expect():
    """The scan finds the releases the recipes are known to name (more may be added)."""
    names = {S.standin_checkpoint_name(c) for p in RECIPES
             for _, c in S.iter_pretrained_checkpoints(_config(p).model)}
    assert names >= {'swin_tiny_patch4_window7_224.pth', 'swin_small_patch4_window7_224.pth',
                     'swin_base_patch4_window7_224.pth', 'mae_pretrain_vit_base.pth',
                     'deit_base_patch16_224-b5f2ef4d.pth', 'CvT-13-224x224-IN-1k.pth',
                     'CvT-21-224x224-IN-1k.pth'}


# ------------------------------------------------------------------------------- safety, CLI
def test_existing_files_are_never_overwritten(cache):
    url_small = 'https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth'
    real = osp.join(cache, 'deit_small_patch16_224-cd65a155.pth')
    os.makedirs(cache)
    torch.save({'model': {'x': torch.zeros(1)}}, real)  # the user's "real" download
    before = open(real, 'rb').read()
    with pytest.raises(FileExistsError, match='possibly the real download'):
        S.write_standin_checkpoint(url_small, cache)
    cfg = Config(dict(model=dict(backbone=dict(
        type='mmvtx.ViT', init_cfg=[dict(type='Pretrained', checkpoint=url_small)]))))
    assert S.write_standins_for_config(cfg, cache) == []
    assert open(real, 'rb').read() == before and not S.is_standin_checkpoint(real)

    path = S.write_standin_checkpoint(DEIT_TINY_URL, cache)
    with pytest.raises(FileExistsError, match='stand-in written earlier'):
        S.write_standin_checkpoint(DEIT_TINY_URL, cache)
    assert S.write_standin_checkpoint(DEIT_TINY_URL, cache, seed=1, overwrite=True) == path
    assert S.standin_info(path)['seed'] == 1
    assert not [f for f in os.listdir(cache) if f.startswith('.standin-')]  # no leftovers

    # an unknown name anywhere in a config: nothing written, every unknown name reported
    bad = Config(dict(model=dict(
        backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='CvT-21-224x224-IN-1k.pth')),
        neck=dict(init_cfg=dict(type='Pretrained', checkpoint='my_neck.pth')))))
    with pytest.raises(ValueError, match='my_neck.pth'):
        S.write_standins_for_config(bad, cache)
    assert not osp.exists(osp.join(cache, 'CvT-21-224x224-IN-1k.pth'))
    # a checkpoint that is a local file is the user's own: left alone
    local = Config(dict(model=dict(backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=real)))))
    assert S.write_standins_for_config(local, cache) == []


def test_values_are_seeded_and_not_trivial():
    """Each tensor from (seed, key) alone: reproducible, different across seeds and keys."""
    layout = S.find_release('deit_tiny_patch16_224-a1311bcf.pth').layout()

    def value(key, seed):
        return S._materialise(key, layout[key], seed)

    qkv0, qkv1 = 'blocks.0.attn.qkv.weight', 'blocks.1.attn.qkv.weight'
    assert torch.equal(value(qkv0, 0), value(qkv0, 0))
    assert not torch.equal(value(qkv0, 0), value(qkv0, 1))
    assert not torch.equal(value(qkv0, 0), value(qkv1, 0))
    assert (value('norm.weight', 0) != 1).all() and (value('norm.bias', 0) != 0).all()
    assert 0.015 < value(qkv0, 0).std() < 0.025


def _cli():
    spec = importlib.util.spec_from_file_location(
        'make_standin_checkpoints', osp.join(ROOT, 'tools', 'misc', 'make_standin_checkpoints.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_cli_writes_where_the_recipes_look_and_says_they_are_random(cache, capsys):
    main = _cli()
    assert main([DEIT_TINY_URL]) == 0  # default --out-dir: the hub cache of $TORCH_HOME
    out = capsys.readouterr().out
    path = osp.join(cache, 'deit_tiny_patch16_224-a1311bcf.pth')
    assert f'wrote {path}' in out and 'RANDOM WEIGHTS' in out and 'NOT the pretrained' in out
    assert S.is_standin_checkpoint(path)
    assert main([DEIT_TINY_URL]) == 0
    assert 'kept' in capsys.readouterr().out
    assert main(['resnet50-0676ba61.pth', DEIT_TINY_URL]) == 1
    assert 'resnet50-0676ba61.pth' in capsys.readouterr().err
    assert main(['--list']) == 0
    listed = capsys.readouterr().out
    assert all(n in listed for n in S.PUBLISHED)


def test_cli_checks_every_name_and_the_out_dir_before_writing(cache, tmp_path, capsys):
    """A local file that is no release was only refused after the releases before it were
    written; an --out-dir that is a file gave a FileExistsError traceback."""
    main = _cli()
    mine = tmp_path / 'my_weights.pth'
    mine.write_bytes(b'mine')
    assert main([DEIT_TINY_URL, str(mine)]) == 1
    assert 'my_weights.pth: no known public release' in capsys.readouterr().err
    assert not osp.exists(cache) or not os.listdir(cache)  # nothing written
    assert main(['--out-dir', str(mine), DEIT_TINY_URL]) == 1
    assert f'--out-dir {mine} is a file' in capsys.readouterr().err
    assert mine.read_bytes() == b'mine'
