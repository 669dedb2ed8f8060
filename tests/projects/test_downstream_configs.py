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
