"""mmdet's and mmseg's released detectors and segmentors run in our recipes.

Each recipe is its twin in mmdet/mmseg with the backbone swapped (``configs/*/README.md``,
``tests/configs/test_recipe_fidelity.py``), so a checkpoint of the twin's model zoo (Mask R-CNN
Swin-T 1x, UPerNet Swin-B, ...) holds the recipe's neck and heads under the same names, and its
backbone in the twin's layout. ``ConvertCheckpointHook`` converts that part at load: the twin's
weights then give the twin's features in our model, and ``tools/test.py RECIPE CHECKPOINT``
evaluates the released file. (mmengine loaded it with ``strict=False``: the backbone's tensors
were skipped, so fine-tuning from it kept the ImageNet backbone, and ``tools/test.py`` refused it.)
"""
import os.path as osp
import re
import sys
from types import SimpleNamespace

import pytest
import torch
from mmengine.registry import DefaultScope
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from mmvtx.engine import CheckpointFitHook, ConvertCheckpointHook
from mmvtx.utils.checkpoint import CheckpointMismatchError
from tests.configs.test_recipe_fidelity import all_pairs, read_config
from tests.engine.test_train_tools import ROOT, run_tool


SMALL = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))
WIDTHS = [32, 64, 128, 256]


def _build(path: str, small: bool = True, **backbone):
    """The model of a Swin config (ours, or an ``mmdet::``/``mmseg::`` twin) at random init,
    with ``small`` widths (the layouts and their conversion are the same at every size)."""
    cfg = read_config(path)
    scope = cfg.default_scope
    model = cfg.model
    model.backbone.init_cfg = None
    model.pop('pretrained', None)
    if small:
        if model.backbone.type == 'mmvtx.SwinTransformer':
            model.backbone.arch = dict(SMALL)
        else:
            model.backbone.update(SMALL)
        if 'neck' in model:
            model.neck.in_channels = WIDTHS
        else:
            model.decode_head.in_channels = WIDTHS
            model.auxiliary_head.in_channels = WIDTHS[model.auxiliary_head.in_index]
    model.backbone.update(backbone)
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    __import__(f'{scope}.utils', fromlist=['register_all_modules']).register_all_modules(False)
    with DefaultScope.overwrite_default_scope(scope):
        built = registry.build(model)
    torch.manual_seed(0)
    with torch.no_grad():  # non-trivial weights everywhere (zero-init biases and all)
        for p in built.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return built.eval()


def _load_as_the_tools_do(model, checkpoint: dict, path='released.pth'):
    """What ``Runner.load_checkpoint`` does with the hooks ``tools/test.py`` adds: they see the
    checkpoint first, then mmengine copies it (strictly here, so that nothing is skipped)."""
    runner = SimpleNamespace(model=model, _load_from=path,
                             hooks=[ConvertCheckpointHook(), CheckpointFitHook()])
    for hook in runner.hooks:  # in their priority order
        hook.after_load_checkpoint(runner, checkpoint)
    _load_checkpoint_to_model(model, checkpoint, strict=True)


# one recipe per twin codebase: the other sizes differ only in widths. (mmseg's ViT UPerNet
# resizes the levels with a separate neck, ours in the backbone: its checkpoints do not fit.)
PAIRS = {}
for folder, ours, twin, *_ in all_pairs():
    if folder == 'swin' and '::' in twin:
        PAIRS.setdefault(twin.split('::')[0], (f'configs/{folder}/{ours}', twin))


@pytest.mark.parametrize('ours,twin', list(PAIRS.values()), ids=list(PAIRS))
def test_a_twins_checkpoint_gives_the_twins_features_in_our_recipe(ours, twin):
    theirs, model = _build(twin), _build(ours)
    released = {'meta': {}, 'state_dict': theirs.state_dict()}
    theirs_key = 'backbone.stages.0.blocks.0.attn.w_msa.qkv.weight'
    assert theirs_key in released['state_dict']
    _load_as_the_tools_do(model, released)
    assert theirs_key not in released['state_dict']  # converted to our names
    assert model.backbone.get_setting('shift_rule') == 'always'  # mmdet's/mmseg's rule
    x = torch.randn(1, 3, 160, 224)
    with torch.no_grad():
        want, got = theirs.extract_feat(x), model.extract_feat(x)
    assert len(got) == len(want)
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
    ours_sd = model.state_dict()
    for k, v in theirs.state_dict().items():  # the neck and heads loaded as they are
        if not k.startswith('backbone.'):
            assert torch.equal(ours_sd[k], v), k


def _authors_dense_layout(twin) -> dict:
    """A twin's weights as the authors' Swin-Transformer-Object-Detection/-Semantic-Segmentation
    (mmdet 2.x / mmseg 0.x) save them: the neck and heads as mmdet/mmseg name them, the backbone
    in the authors' names (mmvtx's, with ``layers.`` for ``stages.``, and the
    ``relative_position_index`` buffers) with an output norm per level, ``norm0``..``norm3``."""
    from mmvtx.models.backbones.swin import SwinTransformer
    backbone = SwinTransformer(arch=dict(SMALL), always_shift=True)
    backbone.load_pretrained({k[len('backbone.'):]: v for k, v in twin.state_dict().items()
                              if k.startswith('backbone.')})
    sd = {}
    for k, v in backbone.state_dict().items():
        if k != 'shift_rule':
            sd['backbone.' + k.replace('stages.', 'layers.')] = v
        if k.endswith('attn.relative_position_bias_table'):
            sd['backbone.' + k.replace('stages.', 'layers.').replace(
                'bias_table', 'index')] = torch.zeros(49, 49, dtype=torch.long)
    sd.update({k: v for k, v in twin.state_dict().items() if not k.startswith('backbone.')})
    assert 'backbone.layers.0.downsample.reduction.weight' in sd and 'backbone.norm3.weight' in sd
    return sd


def test_the_authors_detection_release_shifts_every_block():
    """The authors' detection code (mmdet 2.x) shifts every SW-MSA block, as mmdet's: its Mask
    R-CNN file gives the twin's features also where the config leaves the rule to the
    checkpoint (it took the authors' classification rule: no shift in a stage-4 map of 5x7)."""
    twin = _build('mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')
    model = _build('configs/swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', always_shift=None)
    _load_as_the_tools_do(model, {'meta': {}, 'state_dict': _authors_dense_layout(twin)})
    assert model.backbone.get_setting('shift_rule') == 'always'
    x = torch.randn(1, 3, 160, 224)
    with torch.no_grad():
        for w, g in zip(twin.extract_feat(x), model.extract_feat(x)):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


def test_a_twins_checkpoint_of_another_window_is_not_evaluated():
    """mmseg's UPerNet Swin with 12x12 windows (the 384px-pretrained releases) is another
    network than the window-7 recipe's: the conversion resamples its relative position tables
    (for fine-tuning from it) but the fit check names them with the file's shapes (it was
    evaluated, its tables silently resized, as no mmvtx checkpoint of another window is)."""
    twin = _build('mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-'
                  '512x512.py', window_size=12)
    model = _build('configs/swin/upernet_swin-t-p4-w7_4xb4-160k_ade20k-512x512.py')
    with pytest.raises(CheckpointMismatchError, match=re.escape(
            'backbone.stages.0.blocks.0.attn.relative_position_bias_table: checkpoint (529, 1) '
            'vs model (169, 1)')):
        _load_as_the_tools_do(model, {'state_dict': twin.state_dict()})
    # load_from (fine-tuning, no fit check) takes the tables resampled to the recipe's window
    released = {'state_dict': twin.state_dict()}
    runner = SimpleNamespace(model=model, _load_from='released.pth')
    ConvertCheckpointHook().after_load_checkpoint(runner, released)
    _load_checkpoint_to_model(model, released, strict=True)


def test_our_own_checkpoint_passes_unchanged():
    model = _build('configs/swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', always_shift=None)
    model.backbone.set_shift_rule(False)  # as trained with the authors' rule
    own = {'state_dict': {k: v.clone() for k, v in model.state_dict().items()}}
    keys = list(own['state_dict'])
    ConvertCheckpointHook().after_load_checkpoint(SimpleNamespace(model=model), own)
    assert list(own['state_dict']) == keys  # nothing renamed, the shift rule not reset
    assert model.backbone.get_setting('shift_rule') != 'always'


def test_a_part_left_unconverted_keeps_the_models_settings():
    """An older mmvtx file (no shift_rule record) of another depth, given as load_from, is left
    to the fit check as it is; reading its layout set the model's shift rule to the authors'
    (the rule of an mmvtx file without a record), and the run trained on with it."""
    model = _build('configs/swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', always_shift=None)
    model.backbone.set_shift_rule(True)  # as loading mmdet's ImageNet weights through init_cfg
    deeper = _build('configs/swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', always_shift=None,
                    depths=(2, 2, 4, 2))
    old = {k: v for k, v in deeper.state_dict().items() if k != 'backbone.shift_rule'}
    ConvertCheckpointHook().after_load_checkpoint(SimpleNamespace(model=model, hooks=[]),
                                                  {'state_dict': old})
    assert model.backbone.get_setting('shift_rule') == 'always'


def test_tools_test_evaluates_mmdets_released_mask_rcnn(tmp_path):
    """The command a user types with mmdet's model-zoo file for Mask R-CNN Swin-T 1x."""
    from mmvtx.datasets.standin import write_coco_standin
    write_coco_standin(str(tmp_path / 'data' / 'coco'), num_train=1, num_val=1)
    released = tmp_path / 'mask_rcnn_swin-t-p4-w7_fpn_1x_coco_20210902_120937-9d6b7cfa.pth'
    theirs = _build('mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', small=False)
    torch.save({'meta': {'mmdet_version': '3.0.0'}, 'state_dict': theirs.state_dict()},
               released)
    res = run_tool([sys.executable, osp.join(ROOT, 'tools', 'test.py'),
                    osp.join(ROOT, 'configs', 'swin', 'mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'),
                    str(released), '--work-dir', str(tmp_path / 'w'),
                    '--cfg-options', 'model.test_cfg.rcnn.score_thr=0.0',
                    'test_dataloader.dataset.pipeline.1.scale=(640,384)'], cwd=tmp_path)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-4000:]
    assert re.search(r'backbone\.\*: \d+ tensors in the mmdet layout converted to 178 of '
                     'SwinTransformer', log), log[-4000:]
    assert re.search(r'all \d+ tensors fit the model', log), log[-4000:]
    assert 'coco/segm_mAP' in log


def test_a_mismatch_says_how_the_backbone_was_read():
    """The fit check names the backbone's keys after the conversion, in mmvtx's names, which the
    file does not have: its error says so (a Swin-S file in a Swin-T recipe, here two blocks
    more in stage 3), and, for a backbone in no layout the converter knows (a ResNet detector's
    file), why it was not converted (that reason was dropped)."""
    deeper = _build('mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', depths=(2, 2, 4, 2))
    model = _build('configs/swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')
    with pytest.raises(CheckpointMismatchError) as err:
        _load_as_the_tools_do(model, {'state_dict': deeper.state_dict()})
    assert 'backbone.stages.2.blocks.2.attn.qkv.weight' in str(err.value)
    assert re.search(r'backbone\.\*: \d+ tensors in the mmdet layout converted to \d+ of '
                     r'SwinTransformer \(the keys above are named as mmvtx names them\)',
                     str(err.value)), str(err.value)
    resnet = {'state_dict': {'backbone.conv1.weight': torch.zeros(64, 3, 7, 7),
                             'backbone.layer1.0.conv1.weight': torch.zeros(64, 64, 1, 1),
                             **{k: v for k, v in deeper.state_dict().items()
                                if not k.startswith('backbone.')}}}
    with pytest.raises(CheckpointMismatchError,
                       match=r'backbone\.\*: SwinTransformer: a ResNet checkpoint \(e\.g\. '
                             r"'layer1\.0\.conv1\.weight'\), which no mmvtx backbone computes"):
        _load_as_the_tools_do(model, resnet)


def _small_recipe(path: str):
    """Our recipe's config with the small widths of :func:`_build`, for mmdet's/mmseg's APIs."""
    cfg = read_config(path)
    cfg.model.backbone.arch = dict(SMALL)
    cfg.model.backbone.init_cfg = None
    if 'neck' in cfg.model:
        cfg.model.neck.in_channels = WIDTHS
    else:
        cfg.model.decode_head.in_channels = WIDTHS
        cfg.model.auxiliary_head.in_channels = WIDTHS[cfg.model.auxiliary_head.in_index]
    return cfg


@pytest.mark.parametrize('ours,twin', list(PAIRS.values()), ids=list(PAIRS))
def test_the_apis_of_mmdet_and_mmseg_load_a_twins_checkpoint_in_our_recipe(ours, twin,
                                                                           tmp_path):
    """``init_detector(RECIPE, RELEASED_FILE)`` (mmseg: ``init_model``) loads with mmengine's
    ``load_checkpoint`` and no tool's hook: the released backbone's tensors were skipped as
    unexpected with a warning, and the detector predicted from a random backbone. The backbone
    converts its part of a whole model's state dict as it is loaded; so does a bare backbone's
    ``load_state_dict``."""
    theirs = _build(twin)
    released = str(tmp_path / 'released.pth')
    torch.save({'meta': {}, 'state_dict': theirs.state_dict()}, released)
    if twin.startswith('mmdet'):
        from mmdet.apis import init_detector as init
    else:
        from mmseg.apis import init_model as init
    model = init(_small_recipe(ours), released, device='cpu')
    assert model.backbone.get_setting('shift_rule') == 'always'  # mmdet's/mmseg's rule
    x = torch.randn(1, 3, 160, 224)
    with torch.no_grad():
        want = theirs.extract_feat(x)
        for w, g in zip(want, model.extract_feat(x)):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
    bare = _build(ours).backbone
    bare.load_state_dict({k[len('backbone.'):]: v for k, v in theirs.state_dict().items()
                          if k.startswith('backbone.')})
    with torch.no_grad():
        for w, g in zip(theirs.backbone(x), bare(x)):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
