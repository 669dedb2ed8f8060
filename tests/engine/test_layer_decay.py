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
