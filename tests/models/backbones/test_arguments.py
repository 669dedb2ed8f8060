"""Every backbone argument is checked when the model is built: valid settings (drawn at random
by hypothesis, with odd and tiny input sizes, batches > 1, float32 and bfloat16) build, run
forward and backward and give the documented shapes; invalid ones raise a ValueError that names
the argument."""
import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mmvtx.models.backbones import CvT, SwinTransformer, ViT

SETTINGS = dict(deadline=None, derandomize=True, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _subset(draw, n):
    return tuple(sorted(draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=n))))


@st.composite
def swin_cfgs(draw):
    stages = draw(st.integers(1, 4))
    heads = tuple(draw(st.sampled_from([1, 2])) for _ in range(stages))
    cfg = dict(arch=dict(embed_dims=draw(st.sampled_from([8, 16])),
                         depths=tuple(draw(st.integers(1, 2)) for _ in range(stages)),
                         num_heads=heads),
               window_size=draw(st.integers(1, 7)), patch_size=draw(st.integers(1, 4)),
               drop_path_rate=draw(st.floats(0, 0.5)), out_indices=_subset(draw, stages),
               always_shift=draw(st.sampled_from([None, True, False])),
               frozen_stages=draw(st.integers(-1, stages)), with_cp=draw(st.booleans()))
    strides = [cfg['patch_size'] * 2 ** i for i in cfg['out_indices']]
    return SwinTransformer, cfg, strides


@st.composite
def vit_cfgs(draw):
    layers = draw(st.integers(1, 3))
    window = draw(st.sampled_from([0, 0, 2, 3, 5]))
    patch = draw(st.sampled_from([4, 8, 14, 16]))
    out = _subset(draw, 4)
    dims, heads = draw(st.sampled_from([16, 32])), draw(st.sampled_from([1, 2, 4]))
    cls_token = draw(st.booleans())
    registers = 0 if window else draw(st.sampled_from([0, 0, 1, 4]))
    rope = not window and (dims // heads) % 4 == 0 and draw(st.booleans())
    cfg = dict(embed_dims=dims, num_layers=layers, num_heads=heads, patch_size=patch,
               img_size=patch * draw(st.integers(1, 4)), window_size=window,
               global_attn_indexes=tuple(draw(st.sets(st.integers(0, layers - 1))))
               if window else (),
               with_cls_token=cls_token, out_indices=out,
               feature_layers=draw(st.one_of(st.none(), st.tuples(
                   *[st.integers(-layers, layers - 1)] * len(out)))),
               feature_norm=draw(st.booleans()),
               num_register_tokens=registers, pos_embed='rope' if rope else draw(
                   st.sampled_from(['learned', 'none'])),
               use_rel_pos=(window > 0 or not (cls_token or registers)) and draw(st.booleans()),
               layer_scale_init=draw(st.sampled_from([None, 1e-5, 0.1])),
               mlp_type=draw(st.sampled_from(['gelu', 'swiglu'])),
               qkv_bias=draw(st.sampled_from([True, False, 'qv'])),
               drop_path_rate=draw(st.floats(0, 0.5)), frozen_stages=draw(st.integers(-1, layers)),
               with_cp=draw(st.booleans()))
    strides = [(4, 8, 16, 32)[i] for i in out]  # whatever the patch size
    return ViT, cfg, strides


@st.composite
def cvt_cfgs(draw):
    heads = tuple(draw(st.sampled_from([1, 2])) for _ in range(3))
    cfg = dict(arch=dict(embed_dims=tuple(h * draw(st.sampled_from([4, 8])) for h in heads),
                         depths=tuple(draw(st.integers(1, 2)) for _ in range(3)),
                         num_heads=heads),
               out_indices=_subset(draw, 4), out_norms=draw(st.booleans()),
               drop_path_rate=draw(st.floats(0, 0.5)), frozen_stages=draw(st.integers(-1, 3)),
               with_cp=draw(st.booleans()))
    strides = [(4, 8, 16, 32)[i] for i in cfg['out_indices']]
    return CvT, cfg, strides


@settings(max_examples=40, **SETTINGS)
@given(model=st.one_of(swin_cfgs(), vit_cfgs(), cvt_cfgs()), batch=st.integers(1, 3),
       h=st.integers(1, 70), w=st.integers(1, 70),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_valid_settings_build_run_and_give_the_documented_shapes(model, batch, h, w, dtype):
    cls, cfg, strides = model
    # CvT's projections use BatchNorm, which (as in every BN network) cannot train on a single
    # value per channel: batch 1 with its stride-32 key/value map 1 x 1
    assume(cls is not CvT or batch * math.ceil(h / 32) * math.ceil(w / 32) > 1)
    torch.manual_seed(0)
    m = cls(**cfg).to(dtype).train()
    x = torch.randn(batch, 3, h, w, dtype=dtype, requires_grad=True)
    outs = m(x)
    assert len(outs) == len(strides) == len(m.out_channels)
    for o, s, c in zip(outs, strides, m.out_channels):
        assert o.shape == (batch, c, math.ceil(h / s), math.ceil(w / s)), (cfg, h, w)
        assert o.dtype == dtype and o.is_contiguous()
    sum(o.float().sum() for o in outs).backward()
    assert x.grad is not None and torch.isfinite(x.grad.float()).all()
    # DDP (find_unused_parameters=False) refuses trainable parameters without a gradient at
    # the second iteration: Swin's stages after the deepest level returned, CvT's out_norms of
    # levels not returned had none
    assert [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None] == [], cfg


SWIN_BAD = [('window_size', 0), ('window_size', 2.5), ('patch_size', 0), ('patch_size', -4),
            ('drop_path_rate', 1.0), ('drop_path_rate', -0.1), ('attn_drop_rate', 1.5),
            ('drop_rate', float('nan')), ('mlp_ratio', 0), ('mlp_ratio', -1.0),
            ('embed_dims', 0), ('depths', ()), ('depths', (2, 0, 2, 2)), ('depths', (2, 'a')),
            ('num_heads', (0, 6, 12, 24)), ('num_heads', (3, 6)), ('frozen_stages', -2),
            ('frozen_stages', 5), ('out_indices', (4,)), ('out_indices', ()),
            ('out_indices', (0, 0)), ('out_indices', 'all'), ('in_channels', 0),
            ('always_shift', 'yes'), ('arch', 'huge'), ('arch', dict(embed_dims=96, depth=2)),
            ('qkv_bias', 'x'), ('with_cp', 'no'), ('norm_eval', 2), ('mlp_ratio', 0.001)]
VIT_BAD = [('patch_size', 0), ('img_size', 0), ('img_size', 8), ('window_size', -1),
           ('num_layers', 0), ('num_heads', 5), ('embed_dims', -768), ('mlp_ratio', 0),
           ('drop_path_rate', 1), ('attn_drop_rate', -0.5), ('layer_norm_eps', 0),
           ('global_attn_indexes', (12,)), ('feature_layers', (0, 1, 2, 12)),
           ('feature_layers', (0, 1)), ('frozen_stages', 13), ('out_indices', (12,)),
           ('arch', 'titan'), ('qkv_bias', 'k'), ('mlp_type', 'relu'), ('pos_embed', 'sine'),
           ('num_register_tokens', -1), ('layer_scale_init', -1e-5), ('mlp_hidden_dims', 0),
           ('use_rel_pos', True), ('rope_theta', 0.0), ('rope_theta', -1.0),
           ('interpolate_offset', -1.0), ('interpolate_offset', float('nan')),
           ('interpolate_offset', 'x'), ('rel_pos_img_size', 8), ('rel_pos_img_size', -1),
           ('global_attn_indexes', 1), ('with_cls_token', 'yes'), ('with_cp', 'no'),
           ('output_cls_token', 'no'), ('interpolate_antialias', 'x'), ('mlp_ratio', 0.001),
           ('embed_dims', 3), ('img_size', (224, 224, 3))]
CVT_BAD = [('depths', (1, 2)), ('depths', (1, 0, 10)), ('embed_dims', (64, 192, 0)),
           ('num_heads', (1, 3, 7)), ('drop_path_rate', 2), ('mlp_ratio', float('inf')),
           ('act', 'relu'), ('frozen_stages', 4), ('out_indices', (-5,)), ('in_channels', 0),
           ('arch', dict(embed_dims=(1, 2, 3))), ('qkv_bias', 'x'), ('out_norms', 'yes'),
           ('output_cls_token', 'no'), ('mlp_ratio', 0.001)]
BAD = ([(SwinTransformer, *b) for b in SWIN_BAD] + [(ViT, *b) for b in VIT_BAD] +
       [(CvT, *b) for b in CVT_BAD])


def _build(cls, name, value):
    extra = {'global_attn_indexes': dict(window_size=4), 'rope_theta': dict(pos_embed='rope'),
             'rel_pos_img_size': dict(use_rel_pos=True, with_cls_token=False),
             }.get(name, {})
    if cls is ViT and name == 'embed_dims' and value == 3:
        extra = dict(num_heads=1)
    with pytest.raises(ValueError) as err:
        cls(**{name: value}, **extra)
    message = str(err.value)
    assert message.startswith(cls.__name__) and name in message, message


@pytest.mark.parametrize('cls, name, value', BAD, ids=lambda v: repr(v)[:30])
def test_every_invalid_setting_is_refused_by_name(cls, name, value):
    _build(cls, name, value)


@settings(max_examples=40, **SETTINGS)
@given(case=st.one_of(
    st.tuples(st.sampled_from([SwinTransformer, ViT, CvT]),
              st.sampled_from(['drop_path_rate', 'drop_rate', 'attn_drop_rate']),
              st.one_of(st.floats(max_value=0, exclude_max=True), st.floats(min_value=1))),
    st.tuples(st.sampled_from([SwinTransformer, ViT, CvT]), st.just('mlp_ratio'),
              st.floats(max_value=0)),
    st.tuples(st.just(SwinTransformer), st.sampled_from(['window_size', 'patch_size']),
              st.integers(max_value=0)),
    st.tuples(st.just(ViT), st.sampled_from(['patch_size', 'num_layers', 'num_heads']),
              st.integers(max_value=0)),
    st.tuples(st.just(ViT), st.just('window_size'), st.integers(max_value=-1)),
    st.tuples(st.sampled_from([SwinTransformer, CvT]), st.just('frozen_stages'),
              st.one_of(st.integers(max_value=-2), st.integers(min_value=5)))))
def test_random_out_of_range_values_are_refused_by_name(case):
    _build(*case)


def test_an_unknown_vit_arch_lists_sizes_and_families():
    with pytest.raises(ValueError, match=r"'vitdet-s'.*sizes are.*families.*'vitdet-b'"):
        ViT('vitdet-s')
