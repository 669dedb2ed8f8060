"""A config written for mmdet's or mmseg's own backbone, with only its ``type`` swapped to
mmvtx's: every installed mmdet/mmseg config whose backbone is their SwinTransformer (Mask R-CNN,
RetinaNet, Mask2Former, MaskFormer, DINO, DDQ, RTMDet with its 5-stage Swin, GLIP, Grounding
DINO, V3Det; UPerNet, K-Net) builds mmvtx's Swin and computes the twin's features from the
twin's weights; every installed mmseg config whose backbone is its VisionTransformer (UPerNet
with MultiLevelNeck, SETR, Segmenter, DPT) builds mmvtx's ViT returning the twin's stride-16 maps
of layers; a misspelt argument names its near miss."""
import glob
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmvtx.models.backbones import CvT, SwinTransformer, ViT
from tests.conftest import jitter_


def installed_configs(package: str, path_has: str):
    root = osp.join(osp.dirname(__import__(package).__file__), '.mim', 'configs')
    return [p for p in sorted(glob.glob(osp.join(root, '**', '*.py'), recursive=True))
            if path_has in osp.relpath(p, root).lower()]


def twin_swin_backbones():
    """``{(scope, backbone dict as json): first config}`` over mmdet's and mmseg's installed
    configs whose model's backbone is their SwinTransformer."""
    out = {}
    for scope in ('mmdet', 'mmseg'):
        for path in installed_configs(scope, 'swin'):
            backbone = Config.fromfile(path).get('model', {}).get('backbone')
            if backbone and backbone.get('type') == 'SwinTransformer':
                backbone = {k: v for k, v in backbone.to_dict().items()
                            if k not in ('init_cfg', 'pretrained')}  # no download here
                out.setdefault((scope, json.dumps(backbone, sort_keys=True)),
                               osp.relpath(path, osp.dirname(osp.dirname(path))))
    return out


def narrowed(backbone: dict) -> dict:
    """The same keywords with at most 2 blocks a stage and 8 channels a head, so that every
    config is checked in seconds; everything the swap is about (the keywords, window size,
    stage count, out_indices, strides) is kept."""
    out = dict(backbone)
    out['depths'] = [min(d, 2) for d in backbone['depths']]
    out['embed_dims'] = 8 * backbone['num_heads'][0]
    return out


def build(scope: str, cfg: dict):
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    with DefaultScope.overwrite_default_scope(scope):
        return registry.build(cfg)


def test_every_mmdet_and_mmseg_swin_config_builds_ours_with_only_its_type_swapped():
    """Each distinct Swin backbone of the installed configs (35 in mmdet 3.3 / mmseg 1.2.2,
    from 121 files): mmvtx's, built from the same keywords, loads the twin's weights and returns
    its maps (eval mode, 1x3x65x97: padded patch embedding and merging; the last stages'
    maps no larger than a window, where the twin's shift rule is the one asked for)."""
    backbones = twin_swin_backbones()
    assert len(backbones) >= 20, backbones  # the scan found the configs
    seen = set()
    for (scope, key), path in backbones.items():
        cfg = narrowed(json.loads(key))
        twin = jitter_(build(scope, cfg), std=0.05)
        twin.eval()  # mmdet's train() returns None
        ours = build(scope, dict(cfg, type='mmvtx.SwinTransformer')).eval()
        assert type(ours) is SwinTransformer, path
        ours.load_state_dict(twin.state_dict())
        channels = cfg.get('in_channels', 3)  # mmseg's LEVIR change detection: 6
        x = torch.randn(1, channels, 65, 97)
        with torch.no_grad():
            want, got = twin(x), ours(x)
        assert len(got) == len(want), path
        for a, b in zip(got, want):
            assert a.shape == b.shape, path
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (path, (a - b).abs().max())
        seen.add(len(cfg['depths']))
    assert seen == {4, 5}  # RTMDet's 5-stage Swin is among them


@pytest.mark.parametrize('keywords', [dict(qk_scale=0.1), dict(patch_norm=False),
                                      dict(qk_scale=None, patch_norm=True, convert_weights=True,
                                           pretrain_img_size=(384, 384))])
def test_mmdets_swin_keywords_build_mmdets_network(keywords):
    """``qk_scale`` (another attention scale) and ``patch_norm=False`` (no LayerNorm after the
    patch embedding), which the authors' code also takes, build the network mmdet builds."""
    cfg = dict(type='SwinTransformer', embed_dims=24, depths=(2, 2), num_heads=(3, 6),
               out_indices=(0, 1), drop_path_rate=0.0, **keywords)
    twin = jitter_(build('mmdet', cfg), std=0.05)
    twin.eval()
    ours = build('mmdet', dict(cfg, type='mmvtx.SwinTransformer')).eval()
    ours.load_state_dict(twin.state_dict())
    x = torch.randn(2, 3, 64, 90)
    with torch.no_grad():
        for a, b in zip(ours(x), twin(x)):
            assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    assert ours.get_setting('shift_rule') == 'always'  # mmdet's: every SW-MSA block shifts
    # and the gradient (training's attention path)
    grads = []
    for model in (ours, twin):
        model.train()
        xg = x.clone().requires_grad_()
        sum((o * torch.randn_like(o, generator=torch.Generator().manual_seed(i))).sum()
            for i, o in enumerate(model(xg))).backward()
        grads.append(xg.grad)
    assert torch.allclose(*grads, atol=1e-5), (grads[0] - grads[1]).abs().max()


@pytest.mark.parametrize('keywords, message', [
    (dict(use_abs_pos_embed=True), "use_abs_pos_embed=True (a keyword of mmdet's/mmseg's "
     'Swin) asks for an absolute position embedding'),
    (dict(strides=(4, 2, 2, 1)), 'strides=(4, 2, 2, 1) (a keyword of mmdet\'s/mmseg\'s Swin) '
     'must be (4, 2, 2, 2)'),
    (dict(patch_size=2, strides=(4, 2, 2, 2)), 'must be (2, 2, 2, 2)'),
    (dict(act_cfg=dict(type='ReLU')), "act_cfg={'type': 'ReLU'}"),
    (dict(norm_cfg=dict(type='LN', eps=1e-6)), "it takes dict(type='LN', eps=1e-05"),
    (dict(qk_scale=-1.0), 'qk_scale=-1.0'),
    (dict(patch_norm='yes'), "patch_norm='yes'"),
])
def test_a_keyword_of_mmdets_swin_asking_for_another_network_is_refused(keywords, message):
    with pytest.raises(ValueError) as error:
        SwinTransformer(arch=dict(embed_dims=24, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8)),
                        **keywords)
    assert message in str(error.value)


@pytest.mark.parametrize('cls, keywords, message', [
    (SwinTransformer, dict(embed_dim=96), 'embed_dim=96 (did you mean embed_dims?)'),
    (ViT, dict(num_layer=3), 'num_layer=3 (did you mean num_layers?)'),
    (CvT, dict(depth=(1, 2, 3), bogus=1), 'depth=(1, 2, 3) (did you mean depths?)'),
])
def test_an_unknown_argument_names_its_near_miss(cls, keywords, message):
    """Python's TypeError named one keyword and no argument of the backbone."""
    with pytest.raises(TypeError) as error:
        cls(**keywords)
    assert message in str(error.value)
    assert f'{cls.__name__} takes arch, ' in str(error.value)
    assert all(f'{k}=' in str(error.value) for k in keywords)


def twin_vit_backbones():
    """``{backbone dict as json: first config}`` over mmseg's installed ViT, SETR, Segmenter and
    DPT configs (their backbone is mmseg's VisionTransformer)."""
    out = {}
    for folder in ('vit/', 'setr/', 'segmenter/', 'dpt/'):
        for path in installed_configs('mmseg', folder):
            backbone = Config.fromfile(path).model.backbone.to_dict()
            assert backbone['type'] == 'VisionTransformer', path
            backbone = {k: v for k, v in backbone.items() if k not in ('init_cfg', 'pretrained')}
            out.setdefault(json.dumps(backbone, sort_keys=True), osp.basename(path))
    return out


def flat(outputs):
    """The tensors of a backbone's outputs (DPT's are [map, [CLS] token] pairs)."""
    return [t for o in outputs for t in (o if isinstance(o, (list, tuple)) else [o])]


def test_every_mmseg_vit_config_builds_ours_with_only_its_type_swapped():
    """Each distinct backbone of mmseg 1.2.2's ViT/DeiT UPerNet (MultiLevelNeck), SETR (naive,
    PUP, MLA), Segmenter and DPT configs (16): mmvtx's ViT, built from the same keywords,
    returns what mmseg's VisionTransformer returns from the same weights: the maps of the
    layers its out_indices count (after the final norm only on the last layer, where
    final_norm=True), at the patch grid, DPT's as [map, [CLS] token] pairs; the position
    embedding resized as interpolate_mode says (SETR: bilinear) at 1x3x65x97 (padded patch
    embedding, 5x7 grid from the configs' 14x14..48x48)."""
    from mmvtx.utils.checkpoint import load_backbone_checkpoint
    backbones = twin_vit_backbones()
    assert len(backbones) >= 12, backbones  # the scan found the configs
    seen = set()
    for key, path in backbones.items():
        cfg = json.loads(key)
        cfg['embed_dims'] = 8 * cfg.get('num_heads', 12)  # narrowed: every layer kept
        twin = jitter_(build('mmseg', cfg), std=0.05)
        twin.eval()  # mmseg's train() returns None
        ours = build('mmseg', dict(cfg, type='mmvtx.ViT')).eval()
        assert type(ours) is ViT and ours.out_strides == (16,) * len(ours.out_channels), path
        load_backbone_checkpoint(ours, twin.state_dict())
        x = torch.randn(1, 3, 65, 97)
        with torch.no_grad():
            want, got = twin(x), ours(x)
        assert len(got) == len(want) == len(ours.out_channels), path
        assert [type(o) for o in got] == [type(o) for o in want], path
        for a, b in zip(flat(got), flat(want), strict=True):
            assert a.shape == b.shape, path
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (path, (a - b).abs().max())
        seen.add((cfg.get('interpolate_mode', 'bicubic'), cfg.get('output_cls_token', False),
                  cfg.get('with_cls_token', True)))
    assert {m for m, _, _ in seen} == {'bicubic', 'bilinear'}
    assert any(pairs for _, pairs, _ in seen) and any(not cls for _, _, cls in seen)


def test_mmseg_vit_keywords_train_as_mmsegs_network():
    """The gradient (training's path: drop path, attention) and mmseg's defaults where its
    config is silent (final_norm=False, LayerNorm eps 1e-5, drop_path_rate 0): DPT's keywords
    (none of mmseg's own: its out_indices, which count layers beyond the four pyramid levels,
    say it is mmseg's config), and mmseg's default out_indices=-1 (the last layer)."""
    from mmvtx.utils.checkpoint import load_backbone_checkpoint
    cfg = dict(type='VisionTransformer', img_size=64, embed_dims=48, num_layers=6, num_heads=3,
               out_indices=(1, 5), final_norm=True, output_cls_token=True)
    twin = jitter_(build('mmseg', cfg), std=0.05)
    ours = build('mmseg', dict(cfg, type='mmvtx.ViT'))
    assert ours.blocks[0].norm1.eps == 1e-5 and ours.feature_layers == (1, 5)
    load_backbone_checkpoint(ours, twin.state_dict())
    x = torch.randn(2, 3, 40, 72)
    grads = []
    for model in (ours, twin):
        model.train()
        xg = x.clone().requires_grad_()
        sum((o * torch.randn_like(o, generator=torch.Generator().manual_seed(i))).sum()
            for i, o in enumerate(flat(model(xg)))).backward()
        grads.append(xg.grad)
    assert torch.allclose(*grads, atol=1e-5), (grads[0] - grads[1]).abs().max()
    silent = build('mmseg', dict(type='mmvtx.ViT', embed_dims=48, num_layers=3, num_heads=3,
                                 norm_cfg=dict(type='LN')))
    assert silent.feature_layers == (2,) and isinstance(silent.norm, torch.nn.Identity)
    assert silent.blocks[-1].drop_path.p == 0.0 and silent.blocks[0].norm1.eps == 1e-5
    assert ViT(embed_dims=48, num_layers=3, num_heads=3).blocks[-1].drop_path.p == 0.1  # ours


def test_mmseg_vit_act_cfg_with_tanh_approximation_builds_that_mlp():
    """``act_cfg=dict(type='GELU', approximate='tanh')`` (mmcv's GELU is torch's: SigLIP's MLP in
    mmseg's VisionTransformer) was refused as 'a network mmvtx's ViT does not build', which
    builds it as ``mlp_type='gelu_tanh'``: mmseg's network's maps now, and an ``mlp_type``
    saying otherwise beside it is refused naming both."""
    from mmvtx.utils.checkpoint import load_backbone_checkpoint
    cfg = dict(type='VisionTransformer', img_size=64, embed_dims=48, num_layers=3, num_heads=3,
               out_indices=(1, 2), with_cls_token=False,
               act_cfg=dict(type='GELU', approximate='tanh'))
    twin = jitter_(build('mmseg', cfg), std=0.5)
    twin.eval()  # (mmseg's train() returns None)
    ours = build('mmseg', dict(cfg, type='mmvtx.ViT')).eval()
    assert ours.blocks[0].mlp.act.name == 'gelu_tanh'
    load_backbone_checkpoint(ours, twin.state_dict())
    x = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        want, got = twin(x), ours(x)
        exact = build('mmseg', dict(cfg, type='mmvtx.ViT', act_cfg=dict(type='GELU'))).eval()
        load_backbone_checkpoint(exact, twin.state_dict())
        scale = max(w.abs().max() for w in want)
        assert max((w - e).abs().max() for w, e in zip(want, exact(x))) > 1e-4 * scale
    assert max((w - g).abs().max() for w, g in zip(want, got)) <= 1e-6 * scale
    with pytest.raises(ValueError, match=r"mlp_type='gelu' with act_cfg=.*'tanh'.*give one"):
        ViT(embed_dims=48, num_layers=3, num_heads=3, mlp_type='gelu',
            act_cfg=dict(type='GELU', approximate='tanh'))


def test_a_family_preset_in_an_mmseg_vit_config_keeps_its_norms():
    """``arch='dinov3-s'`` written into mmseg's UPerNet-ViT config (LayerNorm eps 1e-6, mmseg's
    final_norm=False): the layers' maps as mmseg's, with the norms DINOv3's weights were
    trained with (eps 1e-5, the final norm on every returned layer)."""
    ours = build('mmseg', dict(type='mmvtx.ViT', arch='dinov3-s', num_layers=12,
                               out_indices=(2, 5, 8, 11), norm_cfg=dict(type='LN', eps=1e-6),
                               act_cfg=dict(type='GELU'), interpolate_mode='bicubic'))
    assert ours.feature_layers == (2, 5, 8, 11) and ours.out_channels == (384,) * 4
    assert ours.blocks[0].norm1.eps == 1e-5 and not isinstance(ours.norm, torch.nn.Identity)
    assert ours.feature_norm
    with torch.no_grad():
        maps = ours.eval()(torch.randn(1, 3, 40, 56))
    assert [tuple(m.shape) for m in maps] == [(1, 384, 3, 4)] * 4


@pytest.mark.parametrize('keywords, message', [
    (dict(pre_norm=True), "pre_norm=True (a keyword of mmseg's VisionTransformer) asks for "
     "SAN's CLIP image encoder"),
    (dict(act_cfg=dict(type='QuickGELU')), "SAN's CLIP image encoder"),
    (dict(act_cfg=dict(type='ReLU')), "it takes dict(type='GELU')"),
    (dict(norm_cfg=dict(type='BN')), "norm_cfg={'type': 'BN'}"),
    (dict(interpolate_mode='nearest'), "interpolate_mode='nearest'"),
    (dict(patch_pad=0), "it takes patch_pad='corner'"),
    (dict(frozen_exclude=['pos_embed']), "frozen_exclude=['pos_embed']"),
    (dict(out_indices=(2, 12)), 'out_indices=(2, 12) (layers, as mmseg'),
    (dict(out_indices=(2, 5), feature_layers=(1, 2)), 'feature_layers=(1, 2) with a config for '
     "mmseg's VisionTransformer"),
])
def test_an_mmseg_vit_keyword_asking_for_another_network_is_refused(keywords, message):
    """SAN's CLIP encoder (pre_norm, QuickGELU, out_origin, no patch bias, unpadded patches,
    frozen by name) is mmseg's VisionTransformer with settings mmvtx's ViT does not build."""
    with pytest.raises(ValueError) as error:
        ViT(embed_dims=48, num_layers=12, num_heads=3, **keywords)
    assert message in str(error.value)


def test_tools_take_a_packages_own_config_with_the_type_swapped_on_the_command_line(capsys):
    """``python tools/train.py mmdet::swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py --cfg-options
    model.backbone.type=mmvtx.SwinTransformer`` (mim's and ``_base_``'s name of a config installed
    with mmdet): the tools read the installed file (it was 'no such file'), and the model built
    from it has mmvtx's Swin as mmdet's network. A config the package lacks is named."""
    import os
    import sys
    tools = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.dirname(
        osp.abspath(__file__))))), 'tools')
    sys.path.insert(0, tools)
    try:
        import train
    finally:
        sys.path.remove(tools)
    from mmvtx.engine.runner import load_config
    args = train.parse_args(['mmdet::swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py',
                             '--cfg-options', 'model.backbone.type=mmvtx.SwinTransformer'])
    assert args.config.endswith(os.path.join('mmdet', '.mim', 'configs', 'swin',
                                             'retinanet_swin-t-p4-w7_fpn_1x_coco.py'))
    cfg = load_config(args)
    backbone = dict(cfg.model.backbone, init_cfg=None, depths=(2, 2, 2, 2))
    model = build('mmdet', backbone)
    assert type(model) is SwinTransformer and model.out_indices == (1, 2, 3)
    assert model.get_setting('shift_rule') == 'always'
    for missing, why in (('mmdet::swin/nope.py', 'mmdet has no such config'),
                         ('nopkg::a/b.py', "no package 'nopkg' is installed")):
        with pytest.raises(SystemExit):
            train.parse_args([missing])
        assert f'error: config {missing}: {why}' in capsys.readouterr().err
