"""mmseg's own configs on ResNet set ``model.pretrained`` (``'open-mmlab://resnet50_v1c'`` in
every one of its ResNet base models), its ViT recipes set it to the ViT weights, and mmseg's
``EncoderDecoder`` passes it to the backbone as ``pretrained=``: a config that swaps in an mmvtx
backbone (the README's pattern) must build, and the argument means what it means for mmseg's
backbones (a checkpoint for ``init_cfg``; both together refused)."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmvtx.models.backbones import CvT, SwinTransformer, ViT

BACKBONES = {
    'swin': (dict(type='mmvtx.SwinTransformer', embed_dims=24, depths=(1, 1, 1, 1),
                  num_heads=(1, 2, 3, 4)), SwinTransformer),
    'vit': (dict(type='mmvtx.ViT', embed_dims=32, num_layers=1, num_heads=2), ViT),
    'cvt': (dict(type='mmvtx.CvT', embed_dims=(16, 48, 96), depths=(1, 1, 1),
                 num_heads=(1, 3, 6)), CvT),
}


def _segmentor(tmp_path, backbone: dict, pretrained=...):
    text = ("_base_ = 'mmseg::fcn/fcn_r50-d8_4xb4-80k_ade20k-512x512.py'\n"
            "custom_imports = dict(imports=['mmvtx'], allow_failed_imports=False)\n"
            f"model = dict(backbone=dict(_delete_=True, **{backbone!r}),\n"
            "             decode_head=dict(in_channels=1, num_classes=4),\n"
            "             auxiliary_head=dict(in_channels=1, num_classes=4))\n")
    (tmp_path / 'cfg.py').write_text(text)
    cfg = Config.fromfile(str(tmp_path / 'cfg.py'))
    assert cfg.model.pretrained == 'open-mmlab://resnet50_v1c'  # what mmseg's base sets
    if pretrained is not ...:
        cfg.model.pretrained = pretrained
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmseg'):
        return MODELS.build(cfg.model)


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_mmseg_resnet_base_with_model_pretrained_builds(tmp_path, name):
    model = _segmentor(tmp_path, BACKBONES[name][0])  # was: TypeError ... 'pretrained'
    assert model.backbone.init_cfg == dict(type='Pretrained',
                                           checkpoint='open-mmlab://resnet50_v1c')


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_model_pretrained_loads_the_backbone_weights(tmp_path, name):
    cfg, cls = BACKBONES[name]
    source = cls(**{k: v for k, v in cfg.items() if k != 'type'})
    torch.save(source.state_dict(), str(tmp_path / 'backbone.pth'))
    model = _segmentor(tmp_path, cfg, pretrained=str(tmp_path / 'backbone.pth'))
    model.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key


def test_model_pretrained_and_backbone_init_cfg_together_are_refused(tmp_path):
    backbone = dict(BACKBONES['swin'][0], init_cfg=dict(type='Pretrained', checkpoint='x.pth'))
    with pytest.raises(ValueError, match=r"model\.pretrained=None"):
        _segmentor(tmp_path, backbone)


def test_pretrained_none_and_non_strings():
    assert SwinTransformer(embed_dims=24, depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 4),
                           pretrained=None).init_cfg is None
    with pytest.raises(ValueError, match='pretrained=3 must be a checkpoint path'):
        ViT(embed_dims=32, num_layers=1, num_heads=2, pretrained=3)


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_model_zoo_names_of_other_backbones_are_refused_by_name_at_init(tmp_path, name):
    """mmseg's base config's ResNet weights (``open-mmlab://resnet50_v1c``): the model builds
    (``tools/test.py`` loads the whole checkpoint and never reads them), and ``init_weights``
    says what the name is and what to set, instead of 'checkpoint not found'."""
    model = _segmentor(tmp_path, BACKBONES[name][0])
    with pytest.raises(ValueError, match=r"checkpoint='open-mmlab://resnet50_v1c' is a name in "
                       r"mmcv's model zoo \(open-mmlab://\).*set model\.pretrained=None"):
        model.init_weights()
