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
     # mmseg takes resize_concat's widths as a list (an int fails its assertion): the list
     # is what the message asks for
     ['model.auxiliary_head.in_channels (summed by resize_concat to 192) but the maps its '
      'in_index=[1, 2] selects have [96, 192] channels (288 in all)']),
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


def test_resize_concat_advice_builds_and_fits():
    """Following the message for a ``resize_concat`` head gives a model mmseg builds and that
    fits (the advice was ``in_channels=288``, which mmseg's head refuses with an assertion)."""
    options = {'model.auxiliary_head.in_index': [1, 2],
               'model.auxiliary_head.in_channels': [96, 96],
               'model.auxiliary_head.input_transform': 'resize_concat'}
    error, = backbone_fit_errors(_model(SEG_CFG, 'mmseg', **options))
    assert error.endswith('set auxiliary_head.in_channels=[96, 192]'), error
    options['model.auxiliary_head.in_channels'] = [96, 192]
    assert backbone_fit_errors(_model(SEG_CFG, 'mmseg', **options)) == []


@pytest.mark.parametrize('c1_in_channels,expected', [
    (48, []),
    (256, ['model.decode_head.c1_in_channels=256 but its c1 branch reads the first map the '
           'backbone returns, of 48 channels: model.backbone (SwinTransformer, out_indices='
           '(0, 1, 2, 3)) returns 4 maps with [48, 96, 192, 384] channels: set '
           'decode_head.c1_in_channels=48']),
])
def test_deeplabv3plus_low_level_branch_reads_the_first_map(tmp_path, c1_in_channels, expected):
    """mmseg's DeepLabV3+ head with a swapped backbone: its ``c1`` branch takes the stride-4
    map (``inputs[0]``) whatever ``in_index`` says; a width the backbone does not have failed
    in the first forward with a convolution's shape message."""
    (tmp_path / 'cfg.py').write_text(
        "_base_ = 'mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py'\n"
        "custom_imports = dict(imports=['mmvtx'], allow_failed_imports=False)\n"
        "model = dict(pretrained=None, backbone=dict(_delete_=True, type='mmvtx.SwinTransformer',"
        " embed_dims=48, depths=(1, 1, 1, 1)),\n"
        f"    decode_head=dict(in_channels=384, channels=16, c1_in_channels={c1_in_channels},"
        " c1_channels=8, dilations=(1, 2), num_classes=4),\n"
        "    auxiliary_head=dict(in_channels=192, channels=8, num_classes=4))\n")
    assert backbone_fit_errors(_model(str(tmp_path / 'cfg.py'), 'mmseg')) == expected


@pytest.mark.parametrize('base,head,decoder', [
    ('mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py', 'Mask2FormerHead',
     'MSDeformAttnPixelDecoder'),
    ('maskformer/maskformer_r50-d32_8xb2-160k_ade20k-512x512.py', 'MaskFormerHead',
     'PixelDecoder'),
])
@pytest.mark.parametrize('in_channels,out_indices,expected', [
    ([48, 96, 192, 384], (0, 1, 2, 3), ''),
    ([96, 192, 384], (1, 2, 3), ''),
    ([96, 192, 384, 768], (0, 1, 2, 3), ' but model.backbone (SwinTransformer, out_indices=(0, 1, '
     '2, 3)) returns 4 maps with [48, 96, 192, 384] channels: set decode_head.in_channels='
     '[48, 96, 192, 384]'),
])
def test_maskformer_heads_pixel_decoder_takes_every_map(tmp_path, base, head, decoder,
                                                        in_channels, out_indices, expected):
    """mmseg's MaskFormer/Mask2Former heads feed every backbone map to mmdet's pixel decoders;
    other widths failed in the first forward with a convolution's shape message."""
    strides = [4, 8, 16, 32][-len(in_channels):] if head == 'Mask2FormerHead' else None
    (tmp_path / 'cfg.py').write_text(
        f"_base_ = 'mmseg::{base}'\n"
        "custom_imports = dict(imports=['mmdet.models', 'mmvtx'], allow_failed_imports=False)\n"
        "model = dict(backbone=dict(_delete_=True, type='mmvtx.SwinTransformer', embed_dims=48,"
        f" depths=(1, 1, 1, 1), out_indices={out_indices}),\n"
        f"    decode_head=dict(in_channels={in_channels}"
        + (f", strides={strides}))\n" if strides else "))\n"))
    errors = backbone_fit_errors(_model(str(tmp_path / 'cfg.py'), 'mmseg'))
    if not expected:
        assert errors == []
    else:
        assert errors == [f'model.decode_head.in_channels={in_channels} ({head}, read by its '
                          f'{decoder})' + expected]


CVT = dict(type='mmvtx.CvT', embed_dims=(16, 48, 96), depths=(1, 1, 1), num_heads=(1, 3, 6),
           output_cls_token=True)
CVT_DESC = ('model.backbone (CvT, out_indices=(0, 1, 2, 3)) returns 4 maps with [16, 48, 96, 96] '
            'channels and then its [CLS] token (B x C, output_cls_token=True)')


@pytest.mark.parametrize('options,expected', [
    # the [CLS] token comes after the maps: in_index=-1 (mmseg's default) or 4 reads it
    ({'model.decode_head.in_index': [0, 1, 2, 3], 'model.auxiliary_head.in_index': -2}, []),
    ({'model.decode_head.in_index': [0, 1, 2, 3], 'model.auxiliary_head.in_index': -1},
     [f'model.auxiliary_head.in_index=-1 selects the [CLS] token ([-1]), not a map: {CVT_DESC}: '
      'select the maps by 0..3 (or set backbone.output_cls_token=False)']),
    ({'model.decode_head.in_index': [1, 2, 3, 4], 'model.auxiliary_head.in_index': 3},
     [f'model.decode_head.in_index=[1, 2, 3, 4] selects the [CLS] token ([4]), not a map: '
      f'{CVT_DESC}: select the maps by 0..3 (or set backbone.output_cls_token=False)']),
])
def test_a_returned_cls_token_is_not_a_map_for_heads(options, expected):
    """A head reading the [CLS] token (``B x C``) failed in the first forward inside a conv;
    the hook counted only the maps, so ``in_index=-1`` looked like the last map."""
    model = _model(SEG_CFG, 'mmseg', **{'model.backbone': dict(CVT, _delete_=True),
                                        'model.decode_head.in_channels': [16, 48, 96, 96],
                                        'model.auxiliary_head.in_channels': 96, **options})
    assert backbone_fit_errors(model) == expected


def test_a_returned_cls_token_is_refused_for_every_map_necks():
    """mmdet's FPN takes every output: with the [CLS] token it failed with an empty
    AssertionError in the first forward."""
    model = _model(DET_CFG, 'mmdet', **{'model.backbone': dict(CVT, _delete_=True),
                                        'model.neck.in_channels': [16, 48, 96, 96]})
    assert backbone_fit_errors(model) == [
        f'model.neck (FPN) takes every output of the backbone as a map: {CVT_DESC}: set '
        'backbone.output_cls_token=False']


@pytest.mark.parametrize('base,expected', [
    # MSDeformAttnPixelDecoder reads its in_channels' count of outputs from the first
    ('mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py', []),
    # mmdet's PixelDecoder reads the last output as the top map (a conv on B x C failed)
    ('maskformer/maskformer_r50-d32_8xb2-160k_ade20k-512x512.py',
     [f'model.decode_head (MaskFormerHead) reads the last output as a map, here the [CLS] '
      f'token: {CVT_DESC}: set backbone.output_cls_token=False']),
])
def test_a_returned_cls_token_and_maskformer_pixel_decoders(tmp_path, base, expected):
    (tmp_path / 'cfg.py').write_text(
        f"_base_ = 'mmseg::{base}'\n"
        "custom_imports = dict(imports=['mmdet.models', 'mmvtx'], allow_failed_imports=False)\n"
        f"model = dict(backbone=dict(_delete_=True, **{CVT!r}),\n"
        "    decode_head=dict(in_channels=[16, 48, 96, 96]))\n")
    assert backbone_fit_errors(_model(str(tmp_path / 'cfg.py'), 'mmseg')) == expected


def _mln_vit(tmp_path, **neck):
    """mmseg's ViT recipe (MultiLevelNeck, scales [4, 2, 1, 0.5]) with mmvtx's ViT swapped in."""
    options = {k: neck.pop(k) for k in list(neck) if k.startswith('model.')}  # overrides
    (tmp_path / 'cfg.py').write_text(
        "_base_ = 'mmseg::vit/vit_vit-b16_mln_upernet_8xb2-80k_ade20k-512x512.py'\n"
        "custom_imports = dict(imports=['mmvtx'], allow_failed_imports=False)\n"
        "model = dict(pretrained=None, backbone=dict(_delete_=True, type='mmvtx.ViT',"
        " embed_dims=64, num_layers=1, num_heads=2),\n"
        f"    neck=dict(out_channels=32, **{neck!r}), decode_head=dict(channels=32),\n"
        "    auxiliary_head=dict(channels=16))\n")
    return _model(str(tmp_path / 'cfg.py'), 'mmseg', **options)


def test_multilevel_neck_that_builds_the_pyramid_from_one_map_passes(tmp_path):
    """One stride-16 map into MultiLevelNeck is how mmseg's ViT recipes make their pyramid: no
    advice to remove the neck; a wrong width gets the plain in_channels advice."""
    from unittest import mock
    one_map = {'model.backbone.out_indices': (2,)}
    with mock.patch('mmvtx.engine.model_fit.print_log') as log:
        assert backbone_fit_errors(_mln_vit(tmp_path, in_channels=[64], **one_map)) == []
    assert not log.called
    error, = backbone_fit_errors(_mln_vit(tmp_path, in_channels=[768], **one_map))
    assert error.endswith('returns 1 maps with [64] channels: set neck.in_channels=[64] (or the '
                          "backbone's out_indices to the levels the neck expects)"), error


def test_multilevel_neck_advice_names_its_rescaling(tmp_path):
    """mmseg's MultiLevelNeck resizes stride-16 maps by [4, 2, 1, 0.5]; on mmvtx's pyramid the
    old advice (in_channels alone) gave maps at strides 1/4/16/64: a full-resolution map."""
    error, = backbone_fit_errors(_mln_vit(tmp_path))
    assert error.startswith('model.neck.in_channels=[768, 768, 768, 768] (MultiLevelNeck) but '
                            'model.backbone (ViT, out_indices=(0, 1, 2, 3)) returns 4 maps with '
                            '[16, 32, 64, 64] channels. model.neck (MultiLevelNeck, scales=[4, 2, '
                            '1, 0.5])'), error
    assert error.endswith('already at strides [4, 8, 16, 32], which it would turn into strides '
                          '[1, 4, 16, 64]: remove the neck (model.neck=None, the heads\' '
                          'in_channels set to [16, 32, 64, 64]) or keep it with '
                          'neck.in_channels=[16, 32, 64, 64] and neck.scales=[1, 1, 1, 1]'), error


@pytest.mark.parametrize('scales,warned', [([4, 2, 1, 0.5], True), ([1, 1, 1, 1], False)])
def test_multilevel_neck_that_fits_runs_with_a_warning_on_rescaling(tmp_path, scales, warned):
    from unittest import mock
    model = _mln_vit(tmp_path, in_channels=[16, 32, 64, 64], scales=scales)
    with mock.patch('mmvtx.engine.model_fit.print_log') as log:
        assert backbone_fit_errors(model) == []
    assert log.called == warned
    if warned:
        assert 'which it would turn into strides [1, 4, 16, 64]' in log.call_args[0][0]


def test_feature2pyramid_on_a_pyramid_is_refused_naming_the_fix(tmp_path):
    """mmseg's MAE/BEiT recipes: Feature2Pyramid (no in_channels, so the hook passed it)
    failed in the first forward inside its transposed convolution."""
    def model(**options):
        (tmp_path / 'cfg.py').write_text(
            "_base_ = 'mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py'\n"
            "custom_imports = dict(imports=['mmvtx'], allow_failed_imports=False)\n"
            "model = dict(pretrained=None, backbone=dict(_delete_=True, type='mmvtx.ViT',"
            " embed_dims=64, num_layers=1, num_heads=2), neck=dict(embed_dim=64),\n"
            "    decode_head=dict(in_channels=[64] * 4, channels=32),"
            " auxiliary_head=dict(in_channels=64, channels=16))\n")
        return _model(str(tmp_path / 'cfg.py'), 'mmseg', **options)
    assert backbone_fit_errors(model()) == [
        'model.backbone (ViT, out_indices=(0, 1, 2, 3)) returns 4 maps with [16, 32, 64, 64] '
        'channels. model.neck (Feature2Pyramid, rescales=[4, 2, 1, 0.5]) resizes maps that are '
        "all at stride 16 (mmseg's BEiT/MAE) into a pyramid; ViT's maps are already at strides "
        "[4, 8, 16, 32], which it would turn into strides [1, 4, 16, 64]: remove the neck "
        "(model.neck=None, the heads' in_channels set to [16, 32, 64, 64])"]
    assert backbone_fit_errors(model(**{'model.neck': None,
                                        'model.decode_head.in_channels': [16, 32, 64, 64]})) == []
    # maps of equal widths run through it (wrong strides): a warning, not a refusal
    from unittest import mock
    equal = model(**{'model.backbone': dict(
        _delete_=True, type='mmvtx.CvT', embed_dims=(64, 64, 64), depths=(1, 1, 1),
        num_heads=(1, 1, 1))})
    with mock.patch('mmvtx.engine.model_fit.print_log') as log:
        assert backbone_fit_errors(equal) == []
    assert 'which it would turn into strides [1, 4, 16, 64]' in log.call_args[0][0]
    # the [CLS] token as a fifth input: its assertion (one input per rescale) failed
    token = model(**{'model.backbone': dict(
        _delete_=True, type='mmvtx.CvT', embed_dims=(64, 64, 64), depths=(1, 1, 1),
        num_heads=(1, 1, 1), output_cls_token=True)})
    error, = backbone_fit_errors(token)
    assert error.startswith('model.neck (Feature2Pyramid) takes every output of the backbone as '
                            'a map: ') and error.endswith('set backbone.output_cls_token=False')


@pytest.mark.parametrize('cfg,scope', [(DET_CFG, 'mmdet'), (SEG_CFG, 'mmseg')])
def test_normalisation_of_other_input_channels_is_checked(monkeypatch, cfg, scope):
    """in_channels=4 (RGB-D) with the recipe's 3-value mean/std: the first batch failed in the
    data preprocessor with 'The size of tensor a (4) must match the size of tensor b (3)';
    refused before the run naming both. With 4 values it fits; bgr_to_rgb (which mmdet and
    mmseg apply to 3-channel images only) is then a warning: the channels arrive as loaded."""
    from mmvtx.engine import model_fit
    logged = []
    monkeypatch.setattr(model_fit, 'print_log', lambda msg, **kw: logged.append(msg))
    errors = backbone_fit_errors(_model(cfg, scope, **{'model.backbone.in_channels': 4}))
    assert [e.split(' (')[0] for e in errors] == [
        'model.data_preprocessor.mean has 3 values', 'model.data_preprocessor.std has 3 values']
    assert all('takes in_channels=4: give one value' + (
        ', or set mean=None, std=None and normalise in the pipeline (DetDataPreprocessor '
        'takes 1 or 3 values)' if scope == 'mmdet' else ' per input channel') in e
        for e in errors), errors
    # (mmdet's preprocessor takes 1 or 3 values: one for every channel)
    n = 1 if scope == 'mmdet' else 4
    four = {'model.backbone.in_channels': 4, 'model.data_preprocessor.mean': [120.0] * n,
            'model.data_preprocessor.std': [60.0] * n}
    logged.clear()
    assert backbone_fit_errors(_model(cfg, scope, **four)) == []
    assert any('3-channel images only' in m for m in logged), logged
    logged.clear()
    assert backbone_fit_errors(_model(cfg, scope, **dict(
        four, **{'model.data_preprocessor.bgr_to_rgb': False}))) == []
    assert not any('3-channel images only' in m for m in logged), logged
