"""Downstream configs that keep mmdet's/mmseg's own _base_ and only swap the backbone."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmvtx  # noqa: F401

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
    """mmdet's/mmseg's own Swin config, inherited with ``type='mmvtx.SwinTransformer'`` only:
    the whole model loads the twin model's weights (its backbone part converted as it loads)
    and its features (after the neck where there is one) are the twin's."""
    from tests.conftest import jitter_
    cfg = Config.fromfile(path)
    twin_cfg = Config.fromfile(_base_of(path))
    assert cfg.model.backbone.type == 'mmvtx.SwinTransformer'
    assert twin_cfg.model.backbone.type == 'SwinTransformer'
    scope = cfg.default_scope
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    with DefaultScope.overwrite_default_scope(scope):
        models = []
        for c in (twin_cfg, cfg):
            c.model.backbone.pop('init_cfg', None)  # no download here
            c.model.backbone.depths = [min(d, 2) for d in c.model.backbone.depths]  # quick
            models.append(registry.build(c.model))
    twin, ours = models
    jitter_(twin, std=0.05)
    ours.load_state_dict(twin.state_dict())
    twin.eval(), ours.eval()
    x = torch.randn(1, 3, 97, 129)
    with torch.no_grad():
        want, got = twin.extract_feat(x), ours.extract_feat(x)
    assert len(got) == len(want) >= 4
    for a, b in zip(got, want):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


def _base_of(path: str) -> str:
    """The twin's file: the ``_base_`` of a type-only config, as a path."""
    import re
    package, rel = re.search(r"_base_ = '(\w+)::([^']+)'", open(path).read()).groups()
    return osp.join(osp.dirname(__import__(package).__file__), '.mim', 'configs', rel)
