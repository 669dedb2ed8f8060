"""mmvtx.ViT against Hugging Face transformers' ViTModel and mmseg's VisionTransformer (random
weights loaded through the public loading path), shapes of the pyramid, window attention."""
import logging
import math

import pytest
import torch
import torch.nn.functional as F

from mmvtx.models.backbones.vit import ViT
from mmvtx.utils import CheckpointMismatchError, load_backbone_checkpoint
from tests.conftest import jitter_

TOL = 1e-4
SMALL = dict(embed_dims=192, num_layers=4, num_heads=3)


def _hf_vit():
    from transformers import ViTConfig, ViTModel
    cfg = ViTConfig(hidden_size=192, num_hidden_layers=4, num_attention_heads=3,
                    intermediate_size=768, image_size=224, patch_size=16, layer_norm_eps=1e-6,
                    hidden_act='gelu', hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return jitter_(ViTModel(cfg, add_pooling_layer=False).eval())


def _as_map(tokens, size):
    B, N, C = tokens.shape
    h, w = math.ceil(size[0] / 16), math.ceil(size[1] / 16)
    return tokens.transpose(1, 2).reshape(B, C, h, w)


@pytest.mark.parametrize('size', [(224, 224), (160, 256), (200, 296)])
def test_parity_with_transformers_vit(size):
    ref = _hf_vit()
    ours = ViT(**SMALL, out_indices=(2,), output_cls_token=True, drop_path_rate=0.0).eval()
    assert load_backbone_checkpoint(ours, ref.state_dict()).source == 'transformers'
    x = torch.randn(2, 3, *size)
    # transformers does not pad: give it the zero-padded image that mmvtx pads to inside
    ph, pw = -size[0] % 16, -size[1] % 16
    with torch.no_grad():
        expected = ref(F.pad(x, (0, pw, 0, ph)), interpolate_pos_encoding=True).last_hidden_state
        feat, cls = ours(x)
    assert (_as_map(expected[:, 1:], size) - feat).abs().max() <= TOL
    assert (expected[:, 0] - cls).abs().max() <= TOL


def test_non_square_pretraining_grid(tmp_path):
    """A transformers ViT pretrained at 64x128 (a 4x8 grid of patches 16): img_size=(64, 128)
    loads it and matches it (at that size: transformers resizes only square grids); without it
    the grid is unknown and the load is refused naming pos_embed (it was taken for a square
    grid before)."""
    from transformers import ViTConfig, ViTModel
    cfg = ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=256, image_size=(64, 128), patch_size=16,
                    layer_norm_eps=1e-6, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ref = jitter_(ViTModel(cfg, add_pooling_layer=False).eval())
    arch = dict(embed_dims=64, num_layers=2, num_heads=2)
    ours = ViT(arch, img_size=(64, 128), out_indices=(2,), output_cls_token=True,
               drop_path_rate=0.0).eval()
    load_backbone_checkpoint(ours, ref.state_dict())
    x = torch.randn(2, 3, 64, 128)
    with torch.no_grad():
        expected = ref(x).last_hidden_state
        feat, cls = ours(x)
        assert ours(torch.randn(1, 3, 96, 160))[0].shape == (1, 64, 6, 10)
    assert (_as_map(expected[:, 1:], (64, 128)) - feat).abs().max() <= TOL
    assert (expected[:, 0] - cls).abs().max() <= TOL
    with pytest.raises(CheckpointMismatchError,
                       match=r'pos_embed \(1, 33, 64\).*img_size=\(h, w\)'):
        load_backbone_checkpoint(ViT(arch, img_size=64), ref.state_dict())
    with pytest.raises(ValueError, match='img_size'):
        ViT(arch, img_size=(64, 96, 3))


def test_mmpretrain_avg_featmap_classifier_loads_its_encoder():
    """mmpretrain's ViT classifiers with ``out_type='avg_featmap'`` (its MAE/BEiT fine-tuned
    ViT-B, final_norm=False) keep the norm of the averaged tokens as the backbone's ``ln2``: the
    file was refused ('unexpected keys (2): ln2.weight, ln2.bias'). It loads, as timm's fc_norm
    does, and gives the encoder's last layer (transformers' ViT before its final norm)."""
    ref = _hf_vit()
    ours = ViT(**SMALL, out_indices=(2,), drop_path_rate=0.0).eval()
    load_backbone_checkpoint(ours, ref.state_dict())
    sd = {}
    for k, v in ours.state_dict().items():
        if k.startswith(('pyramid.', 'norm.')):
            continue
        k = (k.replace('blocks.', 'layers.').replace('.norm1.', '.ln1.')
             .replace('.norm2.', '.ln2.').replace('mlp.fc1', 'ffn.layers.0.0')
             .replace('mlp.fc2', 'ffn.layers.1')
             .replace('patch_embed.proj', 'patch_embed.projection'))
        sd['backbone.' + k] = v
    sd.update({'backbone.ln2.weight': torch.randn(192), 'backbone.ln2.bias': torch.randn(192),
               'head.layers.head.weight': torch.zeros(1000, 192),
               'head.layers.head.bias': torch.zeros(1000)})
    mmpretrain = ViT(**SMALL, out_indices=(2,), final_norm=False, drop_path_rate=0.0).eval()
    assert load_backbone_checkpoint(mmpretrain, {'state_dict': sd, 'meta': {}}).source == \
        'mmpretrain'
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        expected = ref(x, interpolate_pos_encoding=True, output_hidden_states=True)
        feat, = mmpretrain(x)
    assert (_as_map(expected.hidden_states[-1][:, 1:], (96, 128)) - feat).abs().max() <= TOL


def _mmseg_vit(**kw):
    from mmseg.models.backbones import VisionTransformer
    kw.setdefault('out_indices', (1, 3))
    ref = VisionTransformer(img_size=224, patch_size=16, embed_dims=192, num_layers=4,
                            num_heads=3, mlp_ratio=4, qkv_bias=True,
                            drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0,
                            with_cls_token=True, norm_cfg=dict(type='LN', eps=1e-6),
                            final_norm=True, interpolate_mode='bicubic', **kw)
    ref.eval()
    return jitter_(ref)


@pytest.mark.parametrize('size', [(224, 224), (200, 296)])
def test_parity_with_mmseg_vit_intermediate_layers(size):
    ref = _mmseg_vit()
    # levels at strides 16 and 32 taken from layers 1 and 3, as mmseg's out_indices=(1, 3)
    ours = ViT(**SMALL, out_indices=(2, 3), feature_layers=(1, 3), drop_path_rate=0.0).eval()
    assert load_backbone_checkpoint(ours, ref.state_dict()).source == 'mmseg'
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        e1, e3 = ref(x)
        o16, o32 = ours(x)
    assert e1.shape == o16.shape
    assert (e1 - o16).abs().max() <= TOL
    assert (F.max_pool2d(e3, 2, ceil_mode=True) - o32).abs().max() <= TOL


def test_mmseg_vit_without_qkv_bias_loads_and_matches():
    """mmseg's qkv_bias=False builds nn.MultiheadAttention(bias=False), which has no
    output-projection bias either: its file was refused as missing blocks.N.attn.proj.bias.
    Loaded with a zero bias, the model computes mmseg's maps (odd, non-square size)."""
    from mmseg.models.backbones import VisionTransformer
    ref = VisionTransformer(img_size=64, patch_size=16, embed_dims=32, num_layers=2, num_heads=2,
                            qkv_bias=False, drop_path_rate=0.0, out_indices=(1,), final_norm=True,
                            norm_cfg=dict(type='LN', eps=1e-6), interpolate_mode='bicubic')
    ref.eval()
    jitter_(ref)
    assert not any(k.endswith(('in_proj_bias', 'out_proj.bias')) for k in ref.state_dict())
    ours = ViT(dict(embed_dims=32, num_layers=2, num_heads=2), img_size=64, qkv_bias=False,
               out_indices=(2,), drop_path_rate=0.0).eval()
    assert load_backbone_checkpoint(ours, ref.state_dict()).source == 'mmseg'
    assert all(not b.attn.proj.bias.any() for b in ours.blocks)
    x = torch.randn(2, 3, 37, 101)
    with torch.no_grad():
        expected, = ref(x)
        got, = ours(x)
    assert expected.shape == got.shape == (2, 32, 3, 7)
    assert (expected - got).abs().max() <= TOL


def test_layers_after_the_deepest_feature_layer_are_neither_run_nor_trained():
    """feature_layers=(0, 1) of 4 layers: layers 2, 3 and the final norm feed no map. They were
    run on every forward and left trainable without a gradient, so DDP (mmengine's default
    find_unused_parameters=False) stopped at the second iteration ('Expected to have finished
    reduction in the prior iteration'). The maps stay mmseg's layer-0/1 outputs, and the
    unused layers stay in the state dict."""
    ref = _mmseg_vit(out_indices=(0, 1))
    ours = ViT(**SMALL, out_indices=(2, 3), feature_layers=(0, 1), drop_path_rate=0.0)
    load_backbone_checkpoint(ours, ref.state_dict())
    assert 'blocks.3.attn.qkv.weight' in ours.state_dict()
    ran = []
    for i, block in enumerate(ours.blocks):
        block.register_forward_hook(lambda m, a, o, i=i: ran.append(i))
    x = torch.randn(2, 3, 80, 112)
    ours.train()
    o16, o32 = ours(x)
    assert ran == [0, 1]
    (o16.square().mean() + o32.square().mean()).backward()
    no_grad = [n for n, p in ours.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    with torch.no_grad():
        e0, e1 = ref(x)
        o16, o32 = ours.eval()(x)
    assert (e0 - o16).abs().max() <= TOL
    assert (F.max_pool2d(e1, 2, ceil_mode=True) - o32).abs().max() <= TOL
    # the [CLS] token comes from the last layer: then every layer runs and trains
    cls_model = ViT(**SMALL, out_indices=(2,), feature_layers=(0,), output_cls_token=True)
    assert all(p.requires_grad for p in cls_model.parameters())


def test_a_file_without_final_norm_warns_and_fits_final_norm_false(monkeypatch):
    """mmseg's ViT defaults to final_norm=False: its file has no ln1. Loaded into a ViT with a
    final norm, that norm keeps its init and changes the features: a warning says so; built
    with final_norm=False, the model computes mmseg's features."""
    from mmvtx.utils import logging as mmvtx_logging
    logged = []
    monkeypatch.setattr(mmvtx_logging, 'print_log', lambda msg, **kw: logged.append((msg, kw)))
    monkeypatch.setattr(mmvtx_logging, '_seen', set())
    from mmseg.models.backbones import VisionTransformer
    ref = jitter_(VisionTransformer(
        img_size=224, patch_size=16, embed_dims=192, num_layers=4, num_heads=3, out_indices=(3,),
        with_cls_token=True, norm_cfg=dict(type='LN', eps=1e-6), final_norm=False,
        drop_path_rate=0.0, interpolate_mode='bicubic'))
    ref.eval()
    ours = ViT(**SMALL, out_indices=(2,), drop_path_rate=0.0).eval()
    load_backbone_checkpoint(ours, ref.state_dict())
    assert any('no final norm' in msg and 'final_norm=False' in msg and
               kw['level'] == logging.WARNING for msg, kw in logged), logged
    plain = ViT(**SMALL, out_indices=(2,), drop_path_rate=0.0, final_norm=False).eval()
    logged.clear()
    load_backbone_checkpoint(plain, ref.state_dict())
    assert not any('no final norm' in msg for msg, _ in logged), logged
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        assert (ref(x)[0] - plain(x)[0]).abs().max() <= TOL


def test_feature_layers_follow_out_indices_in_the_order_given():
    """out_indices=(3, -3) with feature_layers=(3, 0): level 3 from layer 3, level 1 from
    layer 0, whatever order the levels were listed in."""
    a = ViT(**SMALL, out_indices=(3, -3), feature_layers=(3, 0), drop_path_rate=0.0).eval()
    b = ViT(**SMALL, out_indices=(1, 3), feature_layers=(0, 3), drop_path_rate=0.0).eval()
    b.load_state_dict(a.state_dict())
    assert a.out_indices == b.out_indices == (1, 3) and a.feature_layers == (0, 3)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert all(torch.equal(u, v) for u, v in zip(a(x), b(x)))


@pytest.mark.parametrize('H,W', [(1, 1), (15, 17), (33, 65), (64, 64), (97, 131), (224, 160)])
def test_pyramid_shapes_and_strides(H, W):
    model = ViT(embed_dims=64, num_layers=2, num_heads=2).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, H, W))
    # exactly ceil(H / stride) at every level, as Swin and CvT (the upsampled levels cropped)
    expected = [(c, math.ceil(H / s), math.ceil(W / s))
                for c, s in zip((16, 32, 64, 64), (4, 8, 16, 32))]
    assert [tuple(o.shape[1:]) for o in outs] == expected
    assert model.out_channels == (16, 32, 64, 64)


def test_window_attention_covering_the_map_equals_global():
    glob_model = ViT(**SMALL, with_cls_token=False, drop_path_rate=0.0).eval()
    win_model = ViT(**SMALL, with_cls_token=False, window_size=14, global_attn_indexes=(1,),
                    drop_path_rate=0.0).eval()
    jitter_(glob_model)
    win_model.load_state_dict(glob_model.state_dict())
    x = torch.randn(1, 3, 224, 224)  # a 14 x 14 map: one window is the whole map
    with torch.no_grad():
        for a, b in zip(glob_model(x), win_model(x)):
            assert (a - b).abs().max() <= 1e-5
        # smaller windows do change the result, and any size still works
        small = ViT(**SMALL, with_cls_token=False, window_size=4, global_attn_indexes=(3,),
                    drop_path_rate=0.0).eval()
        small.load_state_dict(glob_model.state_dict())
        assert (glob_model(x)[2] - small(x)[2]).abs().max() > 1e-3
        assert small(torch.randn(1, 3, 150, 90))[2].shape == (1, 192, 10, 6)


def test_position_embedding_resized_from_another_pretraining_size():
    ref = _hf_vit()
    ours = ViT(**SMALL, img_size=384, drop_path_rate=0.0)  # 24 x 24 grid from a 14 x 14 one
    converted = load_backbone_checkpoint(ours, ref.state_dict())
    assert ours.pos_embed.shape == (1, 1 + 24 * 24, 192)
    assert {k: tuple(v.shape) for k, v in converted.resized.items()} == {
        'pos_embed': (1, 1 + 14 * 14, 192)}  # named with the file's shape
    same_grid = ViT(**SMALL, img_size=224, drop_path_rate=0.0, with_cls_token=False)
    assert load_backbone_checkpoint(same_grid, ref.state_dict()).resized == {}  # [CLS] dropped
    ref_table = ref.state_dict()['embeddings.position_embeddings']
    assert torch.equal(ours.pos_embed[:, 0], ref_table[:, 0])


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision_checkpoint_of_another_grid(dtype):
    """A bf16/fp16 file whose position embedding is resampled to the model's grid computes what
    transformers computes from the same file in float32 (ViTModel resampling at run time):
    the embedding is resampled in float32 and kept so (it was rounded back to the file's dtype,
    1e-3 off relative for bf16, 1.4e-4 for fp16)."""
    ref = _hf_vit()
    with torch.no_grad():
        ref.embeddings.position_embeddings.normal_()  # a table of a trained model's scale
        for p in ref.parameters():
            p.copy_(p.to(dtype))  # the file's values, computed in float32
    ours = ViT(**SMALL, img_size=112, out_indices=(2,), drop_path_rate=0.0).eval()
    load_backbone_checkpoint(ours, {k: v.to(dtype) for k, v in ref.state_dict().items()})
    assert ours.pos_embed.dtype == torch.float32
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        expected = _as_map(ref(x, interpolate_pos_encoding=True).last_hidden_state[:, 1:],
                           (112, 112))
        got = ours(x)[0]
    assert (got - ours.pyramid([expected])[0]).abs().max() <= 1e-5 * expected.abs().max()


def test_jax_npz_checkpoint_matches_transformers(tmp_path):
    """The original JAX release's layout (written here from the transformers weights)."""
    import numpy as np
    ref = _hf_vit()
    sd = {k: v.numpy() for k, v in ref.state_dict().items()}
    dim, heads = 192, 3
    npz = {'cls': sd['embeddings.cls_token'],
           'Transformer/posembed_input/pos_embedding': sd['embeddings.position_embeddings'],
           'embedding/kernel': sd['embeddings.patch_embeddings.projection.weight'].transpose(
               2, 3, 1, 0),
           'embedding/bias': sd['embeddings.patch_embeddings.projection.bias'],
           'Transformer/encoder_norm/scale': sd['layernorm.weight'],
           'Transformer/encoder_norm/bias': sd['layernorm.bias']}
    for i in range(4):
        p, q = f'layers.{i}.', f'Transformer/encoderblock_{i}/'
        npz[q + 'LayerNorm_0/scale'] = sd[p + 'layernorm_before.weight']
        npz[q + 'LayerNorm_0/bias'] = sd[p + 'layernorm_before.bias']
        npz[q + 'LayerNorm_2/scale'] = sd[p + 'layernorm_after.weight']
        npz[q + 'LayerNorm_2/bias'] = sd[p + 'layernorm_after.bias']
        for j, name in enumerate(('fc1', 'fc2')):
            npz[q + f'MlpBlock_3/Dense_{j}/kernel'] = sd[p + f'mlp.{name}.weight'].T
            npz[q + f'MlpBlock_3/Dense_{j}/bias'] = sd[p + f'mlp.{name}.bias']
        a = q + 'MultiHeadDotProductAttention_1/'
        for jax_name, hf in (('query', 'q_proj'), ('key', 'k_proj'), ('value', 'v_proj')):
            npz[a + f'{jax_name}/kernel'] = sd[p + f'attention.{hf}.weight'].T.reshape(
                dim, heads, dim // heads)
            npz[a + f'{jax_name}/bias'] = sd[p + f'attention.{hf}.bias'].reshape(heads, -1)
        npz[a + 'out/kernel'] = sd[p + 'attention.o_proj.weight'].T.reshape(heads, -1, dim)
        npz[a + 'out/bias'] = sd[p + 'attention.o_proj.bias']
    np.savez(tmp_path / 'ViT.npz', **npz)
    ours = ViT(**SMALL, out_indices=(2,), drop_path_rate=0.0,
               init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'ViT.npz')))
    ours.init_weights()
    ours.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = ref(x).last_hidden_state
        assert (_as_map(expected[:, 1:], (224, 224)) - ours(x)[0]).abs().max() <= TOL


@pytest.mark.parametrize('layout', ['transformers', 'timm'])
def test_distilled_deit_loads_its_distillation_token_as_a_register(layout):
    """The distilled DeiTs (deit_base_distilled_patch16_224: timm's and the authors'
    ``dist_token`` and ``head_dist``; transformers' DeiTForImageClassificationWithTeacher,
    model_type 'deit', under ``deit.``) were refused ('not supported'; transformers' as no
    known format). The distillation token attends as a register token: a ViT with
    num_register_tokens=1 computes transformers' DeiTModel features, at the pretraining size
    and another; without the register the error says how to build it."""
    from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher
    cfg = DeiTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=256, image_size=224, patch_size=16, layer_norm_eps=1e-6,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=10)
    ref = jitter_(DeiTForImageClassificationWithTeacher(cfg).eval())
    sd = ref.state_dict()
    if layout == 'timm':  # the authors' / timm's names, from the same weights
        hf = {k[len('deit.'):]: v for k, v in sd.items() if k.startswith('deit.')}
        sd = {'cls_token': hf['embeddings.cls_token'],
              'dist_token': hf['embeddings.distillation_token'],
              'pos_embed': hf['embeddings.position_embeddings'],
              'patch_embed.proj.weight': hf['embeddings.patch_embeddings.projection.weight'],
              'patch_embed.proj.bias': hf['embeddings.patch_embeddings.projection.bias'],
              'norm.weight': hf['layernorm.weight'], 'norm.bias': hf['layernorm.bias'],
              'head.weight': sd['cls_classifier.weight'],
              'head_dist.weight': sd['distillation_classifier.weight']}
        for i in range(2):
            p, b = f'layers.{i}.', f'blocks.{i}.'
            for part in ('weight', 'bias'):
                sd[b + 'attn.qkv.' + part] = torch.cat(
                    [hf[f'{p}attention.{t}_proj.{part}'] for t in 'qkv'])
                for theirs, ours in (('attention.o_proj', 'attn.proj'),
                                     ('layernorm_before', 'norm1'), ('layernorm_after', 'norm2'),
                                     ('mlp.fc1', 'mlp.fc1'), ('mlp.fc2', 'mlp.fc2')):
                    sd[f'{b}{ours}.{part}'] = hf[f'{p}{theirs}.{part}']
    arch = dict(embed_dims=64, num_layers=2, num_heads=2)
    with pytest.raises(CheckpointMismatchError, match='build the ViT with num_register_tokens=1'):
        load_backbone_checkpoint(ViT(arch), dict(sd))
    ours = ViT(arch, num_register_tokens=1, out_indices=(2,), output_cls_token=True,
               drop_path_rate=0.0).eval()
    load_backbone_checkpoint(ours, dict(sd))
    for size in ((224, 224), (160, 256)):
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            expected = ref.deit(x, interpolate_pos_encoding=True).last_hidden_state
            feat, cls = ours(x)
        assert (_as_map(expected[:, 2:], size) - feat).abs().max() <= TOL
        assert (expected[:, 0] - cls).abs().max() <= TOL


def test_bad_arguments_and_checkpoints():
    with pytest.raises(ValueError, match='feature_layers'):
        ViT(**SMALL, feature_layers=(1, 2))
    with pytest.raises(ValueError, match='CLS'):
        ViT(**SMALL, window_size=7, output_cls_token=True)
    with pytest.raises(CheckpointMismatchError, match='not a ViT'):
        load_backbone_checkpoint(ViT(**SMALL), {'conv.weight': torch.zeros(1)})


def test_own_checkpoint_with_other_out_indices():
    """mmvtx's pyramid names a level by its position in out_indices: a run's (or
    vit2mmvtx's) file saved with other out_indices is refused with what to do, and with
    strict=False each pyramid level gets its own level's weights (the stride-8 level was left
    at init, its weights reported as unexpected under another position)."""
    tiny = dict(embed_dims=32, num_layers=2, num_heads=2, img_size=64, drop_path_rate=0.0)
    full = jitter_(ViT(**tiny).eval())
    x = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        expected = full(x)
    for levels in ((1, 3), (0, 2)):
        part = ViT(**tiny, out_indices=levels).eval()
        with pytest.raises(CheckpointMismatchError, match=r'out_indices(.|\n)*strict=False'):
            load_backbone_checkpoint(part, full.state_dict())
        assert load_backbone_checkpoint(part, full.state_dict(), strict=False).source == 'mmvtx'
        with torch.no_grad():
            for level, got in zip(levels, part(x)):
                assert torch.equal(got, expected[level]), (levels, level)
    # and back: a (1, 3) file into a 4-level model, the stride-8 level at its place
    full2 = ViT(**tiny).eval()
    with pytest.raises(CheckpointMismatchError, match='stride 8'):
        load_backbone_checkpoint(full2, ViT(**tiny, out_indices=(1, 3)).state_dict())
    small = jitter_(ViT(**tiny, out_indices=(1, 3)))
    load_backbone_checkpoint(full2, small.state_dict(), strict=False)
    assert torch.equal(full2.pyramid.scales[1].weight, small.pyramid.scales[0].weight)


def test_frozen_stages():
    model = ViT(**SMALL, frozen_stages=2).train()
    assert not model.pos_embed.requires_grad and not model.cls_token.requires_grad
    assert not any(p.requires_grad for p in model.blocks[1].parameters())
    assert not model.blocks[1].training and model.blocks[2].training
    assert all(p.requires_grad for p in model.blocks[2].parameters())


def test_with_cp_matches_plain():
    plain = ViT(**SMALL, drop_path_rate=0.0)
    ckpt = ViT(**SMALL, drop_path_rate=0.0, with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 80)
    grads = []
    for m in (plain, ckpt):
        m.train()
        sum(o.square().mean() for o in m(x)).backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_window_attention_pads_and_crops_as_vitdet():
    """A windowed layer on a map that is not a multiple of the window: ViTDet zero-pads the
    normed map, attends within each window (padded tokens included as keys, no mask) and crops.
    The one-gather implementation gives the same values and gradients."""
    from torch.nn import functional as F

    from mmvtx.models.backbones.vit import EncoderLayer
    from mmvtx.models.layers.window import WindowGeometryCache, window_partition
    torch.manual_seed(0)
    layer = EncoderLayer(32, 4, window_size=4)
    jitter_(layer)
    B, h, w, C, M = 2, 7, 5, 32, 4
    x = torch.randn(B, h * w, C, requires_grad=True)
    geo = WindowGeometryCache().get(h, w, M, 0, x.device, with_shifted=False)
    ours = layer.attn(layer.norm1(x), geo)

    y = F.pad(layer.norm1(x).view(B, h, w, C), (0, 0, 0, -w % M, 0, -h % M))
    Hp, Wp = y.shape[1:3]
    y = layer.attn(window_partition(y, M).reshape(-1, M * M, C))  # every window, global path
    y = y.view(B, Hp // M, Wp // M, M, M, C).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
    ref = y[:, :h, :w].reshape(B, h * w, C)
    assert (ours - ref).abs().max() <= 1e-5
    g = torch.randn_like(ours)
    params = [x] + list(layer.attn.parameters())
    for a, b in zip(torch.autograd.grad(ours, params, g), torch.autograd.grad(ref, params, g)):
        assert (a - b).abs().max() <= 1e-4
