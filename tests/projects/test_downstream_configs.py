"""Downstream configs that keep mmdet's/mmseg's own _base_ and only swap the backbone."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmvtx  # noqa: F401
from mmvtx.engine.model_fit import backbone_fit_errors

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PROJECT = osp.join(ROOT, 'projects', 'downstream_backbone_swap', 'configs')


@pytest.mark.parametrize('path', sorted(glob.glob(osp.join(PROJECT, '*.py'))),
                         ids=osp.basename)
def test_downstream_config_builds_with_mmvtx_backbone(path):
    cfg = Config.fromfile(path)
    scope = cfg.default_scope
    cfg.model.backbone.pop('init_cfg', None)  # no download here
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(cfg.model)
    assert type(model.backbone).__module__.startswith('mmvtx.')
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 96, 128))
    assert len(feats) >= 4 and feats[0].shape[-2:] == (24, 32)


@pytest.mark.parametrize('path', sorted(glob.glob(osp.join(PROJECT, 'type_only', '*.py'))),
                         ids=osp.basename)
def test_a_twin_config_with_only_the_type_swapped_computes_the_twins_features(path):
    """mmdet's/mmseg's own Swin or ViT config, inherited with the backbone's type swapped to
    mmvtx's only: the whole model loads the twin model's weights (its backbone part converted
    as it loads) and its features (after the neck where there is one; DPT's [map, [CLS]]
    pairs) are the twin's."""
    from tests.conftest import jitter_
    cfg = Config.fromfile(path)
    twin_cfg = Config.fromfile(_base_of(path))
    twin_type = {'mmvtx.SwinTransformer': 'SwinTransformer', 'mmvtx.ViT': 'VisionTransformer'}
    assert twin_cfg.model.backbone.type == twin_type[cfg.model.backbone.type]
    scope = cfg.default_scope
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    with DefaultScope.overwrite_default_scope(scope):
        models = []
        for c in (twin_cfg, cfg):
            c.model.backbone.pop('init_cfg', None)  # no download here
            c.model.pop('pretrained', None)
            if 'depths' in c.model.backbone:  # quick
                c.model.backbone.depths = [min(d, 2) for d in c.model.backbone.depths]
            models.append(registry.build(c.model))
    twin, ours = models
    # what tools/train.py checks before training: the maps fit the neck/head (DPT's pairs)
    assert backbone_fit_errors(ours) == []
    jitter_(twin, std=0.05)
    ours.load_state_dict(twin.state_dict())
    twin.eval(), ours.eval()
    x = torch.randn(1, 3, 97, 129)
    with torch.no_grad():
        want, got = twin.extract_feat(x), ours.extract_feat(x)
    assert len(got) == len(want) >= 4

    def flat(feats):
        return [t for f in feats for t in (f if isinstance(f, (list, tuple)) else [f])]

    for a, b in zip(flat(got), flat(want), strict=True):  # float32 rounding of the maps' scale
        assert a.shape == b.shape
        assert (a - b).abs().max() <= 1e-4 + 1e-5 * b.abs().max(), (a - b).abs().max()


def _base_of(path: str) -> str:
    """The twin's file: the ``_base_`` of a type-only config, as a path."""
    import re
    package, rel = re.search(r"_base_ = '(\w+)::([^']+)'", open(path).read()).groups()
    return osp.join(osp.dirname(__import__(package).__file__), '.mim', 'configs', rel)


def test_map_and_cls_token_pairs_for_a_head_that_reads_maps_are_named():
    """``output_cls_token=True`` in mmseg's UPerNet-ViT config makes each output a (map, [CLS])
    pair, which only DPT's head reads: named before training (mmseg failed in UPerHead)."""
    cfg = Config.fromfile(osp.join(PROJECT, 'type_only',
                                   'vit_vit-b16_mln_upernet_8xb2-80k_ade20k-512x512.py'))
    cfg.model.pop('pretrained', None)
    cfg.model.backbone.update(output_cls_token=True, num_layers=12, embed_dims=96, num_heads=2)
    with DefaultScope.overwrite_default_scope('mmseg'):
        from mmseg.registry import MODELS
        model = MODELS.build(cfg.model)
    [error] = backbone_fit_errors(model)
    assert 'model.neck' in error or 'model.decode_head' in error
    assert 'output_cls_token=False' in error
