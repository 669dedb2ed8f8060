"""A neck or decode head that does not take the backbone's maps is refused before the run, naming
both settings (mmdet's FPN alone fails in the first forward with an empty AssertionError)."""
import sys

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmvtx.engine import backbone_fit_errors
from tests.engine.test_train_tools import shapes_data  # noqa: F401  (the data, once)
from tests.engine.test_train_tools import DET_CFG, ROOT, SEG_CFG, run_tool


def _model(path, scope, **options):
    cfg = Config.fromfile(path)
    cfg.merge_from_dict(options)
    if scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(cfg.model)


def test_tools_train_names_a_neck_that_does_not_fit(tmp_path):
    """What a user types: the shapes recipe with its backbone's levels changed alone."""
    out = run_tool([sys.executable, f'{ROOT}/tools/train.py', DET_CFG, '--work-dir',
                    str(tmp_path / 'work'), '--cfg-options', 'model.backbone.out_indices=(1,2,3)'],
                   cwd=str(tmp_path))
    assert out.returncode != 0
    assert ('model.neck.in_channels=[48, 96, 192, 384] (FPN) but model.backbone '
            '(SwinTransformer, out_indices=(1, 2, 3)) returns 3 maps with [96, 192, 384] '
            'channels: set neck.in_channels=[96, 192, 384]') in out.stderr, out.stderr[-3000:]
    assert 'Iter(train)' not in out.stdout + out.stderr


def test_fitting_models_pass_and_other_widths_are_named():
    assert backbone_fit_errors(_model(DET_CFG, 'mmdet')) == []
    assert backbone_fit_errors(_model(SEG_CFG, 'mmseg')) == []
    # the levels and the neck changed together: fits
    assert backbone_fit_errors(_model(DET_CFG, 'mmdet', **{
        'model.backbone.out_indices': (1, 2, 3), 'model.neck.in_channels': [96, 192, 384]})) == []
    errors = backbone_fit_errors(_model(DET_CFG, 'mmdet', **{'model.backbone.embed_dims': 24}))
    assert errors == ['model.neck.in_channels=[48, 96, 192, 384] (FPN) but model.backbone '
                      '(SwinTransformer, out_indices=(0, 1, 2, 3)) returns 4 maps with '
                      '[24, 48, 96, 192] channels: set neck.in_channels=[24, 48, 96, 192] (or '
                      "the backbone's out_indices to the levels the neck expects)"]


@pytest.mark.parametrize('options,expected', [
    ({'model.backbone.out_indices': (1, 2, 3)},
     ['model.decode_head.in_index=[0, 1, 2, 3] selects maps [3] that do not exist',
      'model.auxiliary_head.in_channels=192 but the maps its in_index=2 selects have 384 '
      'channels']),
    ({'model.auxiliary_head.in_index': -5}, ['model.auxiliary_head.in_index=-5 selects maps [-5]']),
    ({'model.decode_head.in_channels': [48, 96, 192, 192]},
     ['model.decode_head.in_channels=[48, 96, 192, 192] but the maps its in_index=[0, 1, 2, 3] '
      'selects have [48, 96, 192, 384] channels']),
    ({'model.auxiliary_head.in_index': [1, 2], 'model.auxiliary_head.in_channels': [96, 192],
      'model.auxiliary_head.input_transform': 'resize_concat'}, []),
    ({'model.auxiliary_head.in_index': [1, 2], 'model.auxiliary_head.in_channels': [96, 96],
      'model.auxiliary_head.input_transform': 'resize_concat'},
     ['model.auxiliary_head.in_channels=192 but the maps its in_index=[1, 2] selects have 288']),
])
def test_segmentation_heads_read_existing_maps_of_their_width(options, expected):
    errors = backbone_fit_errors(_model(SEG_CFG, 'mmseg', **options))
    assert len(errors) == len(expected), errors
    for error, start in zip(errors, expected):
        assert error.startswith(start), error
        assert 'model.backbone (SwinTransformer' in error


def _detector(neck: dict, **backbone):
    """An mmvtx Swin under an mmdet neck built from its config (what a detector holds)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from torch import nn

    from mmvtx.models.backbones import SwinTransformer
    register_all_modules(init_default_scope=False)
    model = nn.Module()
    model.backbone = SwinTransformer(arch='tiny', embed_dims=48, depths=(1, 1, 1, 1), **backbone)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model.neck = MODELS.build(neck)
    return model


def test_channel_mapper_of_the_detr_family_is_checked():
    """mmdet's ChannelMapper (DINO, Deformable DETR...) keeps no ``in_channels`` attribute: its
    input convolutions say what it takes; it fails in the forward with an empty AssertionError."""
    neck = dict(type='ChannelMapper', out_channels=16, num_outs=4)
    fits = _detector(dict(neck, in_channels=[96, 192, 384]), out_indices=(1, 2, 3))
    assert backbone_fit_errors(fits) == []
    # the R-50 recipe's in_channels kept, and the levels changed without the neck
    for in_channels, out_indices, want in [([512, 1024, 2048], (1, 2, 3), [96, 192, 384]),
                                           ([96, 192, 384], (0, 1, 2, 3), [48, 96, 192, 384])]:
        errors = backbone_fit_errors(_detector(dict(neck, in_channels=in_channels),
                                               out_indices=out_indices))
        assert errors == [f'model.neck.in_channels={in_channels} (ChannelMapper) but '
                          f'model.backbone (SwinTransformer, out_indices={out_indices}) returns '
                          f'{len(want)} maps with {want} channels: set neck.in_channels={want} '
                          "(or the backbone's out_indices to the levels the neck expects)"]


def test_yolov3_neck_takes_the_maps_deepest_first(monkeypatch):
    """mmdet's YOLOV3Neck lists in_channels deepest first (its R-50/Darknet configs: [1024, 512,
    256]): the reversed list fits and is not warned about; the advice is the reversed list."""
    import mmvtx.engine.model_fit as model_fit
    logged = []
    monkeypatch.setattr(model_fit, 'print_log', lambda msg, *a, **k: logged.append(msg))
    neck = dict(type='YOLOV3Neck', num_scales=3, out_channels=[32, 16, 8])
    fits = _detector(dict(neck, in_channels=[384, 192, 96]), out_indices=(1, 2, 3))
    assert backbone_fit_errors(fits) == [] and logged == []
    errors = backbone_fit_errors(_detector(dict(neck, in_channels=[96, 192, 384]),
                                           out_indices=(1, 2, 3)))
    assert len(errors) == 1, (errors, logged)
    assert errors[0].startswith('model.neck.in_channels=[96, 192, 384] (YOLOV3Neck) but '
                                'model.backbone (SwinTransformer, out_indices=(1, 2, 3)) returns 3 '
                                'maps with [96, 192, 384] channels: set neck.in_channels=[384, '
                                '192, 96] (deepest first'), errors
