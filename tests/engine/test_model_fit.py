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
    # the levels, the neck and the strides the heads read the neck's maps at changed together
    assert backbone_fit_errors(_model(DET_CFG, 'mmdet', **{
        'model.backbone.out_indices': (1, 2, 3), 'model.neck.in_channels': [96, 192, 384],
        'model.rpn_head.anchor_generator.strides': [8, 16, 32, 64, 128],
        'model.roi_head.bbox_roi_extractor.featmap_strides': [8, 16, 32, 64],
        'model.roi_head.mask_roi_extractor.featmap_strides': [8, 16, 32, 64]})) == []
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
        f"    neck=dict(out_channels=32, **{neck!r}),\n"
        # the heads take the neck's maps (32 channels; the checks reach them since the heads
        # after a neck are checked too)
        "    decode_head=dict(in_channels=[32] * 4, channels=32),\n"
        "    auxiliary_head=dict(in_channels=32, channels=16))\n")
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


SWIN_MINI = ("dict(_delete_=True, type='mmvtx.SwinTransformer', embed_dims=32, depths=(1, 1, 1, 1),"
             " num_heads=(1, 1, 1, 1)")


def _recipe(tmp_path, scope, base, backbone, **model):
    """The model of an installed mmdet/mmseg recipe with ``backbone`` swapped in."""
    pretrained = 'pretrained=None, ' if scope == 'mmseg' else ''
    (tmp_path / 'cfg.py').write_text(
        f"_base_ = '{scope}::{base}'\n"
        "custom_imports = dict(imports=['mmvtx'], allow_failed_imports=False)\n"
        f"model = dict({pretrained}backbone={backbone}), **{model!r})\n")
    return _model(str(tmp_path / 'cfg.py'), scope)


def _mmdet_recipe(tmp_path, base, backbone='', **model):
    """An mmdet recipe with a small mmvtx Swin (channels [32, 64, 128, 256]) swapped in."""
    return _recipe(tmp_path, 'mmdet', base, SWIN_MINI + backbone, **model)


def test_yolof_dilated_encoder_reads_the_last_maps_width(tmp_path):
    """mmdet's YOLOF: DilatedEncoder's in_channels is an int, the last map's (the hook passed
    it: the R-50 recipe's 2048 failed in the first forward inside a convolution)."""
    error, = backbone_fit_errors(_mmdet_recipe(tmp_path, 'yolof/yolof_r50-c5_8xb8-1x_coco.py',
                                               ', out_indices=(3,)'))
    assert error == ('model.neck.in_channels=2048 (DilatedEncoder, reads the last map only) but '
                     'model.backbone (SwinTransformer, out_indices=(3,)) returns 1 maps with '
                     '[256] channels: set neck.in_channels=256')
    assert backbone_fit_errors(_mmdet_recipe(
        tmp_path, 'yolof/yolof_r50-c5_8xb8-1x_coco.py', ', out_indices=(3,)',
        neck=dict(in_channels=256))) == []
    # it reads feats[-1] whatever the rest: the four maps fit as well
    assert backbone_fit_errors(_mmdet_recipe(
        tmp_path, 'yolof/yolof_r50-c5_8xb8-1x_coco.py', neck=dict(in_channels=256))) == []


@pytest.mark.parametrize('in_channels,expected', [
    (384, []),
    (512, ['model.neck.in_channels=512 (CTResNetNeck, reads the last map only) but model.backbone '
           '(SwinTransformer, out_indices=(0, 1, 2, 3)) returns 4 maps with [48, 96, 192, 384] '
           'channels: set neck.in_channels=384']),
])
def test_centernet_neck_reads_the_last_maps_width(in_channels, expected):
    """mmdet's CTResNetNeck overwrites its in_channels attribute with its last deconv's width
    (64 here): its first convolution says what it takes."""
    neck = dict(type='CTResNetNeck', in_channels=in_channels, num_deconv_filters=(32, 16),
                num_deconv_kernels=(4, 4), use_dcn=False)
    assert backbone_fit_errors(_detector(neck)) == expected


def test_centernet_head_takes_the_necks_last_deconv_width(tmp_path):
    """mmdet's CenterNetHead keeps no in_channels: the neck's num_deconv_filters changed alone
    failed in the first forward inside its convolution."""
    base = 'centernet/centernet_r18_8xb16-crop512-140e_coco.py'
    neck = dict(in_channels=256, num_deconv_filters=(128, 64, 32))
    assert backbone_fit_errors(_mmdet_recipe(tmp_path, base, ', out_indices=(3,)',
                                             neck=neck)) == [
        'model.bbox_head.in_channels=64 (CenterNetHead, runs on every map) but model.neck '
        '(CTResNetNeck) returns 1 maps with [32] channels: set bbox_head.in_channels=32']
    assert backbone_fit_errors(_mmdet_recipe(tmp_path, base, ', out_indices=(3,)', neck=neck,
                                             bbox_head=dict(in_channels=32))) == []


def test_last_map_necks_and_a_returned_cls_token():
    model = _model(DET_CFG, 'mmdet', **{
        'model.backbone': dict(CVT, _delete_=True),
        'model.neck': dict(_delete_=True, type='DilatedEncoder', in_channels=96, out_channels=16,
                           block_mid_channels=8, num_residual_blocks=1,
                           block_dilations=[1])})
    assert backbone_fit_errors(model) == [
        f'model.neck (DilatedEncoder) reads the last output as a map, here the [CLS] token: '
        f'{CVT_DESC}: set backbone.output_cls_token=False']


LIBRA_FPN = dict(type='FPN', in_channels=[48, 96, 192, 384], out_channels=32, num_outs=5)


@pytest.mark.parametrize('necks,expected', [
    ([LIBRA_FPN, dict(type='BFP', in_channels=32, num_levels=5)], []),
    # the FPN's out_channels changed alone: a convolution's shape message in the first forward
    ([LIBRA_FPN, dict(type='BFP', in_channels=256, num_levels=5)],
     'model.neck[1].in_channels=256 (BFP, num_levels=5, takes every map, each of in_channels '
     'channels) but model.neck[0] (FPN) returns 5 maps with [32, 32, 32, 32, 32] channels: set '
     'neck[1].in_channels=32'),
    # its num_outs changed alone: BFP's empty AssertionError in the first forward
    ([dict(LIBRA_FPN, num_outs=4), dict(type='BFP', in_channels=32, num_levels=5)],
     'model.neck[1].in_channels=32 (BFP, num_levels=5, takes every map, each of in_channels '
     'channels) but model.neck[0] (FPN) returns 4 maps with [32, 32, 32, 32] channels: set '
     'neck[1].num_levels=4'),
    # the first neck is named as neck[0]
    ([dict(LIBRA_FPN, in_channels=[96, 192, 384, 768]), dict(type='BFP', in_channels=32,
                                                              num_levels=5)],
     'model.neck[0].in_channels=[96, 192, 384, 768] (FPN) but model.backbone (SwinTransformer, '
     'out_indices=(0, 1, 2, 3)) returns 4 maps with [48, 96, 192, 384] channels: set '
     "neck[0].in_channels=[48, 96, 192, 384] (or the backbone's out_indices to the levels the "
     'neck expects)'),
    # three in a row: the third reads the second's (BFP keeps the widths and the count)
    ([LIBRA_FPN, dict(type='BFP', in_channels=32, num_levels=5),
      dict(type='FPN', in_channels=[32] * 4, out_channels=16, num_outs=4)],
     'model.neck[2].in_channels=[32, 32, 32, 32] (FPN) but model.neck[1] (BFP) returns 5 maps '
     'with [32, 32, 32, 32, 32] channels: set neck[2].in_channels=[32, 32, 32, 32, 32] (or the '
     'settings of model.neck[1] to what it takes)'),
])
def test_chained_necks_each_take_what_the_one_before_returns(necks, expected):
    """A config's list of necks (Libra R-CNN's FPN + BFP, ATSS's FPN + DyHead) is an
    nn.Sequential: only the first was checked, and mmdet checks none of the rest."""
    errors = backbone_fit_errors(_detector(necks))
    if not expected:
        assert errors == []
    else:
        assert len(errors) == 1 and errors[0].startswith(expected), errors


def test_same_width_necks_after_the_backbone_need_one_width():
    """BFP/DyHead straight on the backbone: its maps are of several widths."""
    error, = backbone_fit_errors(_detector(dict(type='BFP', in_channels=384, num_levels=4)))
    assert error == ('model.neck.in_channels=384 (BFP, num_levels=4, takes every map, each of '
                     'in_channels channels) but model.backbone (SwinTransformer, out_indices=(0, '
                     '1, 2, 3)) returns 4 maps with [48, 96, 192, 384] channels: its maps are of '
                     '4 widths: put a neck that maps them to one width before it (e.g. an FPN), '
                     'with out_channels=384')
    assert backbone_fit_errors(_detector(dict(type='BFP', in_channels=384, num_levels=1,
                                              refine_level=0), out_indices=(3,))) == []
    # one width, another count (its refine_level, 2, must stay below it)
    error, = backbone_fit_errors(_detector(dict(type='BFP', in_channels=384, num_levels=4),
                                           out_indices=(3,)))
    assert error.endswith('returns 1 maps with [384] channels: set neck.num_levels=1 (and '
                          'neck.refine_level below 1)'), error


def test_dyhead_after_an_fpn_takes_its_width(tmp_path):
    """mmdet's ATSS + DyHead recipe (FPN then DyHead) with the FPN's width changed alone."""
    base = 'dyhead/atss_r50_fpn_dyhead_1x_coco.py'
    fpn = dict(in_channels=[32, 64, 128, 256], out_channels=256, start_level=1, num_outs=5,
               add_extra_convs='on_output', type='FPN')
    neck = [fpn, dict(type='DyHead', in_channels=256, out_channels=256, num_blocks=1)]
    assert backbone_fit_errors(_mmdet_recipe(tmp_path, base, neck=neck)) == []
    neck[0] = dict(fpn, out_channels=64)
    error, = backbone_fit_errors(_mmdet_recipe(tmp_path, base, neck=neck))
    assert error == ('model.neck[1].in_channels=256 (DyHead, takes every map, each of in_channels '
                     'channels) but model.neck[0] (FPN) returns 5 maps with [64, 64, 64, 64, 64] '
                     'channels: set neck[1].in_channels=64')


SSD = 'ssd/ssd300_coco.py'
SSD_FITS = dict(neck=dict(in_channels=(64, 128), out_channels=(64, 128, 512, 256, 256, 256)),
                bbox_head=dict(in_channels=(64, 128, 512, 256, 256, 256)))


def test_ssd_neck_takes_every_map_and_the_advice_builds_and_runs(tmp_path):
    """mmdet's SSDNeck keeps no in_channels (the hook passed it: the VGG recipe's (512, 1024)
    failed in the first forward inside its L2 norm); its out_channels must start with its
    in_channels (an assertion when in_channels alone changes) and the head takes them."""
    import torch
    error, = backbone_fit_errors(_mmdet_recipe(tmp_path, SSD, ', out_indices=(1, 2)'))
    assert error == (
        'model.neck.in_channels=(512, 1024) (SSDNeck) but model.backbone (SwinTransformer, '
        'out_indices=(1, 2)) returns 2 maps with [64, 128] channels: set neck.in_channels=(64, '
        '128), neck.out_channels=(64, 128, 512, 256, 256, 256) (SSDNeck asserts they start with '
        'its in_channels) and bbox_head.in_channels=(64, 128, 512, 256, 256, 256) (or the '
        "backbone's out_indices to the levels the neck expects)")
    model = _mmdet_recipe(tmp_path, SSD, ', out_indices=(1, 2)', **SSD_FITS)
    assert backbone_fit_errors(model) == []
    with torch.no_grad():
        feats = model.eval().extract_feat(torch.zeros(1, 3, 300, 300))
        cls_scores, _ = model.bbox_head(feats)
    assert [f.shape[1] for f in feats] == [64, 128, 512, 256, 256, 256]
    assert len(cls_scores) == 6
    # the neck's part of the advice followed, the head's not
    error, = backbone_fit_errors(_mmdet_recipe(tmp_path, SSD, ', out_indices=(1, 2)',
                                               neck=SSD_FITS['neck']))
    assert error == ('model.bbox_head.in_channels=(512, 1024, 512, 256, 256, 256) (SSDHead, one '
                     'per map) but model.neck (SSDNeck) returns 6 maps with [64, 128, 512, 256, '
                     '256, 256] channels: set bbox_head.in_channels=(64, 128, 512, 256, 256, '
                     '256)')


def test_ssd_neck_given_more_maps_than_it_takes(tmp_path):
    """Three maps into the neck made for two: its first extra level read the stride-32 map (a
    convolution's shape message); the head and its anchors then need one more level."""
    error, = backbone_fit_errors(_mmdet_recipe(tmp_path, SSD, ', out_indices=(1, 2, 3)',
                                               **SSD_FITS))
    assert error.startswith('model.neck.in_channels=(64, 128) (SSDNeck) but model.backbone '
                            '(SwinTransformer, out_indices=(1, 2, 3)) returns 3 maps with '
                            '[64, 128, 256] channels: set neck.in_channels=(64, 128, 256), '
                            'neck.out_channels=(64, 128, 256, 512, 256, 256, 256)'), error
    assert ("with bbox_head.anchor_generator's strides and ratios for 7 levels (it has 6)"
            in error), error


@pytest.mark.parametrize('scope,neck', [
    ('mmdet', dict(type='HRFPN', out_channels=16, num_outs=5)),
    ('mmdet', dict(type='SSH', num_scales=3, out_channels=[16] * 3)),
    ('mmdet', dict(type='FPN_DropBlock', out_channels=16, num_outs=3)),
    ('mmdet', dict(type='NASFCOS_FPN', out_channels=16, num_outs=5, start_level=1,
                   end_level=-1)),
    ('mmseg', dict(type='JPU', mid_channels=16)),
])
def test_more_necks_that_take_every_map_are_refused(scope, neck):
    """Necks that assert one in_channels entry per map (or read in_channels[i] channels from
    map i): another list was only warned about and failed in the first forward (a bare
    AssertionError or a convolution's shape message). mmseg's JPU asserts a tuple: the advice
    keeps the config's form."""
    from mmvtx.models.backbones import SwinTransformer
    from torch import nn
    if scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    tuple_ = neck['type'] == 'JPU'
    wrong = (512, 1024, 2048) if tuple_ else [512, 1024, 2048]
    model = nn.Module()
    model.backbone = SwinTransformer(arch='tiny', embed_dims=48, depths=(1, 1, 1, 1),
                                     out_indices=(1, 2, 3))
    with DefaultScope.overwrite_default_scope(scope):
        model.neck = MODELS.build(dict(neck, in_channels=wrong))
    want = '(96, 192, 384)' if tuple_ else '[96, 192, 384]'
    assert backbone_fit_errors(model) == [
        f"model.neck.in_channels={wrong} ({neck['type']}) but model.backbone (SwinTransformer, "
        'out_indices=(1, 2, 3)) returns 3 maps with [96, 192, 384] channels: set '
        f"neck.in_channels={want} (or the backbone's out_indices to the levels the neck expects)"]
    with DefaultScope.overwrite_default_scope(scope):
        model.neck = MODELS.build(dict(neck, in_channels=eval(want)))
    assert backbone_fit_errors(model) == []


def _mmseg_recipe(tmp_path, base, backbone, **model):
    return _recipe(tmp_path, 'mmseg', base, backbone, **model)


def test_setr_mla_neck_on_a_pyramid_is_refused(tmp_path):
    """mmseg's SETR-MLA: MLANeck adds its maps together (mmseg's ViT: all at stride 16); on
    mmvtx's maps at strides 4..32 it failed in the first forward with a tensor size message
    whatever its in_channels."""
    vit = "dict(_delete_=True, type='mmvtx.ViT', embed_dims=64, num_layers=1, num_heads=2"
    base = 'setr/setr_vit-l_mla_8xb2-160k_ade20k-512x512.py'
    error, = backbone_fit_errors(_mmseg_recipe(tmp_path, base, vit,
                                               neck=dict(in_channels=[16, 32, 64, 64])))
    assert error == (
        "model.neck (MLANeck) adds the maps together, so they must be of one size (mmseg's ViT: "
        'all at stride 16), but model.backbone (ViT, out_indices=(0, 1, 2, 3)) returns 4 maps '
        "with [16, 32, 64, 64] channels, at strides [4, 8, 16, 32]: use a neck made for a "
        "pyramid (e.g. mmseg's FPN with in_channels=[16, 32, 64, 64]) with a head that takes one "
        '(e.g. UPerHead), or remove the neck')
    # one map: the width is what is checked
    error, = backbone_fit_errors(_mmseg_recipe(tmp_path, base, vit + ', out_indices=(2,)',
                                               neck=dict(in_channels=[1024])))
    assert error.startswith('model.neck.in_channels=[1024] (MLANeck) but model.backbone (ViT, '
                            'out_indices=(2,)) returns 1 maps with [64] channels: set '
                            'neck.in_channels=[64]'), error


def test_segmentation_heads_after_a_neck_read_its_maps(tmp_path):
    """With a neck, mmseg's heads were not checked: Semantic FPN with the FPN's out_channels or
    num_outs changed alone failed in the first forward (a convolution's shape message, an
    IndexError)."""
    base = 'sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'
    neck = dict(in_channels=[32, 64, 128, 256])
    assert backbone_fit_errors(_mmseg_recipe(tmp_path, base, SWIN_MINI, neck=neck)) == []
    assert backbone_fit_errors(_mmseg_recipe(tmp_path, base, SWIN_MINI,
                                             neck=dict(neck, out_channels=64))) == [
        'model.decode_head.in_channels=[256, 256, 256, 256] but the maps its in_index=[0, 1, 2, '
        '3] selects have [64, 64, 64, 64] channels: model.neck (FPN) returns 4 maps with [64, 64, '
        '64, 64] channels: set decode_head.in_channels=[64, 64, 64, 64]']
    # the levels and the neck changed, not its num_outs (4 would add a pooled level)
    assert backbone_fit_errors(_mmseg_recipe(
        tmp_path, base, SWIN_MINI + ', out_indices=(1, 2, 3)',
        neck=dict(in_channels=[64, 128, 256], num_outs=3))) == [
        'model.decode_head.in_index=[0, 1, 2, 3] selects maps [3] that do not exist: model.neck '
        '(FPN) returns 3 maps with [256, 256, 256] channels']


def test_jpu_outputs_and_the_heads_that_read_them(tmp_path):
    """mmseg's FastFCN: JPU passes on all but the last map it takes, then its own (mid_channels
    per dilation); a head reading a passed-on map by the recipe's in_index is named, with the
    index of the map of its width."""
    base = 'fastfcn/fastfcn_r50-d32_jpu_aspp_4xb4-80k_ade20k-512x512.py'
    errors = backbone_fit_errors(_mmseg_recipe(tmp_path, base, SWIN_MINI,
                                               neck=dict(in_channels=(32, 64, 128, 256))))
    desc = 'model.neck (JPU) returns 4 maps with [32, 64, 128, 2048] channels'
    assert errors == [
        f'model.decode_head.in_channels=2048 but the maps its in_index=2 selects have 128 '
        f'channels: {desc}: set decode_head.in_channels=128 (or decode_head.in_index=3, the map '
        'of 2048 channels)',
        f'model.auxiliary_head.in_channels=1024 but the maps its in_index=1 selects have 64 '
        f'channels: {desc}: set auxiliary_head.in_channels=64']
    assert backbone_fit_errors(_mmseg_recipe(
        tmp_path, base, SWIN_MINI, neck=dict(in_channels=(32, 64, 128, 256)),
        decode_head=dict(in_index=3), auxiliary_head=dict(in_channels=64))) == []


def test_detection_heads_take_the_necks_width():
    """The shapes recipe with its FPN's out_channels changed alone (64 -> 32): mmdet's RPN and
    RoI heads failed in the first forward with a convolution's shape message; each setting
    that reads the neck's width is named."""
    desc = 'model.neck (FPN) returns 5 maps with [32, 32, 32, 32, 32] channels'
    assert backbone_fit_errors(_model(DET_CFG, 'mmdet', **{'model.neck.out_channels': 32})) == [
        f'model.rpn_head.in_channels=64 (RPNHead, runs on every map) but {desc}: set '
        'rpn_head.in_channels=32',
        'model.roi_head.bbox_roi_extractor.out_channels=64 (SingleRoIExtractor, pools the maps) '
        f'but {desc}: set roi_head.bbox_roi_extractor.out_channels=32',
        'model.roi_head.mask_roi_extractor.out_channels=64 (SingleRoIExtractor, pools the maps) '
        f'but {desc}: set roi_head.mask_roi_extractor.out_channels=32',
        'model.roi_head.bbox_head.in_channels=64 (Shared2FCBBoxHead, takes the pooled maps) but '
        f'{desc}: set roi_head.bbox_head.in_channels=32',
        'model.roi_head.mask_head.in_channels=64 (FCNMaskHead, takes the pooled maps) but '
        f'{desc}: set roi_head.mask_head.in_channels=32']
    assert backbone_fit_errors(_model(DET_CFG, 'mmdet', **{
        'model.neck.out_channels': 32, 'model.rpn_head.in_channels': 32,
        'model.roi_head.bbox_roi_extractor.out_channels': 32,
        'model.roi_head.mask_roi_extractor.out_channels': 32,
        'model.roi_head.bbox_head.in_channels': 32,
        'model.roi_head.mask_head.in_channels': 32})) == []


def test_retinanet_head_takes_the_necks_width(tmp_path):
    base = 'retinanet/retinanet_r50_fpn_1x_coco.py'
    neck = dict(in_channels=[64, 128, 256], start_level=0)
    assert backbone_fit_errors(_mmdet_recipe(tmp_path, base, ', out_indices=(1, 2, 3)',
                                             neck=neck)) == []
    assert backbone_fit_errors(_mmdet_recipe(tmp_path, base, ', out_indices=(1, 2, 3)',
                                             neck=dict(neck, out_channels=128))) == [
        'model.bbox_head.in_channels=256 (RetinaHead, runs on every map) but model.neck (FPN) '
        'returns 5 maps with [128, 128, 128, 128, 128] channels: set bbox_head.in_channels=128']


def _map_strides(model, size=128):
    """The strides of the maps the model's neck returns, measured on a ``size`` image."""
    import torch
    model.eval()
    with torch.no_grad():
        return [size // f.shape[-1] for f in model.extract_feat(torch.zeros(1, 3, size, size))]


@pytest.mark.parametrize('base', ['retinanet/retinanet_r50_fpn_1x_coco.py',
                                  'fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py'])
def test_fpn_start_level_and_the_heads_strides(tmp_path, base):
    """mmdet's RetinaNet/FCOS FPN skips the first map (start_level=1: ResNet's stride 4): the
    backbone's levels changed to (1, 2, 3) and the neck's in_channels with them (the advice for
    them) returned maps at strides 16..256 where the head places its priors at 8..128, and
    training ran on without a word. Refused naming start_level; its advice fits the maps."""
    neck = dict(in_channels=[64, 128, 256])
    errors = backbone_fit_errors(_mmdet_recipe(tmp_path, base, ', out_indices=(1, 2, 3)',
                                               neck=neck))
    key = 'anchor_generator.strides' if 'retinanet' in base else 'strides'
    head = 'RetinaHead' if 'retinanet' in base else 'FCOSHead'
    assert errors == [
        f'model.bbox_head.{key}=[8, 16, 32, 64, 128] ({head}) but model.neck (FPN) returns maps '
        'at strides [16, 32, 64, 128, 256]; model.backbone (SwinTransformer, out_indices=(1, 2, '
        '3)) returns 3 maps with [64, 128, 256] channels, at strides [8, 16, 32]: set '
        'neck.start_level=0 (it is 1: the neck skips the first 1 map(s) the backbone returns)']
    model = _mmdet_recipe(tmp_path, base, ', out_indices=(1, 2, 3)',
                          neck=dict(neck, start_level=0))
    assert backbone_fit_errors(model) == []
    assert _map_strides(model, 256) == [8, 16, 32, 64, 128]
    # the levels changed alone (the recipe's R-50 in_channels kept): the advice names both
    assert backbone_fit_errors(_mmdet_recipe(tmp_path, base, ', out_indices=(1, 2, 3)')) == [
        'model.neck.in_channels=[256, 512, 1024, 2048] (FPN) but model.backbone '
        '(SwinTransformer, out_indices=(1, 2, 3)) returns 3 maps with [64, 128, 256] channels: '
        'set neck.in_channels=[64, 128, 256] and neck.start_level=0 (or the backbone\'s '
        'out_indices to the levels the neck expects)']


def test_mask_rcnn_heads_strides_after_the_levels_changed():
    """The shapes recipe (Mask R-CNN) with out_indices=(1, 2, 3) and its neck's in_channels
    (what the neck's advice says): its RPN placed anchors at strides 4..64 and its RoI
    extractors pooled at 4..32 on maps at 8..128. Each is named with the strides that fit."""
    options = {'model.backbone.out_indices': (1, 2, 3), 'model.neck.in_channels': [96, 192, 384]}
    errors = backbone_fit_errors(_model(DET_CFG, 'mmdet', **options))
    assert [e.split(' but ')[0] + ' -> ' + e.split(': ')[-1] for e in errors] == [
        'model.rpn_head.anchor_generator.strides=[4, 8, 16, 32, 64] (RPNHead) -> set '
        'rpn_head.anchor_generator.strides=[8, 16, 32, 64, 128] (or the backbone\'s out_indices '
        'to the levels the heads expect)',
        'model.roi_head.bbox_roi_extractor.featmap_strides=[4, 8, 16, 32] (SingleRoIExtractor) -> '
        'set roi_head.bbox_roi_extractor.featmap_strides=[8, 16, 32, 64] (or the backbone\'s '
        'out_indices to the levels the heads expect)',
        'model.roi_head.mask_roi_extractor.featmap_strides=[4, 8, 16, 32] (SingleRoIExtractor) -> '
        'set roi_head.mask_roi_extractor.featmap_strides=[8, 16, 32, 64] (or the backbone\'s '
        'out_indices to the levels the heads expect)']
    assert all('model.neck (FPN) returns maps at strides [8, 16, 32, 64, 128]' in e
               for e in errors), errors


@pytest.mark.parametrize('base,head,decoder', [
    ('mask2former/mask2former_r50_8xb2-lsj-50e_coco.py', 'Mask2FormerHead',
     'MSDeformAttnPixelDecoder'),
    ('maskformer/maskformer_r50_ms-16xb1-75e_coco.py', 'MaskFormerHead',
     'TransformerEncoderPixelDecoder'),
])
def test_mmdet_maskformer_heads_pixel_decoder_takes_every_map(tmp_path, base, head, decoder):
    """mmdet's MaskFormer/Mask2Former keep no neck: their panoptic_head's pixel decoder takes
    every map (only mmseg's decode_head was checked)."""
    assert backbone_fit_errors(_mmdet_recipe(tmp_path, base)) == [
        f'model.panoptic_head.in_channels=[256, 512, 1024, 2048] ({head}, read by its {decoder}) '
        'but model.backbone (SwinTransformer, out_indices=(0, 1, 2, 3)) returns 4 maps with [32, '
        '64, 128, 256] channels: set panoptic_head.in_channels=[32, 64, 128, 256]']
    assert backbone_fit_errors(_mmdet_recipe(
        tmp_path, base, panoptic_head=dict(in_channels=[32, 64, 128, 256]))) == []


def test_dpt_head_on_maps_is_refused(tmp_path):
    """mmseg's DPT recipe with mmvtx's ViT: the old advice (decode_head.in_channels) gave a model
    that failed in the first forward with an empty AssertionError (DPTHead unpacks each input as
    a (map, [CLS] token) pair and resizes stride-16 maps into a pyramid)."""
    vit = "dict(_delete_=True, type='mmvtx.ViT', embed_dims=64, num_layers=1, num_heads=2"
    for in_channels in ([768] * 4, [16, 32, 64, 64]):
        errors = backbone_fit_errors(_mmseg_recipe(
            tmp_path, 'dpt/dpt_vit-b16_8xb2-160k_ade20k-512x512.py', vit,
            decode_head=dict(in_channels=in_channels)))
        assert errors == [
            'model.decode_head (DPTHead) takes a (map, [CLS] token) pair per level, each map at '
            "stride 16 (mmseg's ViT with output_cls_token=True), which it resizes into a "
            'pyramid; model.backbone (ViT, out_indices=(0, 1, 2, 3)) returns 4 maps with [16, 32, '
            '64, 64] channels, maps already at strides 4..32: use a head made for a pyramid of '
            'maps (e.g. UPerHead with decode_head.in_channels=[16, 32, 64, 64])']


def test_knet_kernel_generate_head_reads_the_maps(tmp_path):
    """mmseg's K-Net: its IterativeDecodeHead keeps no in_channels; the UPerHead inside it
    (kernel_generate_head) took the Swin-T recipe's widths and failed in the first forward with
    a convolution's shape message."""
    base = 'knet/knet-s3_swin-t_upernet_8xb2-adamw-80k_ade20k-512x512.py'
    errors = backbone_fit_errors(_mmseg_recipe(tmp_path, base, SWIN_MINI,
                                               auxiliary_head=dict(in_channels=128)))
    assert errors == [
        'model.decode_head.kernel_generate_head.in_channels=[96, 192, 384, 768] but the maps its '
        'in_index=[0, 1, 2, 3] selects have [32, 64, 128, 256] channels: model.backbone '
        '(SwinTransformer, out_indices=(0, 1, 2, 3)) returns 4 maps with [32, 64, 128, 256] '
        'channels: set decode_head.kernel_generate_head.in_channels=[32, 64, 128, 256]']
    assert backbone_fit_errors(_mmseg_recipe(
        tmp_path, base, SWIN_MINI, auxiliary_head=dict(in_channels=128),
        decode_head=dict(kernel_generate_head=dict(in_channels=[32, 64, 128, 256])))) == []


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


FCN = 'fcn/fcn_r50-d8_4xb4-80k_ade20k-512x512.py'


def _fcn(tmp_path, **model):
    """mmseg's FCN recipe (its heads read the maps at in_index 3 and 2) with a small Swin."""
    return _recipe(tmp_path, 'mmseg', FCN, SWIN_MINI + model.pop('backbone', ''), **dict(
        dict(data_preprocessor=dict(size=(64, 64)), decode_head=dict(in_channels=256),
             auxiliary_head=dict(in_channels=128)), **model))


def _ddp_step_leaves_no_grad(model):
    """The backbone's parameters that one training step leaves without a gradient."""
    import torch
    from mmengine.model import revert_sync_batchnorm
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    model = revert_sync_batchnorm(model).train()
    sample = SegDataSample(gt_sem_seg=PixelData(data=torch.randint(0, 150, (1, 64, 64))),
                           metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64)))
    data = model.data_preprocessor(dict(inputs=[torch.zeros(3, 64, 64)] * 2,
                                        data_samples=[sample] * 2), True)
    loss, _ = model.parse_losses(model(**data, mode='loss'))
    loss.backward()
    return [n for n, p in model.backbone.named_parameters() if p.requires_grad and p.grad is None]


def test_maps_the_heads_never_read_are_named(tmp_path):
    """mmseg's FCN/PSPNet/DeepLabV3+ heads read one or two maps: with a swapped Swin (every
    level returned, as DESIGN's swap shows) its output norms of the other levels got no
    gradient, which DDP (tools/dist_train.sh) refuses at the second iteration with 'Expected to
    have finished reduction in the prior iteration'. Named before the run; the advice, followed,
    leaves every parameter a gradient and still fits."""
    from mmvtx.engine.model_fit import unread_maps_message
    model = _fcn(tmp_path)
    assert backbone_fit_errors(model) == []
    assert _ddp_step_leaves_no_grad(model) == ['norm0.weight', 'norm0.bias', 'norm1.weight',
                                               'norm1.bias']
    assert unread_maps_message(model) == (
        'model.backbone (SwinTransformer, out_indices=(0, 1, 2, 3)) returns 4 maps with [32, 64, '
        '128, 256] channels, but the model never reads the maps at strides [4, 8] (positions '
        "[0, 1]): the backbone's norm0.weight, norm0.bias, norm1.weight, norm1.bias get no "
        'gradient, which DDP (find_unused_parameters=False) refuses at the second iteration: set '
        'backbone.out_indices=(2, 3), decode_head.in_index=1, auxiliary_head.in_index=0 (the same '
        'model, without the maps it does not read), or find_unused_parameters=True')
    advised = _fcn(tmp_path, backbone=', out_indices=(2, 3)',
                   decode_head=dict(in_channels=256, in_index=1),
                   auxiliary_head=dict(in_channels=128, in_index=0))
    assert backbone_fit_errors(advised) == [] and unread_maps_message(advised) == ''
    assert _ddp_step_leaves_no_grad(advised) == []


@pytest.mark.parametrize('base', ['retinanet/retinanet_r50_fpn_1x_coco.py',
                                  'atss/atss_r50_fpn_1x_coco.py'])
def test_maps_an_fpn_skips_are_named(tmp_path, base):
    """DESIGN's swap on mmdet's RetinaNet/ATSS (neck.in_channels set to the 4 maps): their FPN
    keeps start_level=1 and never reads the stride-4 map; the advice (its levels dropped, the
    FPN from level 0) fits, strides included."""
    from mmvtx.engine.model_fit import unread_maps_message
    neck = dict(in_channels=[32, 64, 128, 256])
    if 'atss' in base:
        neck = dict(neck, start_level=1, end_level=-1)
    message = unread_maps_message(_mmdet_recipe(tmp_path, base, neck=neck))
    assert message.endswith(
        "never reads the maps at strides [4] (positions [0]): the backbone's norm0.weight, "
        'norm0.bias get no gradient, which DDP (find_unused_parameters=False) refuses at the '
        'second iteration: set backbone.out_indices=(1, 2, 3), neck.in_channels=[64, 128, 256], '
        'neck.start_level=0 (the same model, without the maps it does not read), or '
        'find_unused_parameters=True'), message
    advised = _mmdet_recipe(tmp_path, base, ', out_indices=(1, 2, 3)',
                            neck=dict(in_channels=[64, 128, 256], start_level=0))
    assert backbone_fit_errors(advised) == [] and unread_maps_message(advised) == ''
    assert _map_strides(advised, 256) == [8, 16, 32, 64, 128]


def test_maps_a_last_map_neck_skips_are_named(tmp_path):
    """YOLOF's DilatedEncoder reads the last map alone: DESIGN's swap (every level returned)
    left the other levels' output norms without a gradient."""
    from mmvtx.engine.model_fit import unread_maps_message
    base = 'yolof/yolof_r50-c5_8xb8-1x_coco.py'
    message = unread_maps_message(_mmdet_recipe(tmp_path, base, neck=dict(in_channels=256)))
    assert message.endswith(
        "never reads the maps at strides [4, 8, 16] (positions [0, 1, 2]): the backbone's "
        'norm0.weight, norm0.bias, norm1.weight, norm1.bias, norm2.weight, norm2.bias get no '
        'gradient, which DDP (find_unused_parameters=False) refuses at the second iteration: '
        'set backbone.out_indices=(3,) (the same model, without the maps it does not read), or '
        'find_unused_parameters=True'), message
    advised = _mmdet_recipe(tmp_path, base, ', out_indices=(3,)', neck=dict(in_channels=256))
    assert backbone_fit_errors(advised) == [] and unread_maps_message(advised) == ''


def test_backbone_fit_hook_refuses_unread_maps_under_ddp(tmp_path, monkeypatch):
    """Under DDP without find_unused_parameters the hook refuses to train (it would stop at
    the second iteration); a single process is warned; a test run (no gradients) is not
    refused."""
    import os

    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm

    from mmvtx.engine import BackboneFitHook, model_fit
    logged = []
    monkeypatch.setattr(model_fit, 'print_log', lambda msg, **kw: logged.append(msg))
    model = revert_sync_batchnorm(_fcn(tmp_path))  # DDP on CPU modules: no SyncBN

    class Runner:
        pass

    runner = Runner()
    runner.model = model
    BackboneFitHook().before_train(runner)
    assert len(logged) == 1 and 'never reads the maps at strides [4, 8]' in logged[0], logged
    monkeypatch.setitem(os.environ, 'MASTER_ADDR', '127.0.0.1')
    monkeypatch.setitem(os.environ, 'MASTER_PORT', '29561')
    dist.init_process_group('gloo', rank=0, world_size=1)
    try:
        runner.model = MMDistributedDataParallel(module=model, find_unused_parameters=False)
        BackboneFitHook().before_run(runner)  # what tools/test.py runs
        with pytest.raises(ValueError, match=r'never reads the maps at strides \[4, 8\].*set '
                                             r'backbone.out_indices=\(2, 3\)'):
            BackboneFitHook().before_train(runner)
        runner.model = MMDistributedDataParallel(module=model, find_unused_parameters=True)
        BackboneFitHook().before_train(runner)
    finally:
        dist.destroy_process_group()


def test_backbone_fit_hook_names_heads_of_another_class_count(monkeypatch):
    """A user's dataset with its own classes (metainfo=dict(classes=...)) and the recipe's
    num_classes left: fewer outputs than classes trained the class at index num_classes as
    background without a word (mmdet checks none of it); more is a warning; a string of one
    name (no comma) counted its letters."""
    from mmvtx.engine import BackboneFitHook, model_fit
    logged = []
    monkeypatch.setattr(model_fit, 'print_log', lambda msg, **kw: logged.append(msg))

    class Dataset:
        metainfo = dict(classes=('a', 'b', 'c', 'd'))

    class Runner:
        pass

    runner = Runner()
    runner.model = _model(DET_CFG, 'mmdet')  # num_classes=3
    runner.train_dataloader = type('Loader', (), {'dataset': Dataset()})()
    with pytest.raises(ValueError, match=r"model.roi_head.bbox_head.num_classes=3 "
                       r"\(Shared2FCBBoxHead\) but the training dataset \(Dataset\) has 4 "
                       r"classes \('a', 'b', 'c', 'd'\): set model.roi_head.bbox_head."
                       r"num_classes=4\n.*model.roi_head.mask_head.num_classes=3"):
        BackboneFitHook().before_train(runner)
    Dataset.metainfo = dict(classes='balloon')
    with pytest.raises(ValueError, match=r"classes='balloon' is a string.*\('balloon',\)"):
        BackboneFitHook().before_train(runner)
    Dataset.metainfo = dict(classes=('a', 'b'))
    BackboneFitHook().before_train(runner)
    assert [m.split(' but')[0] for m in logged] == [
        'model.roi_head.bbox_head.num_classes=3 (Shared2FCBBoxHead)',
        'model.roi_head.mask_head.num_classes=3 (FCNMaskHead)'], logged
    logged.clear()
    Dataset.metainfo = dict(classes=('a', 'b', 'c'))
    BackboneFitHook().before_train(runner)
    assert logged == []
    # mmseg: decode and auxiliary heads
    runner.model = _model(SEG_CFG, 'mmseg')
    n = runner.model.decode_head.num_classes
    Dataset.metainfo = dict(classes=tuple(str(i) for i in range(n + 1)))
    with pytest.raises(ValueError, match=rf'model.decode_head.num_classes={n} .*\n'
                                         rf'model.auxiliary_head.num_classes={n} '):
        BackboneFitHook().before_train(runner)


def test_backbone_fit_hook_refuses_a_validation_set_of_other_classes():
    """``metainfo=dict(classes=...)`` on the training dataset only: the validation dataset kept
    its class's default (CocoDataset's 80, a BaseSegDataset's none), and every validation
    scored label i as that class i (wrong mAP, or nonsense mIoU) after a whole epoch of
    training. Refused before training, naming both."""
    from types import SimpleNamespace

    from mmdet.datasets import CocoDataset

    from mmvtx.engine import BackboneFitHook
    learnt = ('circle', 'square', 'triangle')

    def runner(val_classes):
        def loader(classes):
            return SimpleNamespace(dataset=SimpleNamespace(metainfo=dict(classes=classes)))
        return SimpleNamespace(model=_model(DET_CFG, 'mmdet'), train_dataloader=loader(learnt),
                               _val_loop=SimpleNamespace(dataloader=loader(val_classes)))

    with pytest.raises(ValueError) as e:
        BackboneFitHook().before_train(runner(CocoDataset.METAINFO['classes']))
    msg = str(e.value)
    assert "the validation dataset (val_dataloader.dataset, SimpleNamespace) has 80 classes " \
           "('person', 'bicycle'" in msg
    assert "but the model learnt 3 classes ('circle', 'square', 'triangle')" in msg
    assert "first differ at label 0: 'circle' vs 'person'" in msg
    with pytest.raises(ValueError, match=r"label 2: 'triangle' vs 'star'"):
        BackboneFitHook().before_train(runner(('circle', 'square', 'star')))
    BackboneFitHook().before_train(runner(learnt))
    r = runner(('other',))
    r._val_loop = dict(type='ValLoop')  # a loop not built (no validation): nothing to compare
    BackboneFitHook().before_train(r)


def test_classes_are_checked_against_the_coco_files_categories(tmp_path):
    """mmdet's CocoDataset labels the categories of a user's file in the file's order and
    leaves out any class name it does not find: ``classes=('bird', 'cat', 'dog')`` for a file
    listing cat, dog, bird trained 'cat' objects as label 0, which every drawing and the
    inferencer named 'bird'; ``'Dog'`` for ``'dog'`` trained the dogs as background. Both
    are refused before training (validation set) and before testing, naming the fix."""
    import json
    from types import SimpleNamespace

    from mmdet.datasets import CocoDataset
    from mmdet.evaluation import CocoMetric

    from mmvtx.engine import BackboneFitHook
    ann = tmp_path / 'val.json'
    ann.write_text(json.dumps(dict(
        images=[dict(id=1, file_name='a.png', height=30, width=40)],
        annotations=[dict(id=i + 1, image_id=1, category_id=c, bbox=[1, 1, 9, 9], area=81,
                          iscrowd=0, segmentation=[[1, 1, 10, 1, 10, 10, 1, 10]])
                     for i, c in enumerate((5, 9, 2))],
        categories=[dict(id=5, name='cat'), dict(id=9, name='dog'), dict(id=2, name='bird')])))

    def dataset(classes):
        return CocoDataset(ann_file=str(ann), metainfo=dict(classes=classes), pipeline=[],
                           data_prefix=dict(img=str(tmp_path)), test_mode=True)

    # what the check is about: mmdet's labels follow the file, not metainfo
    shuffled = dataset(('bird', 'cat', 'dog'))
    assert [i['bbox_label'] for i in shuffled.get_data_info(0)['instances']] == [0, 1, 2]
    assert len(dataset(('cat', 'Dog', 'bird')).get_data_info(0)['instances']) == 2

    evaluator = SimpleNamespace(metrics=[CocoMetric(ann_file=str(ann))])
    model = _model(DET_CFG, 'mmdet')

    def runner(classes):
        loop = SimpleNamespace(dataloader=SimpleNamespace(dataset=dataset(classes)),
                               evaluator=evaluator)
        loader = SimpleNamespace(dataset=SimpleNamespace(metainfo=dict(classes=classes)))
        return SimpleNamespace(model=model, train_dataloader=loader, _val_loop=loop,
                               _test_loop=loop)

    for hook in (BackboneFitHook().before_train, BackboneFitHook().before_test):
        with pytest.raises(ValueError, match=r"has classes \('bird', 'cat', 'dog'\), and its "
                           r"CocoMetric's ann_file lists them in the order \('cat', 'dog', "
                           r"'bird'\).*Write metainfo=dict\(classes=\('cat', 'dog', 'bird'\)\)"):
            hook(runner(('bird', 'cat', 'dog')))
        with pytest.raises(ValueError, match=r"has classes \['Dog'\] that its CocoMetric's "
                           r"ann_file does not name \(it has 3 categories \('cat', 'dog', "
                           r"'bird'\)\)"):
            hook(runner(('cat', 'Dog', 'bird')))
        hook(runner(('cat', 'dog', 'bird')))  # as the file lists them
        hook(runner(('cat', 'bird')))  # a subset, in the file's order
