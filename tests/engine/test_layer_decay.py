import pytest
import torch
from mmengine.registry import DefaultScope
from torch import nn

from mmvtx.models.backbones.vit import ViT


class Detector(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(4, 4)


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_layer_decay_scales_lr_by_depth(scope):
    from mmengine.optim import build_optim_wrapper
    model = Detector(ViT(embed_dims=64, num_layers=4, num_heads=2))
    with DefaultScope.overwrite_default_scope(scope):
        wrapper = build_optim_wrapper(model, dict(
            type='OptimWrapper', constructor='mmvtx.LayerDecayOptimWrapperConstructor',
            optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.1),
            paramwise_cfg=dict(layer_decay_rate=0.5)))
    lr_of = {}
    wd_of = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            lr_of[names[id(p)]] = group['lr']
            wd_of[names[id(p)]] = group['weight_decay']
    assert lr_of['head.weight'] == pytest.approx(1e-3)
    assert lr_of['backbone.blocks.3.attn.qkv.weight'] == pytest.approx(1e-3 * 0.5)
    assert lr_of['backbone.blocks.0.attn.qkv.weight'] == pytest.approx(1e-3 * 0.5 ** 4)
    assert lr_of['backbone.patch_embed.proj.weight'] == pytest.approx(1e-3 * 0.5 ** 5)
    assert lr_of['backbone.pos_embed'] == pytest.approx(1e-3 * 0.5 ** 5)
    assert wd_of['backbone.pos_embed'] == 0 and wd_of['backbone.blocks.0.norm1.weight'] == 0
    assert wd_of['backbone.blocks.0.attn.qkv.weight'] == pytest.approx(0.1)
    assert len(lr_of) == sum(1 for _ in model.parameters())
    torch.manual_seed(0)


def _groups(model, paramwise_cfg, scope='mmdet'):
    from mmengine.optim import build_optim_wrapper
    with DefaultScope.overwrite_default_scope(scope):
        wrapper = build_optim_wrapper(model, dict(
            type='OptimWrapper', constructor='mmvtx.LayerDecayOptimWrapperConstructor',
            optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.1),
            paramwise_cfg=paramwise_cfg))
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g['lr'], g['weight_decay'])
            for g in wrapper.optimizer.param_groups for p in g['params']}


def test_layer_decay_applies_custom_keys_and_skips_frozen_stages():
    # a user adding layer decay to a config whose paramwise_cfg has custom_keys (our Swin
    # configs do) had them dropped without a word
    from mmvtx.models.backbones.swin import SwinTransformer
    model = Detector(SwinTransformer(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1),
                                     frozen_stages=1))
    groups = _groups(model, dict(layer_decay_rate=0.5, custom_keys={
        'head': dict(lr_mult=10.), 'norm': dict(decay_mult=0.5)}))
    assert groups['head.weight'] == (pytest.approx(1e-2), pytest.approx(0.1))
    # 4 blocks: stage 2's block is block 3 -> lr x 0.5 ** 2
    assert groups['backbone.stages.2.blocks.0.norm1.weight'] == (
        pytest.approx(1e-3 * 0.25), pytest.approx(0.05))
    assert groups['backbone.stages.2.blocks.0.attn.relative_position_bias_table'][1] == 0
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert 'backbone.stages.0.blocks.0.attn.qkv.weight' in frozen
    assert not frozen & set(groups)


@pytest.mark.parametrize('paramwise_cfg, match', [
    (dict(layer_decay_rate=0), 'layer_decay_rate=0 '),
    (dict(layer_decay_rate=1.5), 'layer_decay_rate=1.5 '),
    (dict(layer_decay_rate='0.7'), "layer_decay_rate='0.7' "),
    (dict(norm_decay_mult=1.), r"\['norm_decay_mult'\]"),  # 0 is taken: what it does
    (dict(bias_decay_mult=0.5, dwconv_decay_mult=0.), r"\['bias_decay_mult', 'dwconv_decay_mult'"),
    (dict(custom_keys={'head': dict(lr=1.)}), "custom_keys\\['head'\\]"),
])
def test_layer_decay_refuses_bad_paramwise_cfg_by_name(paramwise_cfg, match):
    model = Detector(ViT(embed_dims=32, num_layers=2, num_heads=2))
    with pytest.raises(ValueError, match=match):
        _groups(model, paramwise_cfg)


def test_layer_decay_refuses_an_optimizer_without_lr():
    from mmengine.optim import build_optim_wrapper
    model = Detector(ViT(embed_dims=32, num_layers=2, num_heads=2))
    with pytest.raises(ValueError, match='optimizer.lr=None'):
        build_optim_wrapper(model, dict(
            type='OptimWrapper', constructor='mmvtx.LayerDecayOptimWrapperConstructor',
            optimizer=dict(type='SGD', momentum=0.9), paramwise_cfg=dict(layer_decay_rate=0.7)))


def test_layer_decay_refuses_a_backbone_without_blocks():
    model = Detector(nn.Conv2d(3, 4, 3))
    with pytest.raises(ValueError, match='no backbone blocks'):
        _groups(model, dict(layer_decay_rate=0.7))


def test_layer_decay_gives_what_follows_the_last_block_the_full_rate():
    # ViT's feature pyramid and Swin's output norms are new layers of the detector, after the
    # last block: detectron2 (ViTDet's pyramid), BEiT/mmseg and SimMIM's Swin give them the
    # heads' full rate; they had the last block's decayed one (0.5 here)
    from mmvtx.models.backbones.swin import SwinTransformer
    groups = _groups(Detector(ViT(embed_dims=32, num_layers=2, num_heads=2)),
                     dict(layer_decay_rate=0.5))
    pyramid = [n for n in groups if n.startswith('backbone.pyramid.')]
    assert pyramid and all(groups[n][0] == pytest.approx(1e-3) for n in pyramid)
    assert groups['backbone.blocks.1.mlp.fc1.weight'][0] == pytest.approx(1e-3 * 0.5)
    swin = SwinTransformer(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
    groups = _groups(Detector(swin), dict(layer_decay_rate=0.5))
    for i in range(4):
        assert groups[f'backbone.norm{i}.weight'] == (pytest.approx(1e-3), 0)
    # patch merging keeps the rate of the block before it, the embedding layer 0
    assert groups['backbone.stages.0.downsample.reduction.weight'][0] == pytest.approx(
        1e-3 * 0.5 ** 4)
    assert groups['backbone.patch_embed.proj.weight'][0] == pytest.approx(1e-3 * 0.5 ** 5)


def test_layer_decay_counts_the_blocks_up_to_the_deepest_trained_one():
    # out_indices=(0, 1, 2): Swin's last stage is not trained; the deepest block a map comes
    # from is next to the neck (lr x 0.5), not three blocks away from it as if stage 3 counted
    from mmvtx.models.backbones.swin import SwinTransformer
    swin = SwinTransformer(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1),
                           out_indices=(0, 1, 2))
    groups = _groups(Detector(swin), dict(layer_decay_rate=0.5))
    assert groups['backbone.stages.2.blocks.0.attn.qkv.weight'][0] == pytest.approx(1e-3 * 0.5)
    assert groups['backbone.patch_embed.proj.weight'][0] == pytest.approx(1e-3 * 0.5 ** 4)
    assert not any(n.startswith('backbone.stages.3.') for n in groups)


def test_layer_decay_takes_mmengines_zero_decay_options_of_mask2formers_configs():
    """mmdet's and mmseg's Mask2Former configs set ``norm_decay_mult=0.0``: what the constructor
    does already (norms, biases: no weight decay), so it is taken, not refused."""
    model = Detector(ViT(embed_dims=32, num_layers=2, num_heads=2))
    plain = _groups(model, dict(layer_decay_rate=0.7))
    assert _groups(model, dict(layer_decay_rate=0.7, norm_decay_mult=0.0, bias_decay_mult=0,
                               flat_decay_mult=0.0, bypass_duplicate=True)) == plain
    assert plain['backbone.blocks.0.norm1.weight'][1] == 0
