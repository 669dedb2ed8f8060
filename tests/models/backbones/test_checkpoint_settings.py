"""Settings a backbone takes from the checkpoint it starts from (Swin's shift rule from an
mmdet checkpoint, CvT's QuickGELU from the authors', ViT's GELU tanh approximation from a SigLIP
file converted by tools/model_converters/vit2mmvtx.py) come back with the run's own checkpoint,
wherever it is loaded: mmengine's ``load_checkpoint`` (what ``tools/test.py`` and ``--resume``
do, on a whole detector), and ``init_cfg`` on the mmvtx layout. Without that, a model trained
with one network would be evaluated with another."""
import logging

import pytest
import torch
from mmengine.runner import load_checkpoint
from torch import nn

from mmvtx.models.backbones import CvT, SwinTransformer, ViT, base
from tests.models.backbones.test_cvt import LAYOUTS, authors_checkpoint
from tests.models.backbones.test_swin import _mmdet_swin


def _swin(**kw):
    return SwinTransformer('tiny', drop_path_rate=0.0, **kw)


def _cvt(**kw):
    return CvT(**LAYOUTS['small'], drop_path_rate=0.0, **kw)


def _mmdet_checkpoint(tmp_path):
    path = tmp_path / 'mmdet_swin.pth'
    torch.save(_mmdet_swin().state_dict(), path)
    return str(path)


def _vit(**kw):
    return ViT(dict(embed_dims=32, num_layers=2, num_heads=2), img_size=64,
               with_cls_token=False, drop_path_rate=0.0, **kw)


def _converted_siglip(tmp_path):
    """transformers' SigLIP image encoder converted offline, as a user does, with the
    arguments it needs (``mlp_type='gelu_tanh'``). The file was loaded by a ViT built without
    ``mlp_type`` (GELU) without a word: exact GELU on SigLIP's weights, features 5e-4 off."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    from mmvtx.utils.convert_cli import convert_main
    from tests.conftest import jitter_
    torch.manual_seed(0)
    ref = jitter_(SiglipVisionModel(SiglipVisionConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        image_size=64, patch_size=16, layer_norm_eps=1e-6)), std=0.5)
    torch.save(ref.state_dict(), tmp_path / 'siglip.pth')
    convert_main('ViT', 'base', [str(tmp_path / 'siglip.pth'), str(tmp_path / 'siglip_mmvtx.pth'),
                                 '--options', '{"embed_dims": 32, "num_layers": 2, "num_heads": '
                                 '2, "img_size": 64, "with_cls_token": false, "mlp_type": '
                                 '"gelu_tanh"}'])
    return str(tmp_path / 'siglip_mmvtx.pth')


# backbone, its source checkpoint, the setting, its value after that checkpoint, the argument
# that sets the other value explicitly
CASES = {
    'swin': (_swin, _mmdet_checkpoint, 'shift_rule', 'always', dict(always_shift=False)),
    'cvt': (_cvt, lambda p: authors_checkpoint(p)[0], 'mlp_act', 'quick_gelu', dict(act='gelu')),
    'vit-siglip': (_vit, _converted_siglip, 'mlp_act', 'gelu_tanh', dict(mlp_type='gelu')),
}


class Detector(nn.Module):  # what mmengine saves: the whole model, backbone under backbone.
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone


@pytest.mark.parametrize('name', sorted(CASES))
def test_the_runs_checkpoint_brings_back_the_setting(tmp_path, name, monkeypatch):
    build, source, setting, value, explicit = CASES[name]
    trained = build(init_cfg=dict(type='Pretrained', checkpoint=source(tmp_path)))
    trained.init_weights()
    assert trained.get_setting(setting) == value
    run_ckpt = tmp_path / 'epoch_1.pth'
    torch.save({'meta': {}, 'state_dict': Detector(trained).state_dict()}, run_ckpt)
    x = torch.randn(1, 3, 160, 224)  # Swin: stage 4 fits in one window, where the rules differ
    with torch.no_grad():
        expected = trained.eval()(x)
        default = build().eval()
        assert default.get_setting(setting) != value
        # tools/test.py / --resume: mmengine's load_checkpoint on the whole model
        model = Detector(build())
        load_checkpoint(model, str(run_ckpt), map_location='cpu', strict=True)
        assert model.backbone.get_setting(setting) == value
        got = model.backbone.eval()(x)
        assert all(torch.equal(e, g) for e, g in zip(expected, got))
        # the same file through init_cfg (the mmvtx layout, cut to backbone.)
        via_init = build(init_cfg=dict(type='Pretrained', checkpoint=str(run_ckpt)))
        via_init.init_weights()
        assert via_init.get_setting(setting) == value
        got = via_init.eval()(x)
        assert all(torch.equal(e, g) for e, g in zip(expected, got))
        # an explicit argument wins over the record, with a warning
        forced = Detector(build(**explicit))
        logged = []
        monkeypatch.setattr(base, 'print_log', lambda msg, **kw: logged.append((msg, kw)))
        load_checkpoint(forced, str(run_ckpt), map_location='cpu', strict=True)
        assert forced.backbone.get_setting(setting) != value
        assert any(f'trained with {setting}={value!r}' in msg and kw['level'] == logging.WARNING
                   for msg, kw in logged), logged
        got = forced.backbone.eval()(x)
        assert max((e - g).abs().max() for e, g in zip(expected, got)) > 1e-4


@pytest.mark.parametrize('name', sorted(CASES))
def test_a_checkpoint_without_the_record_leaves_the_setting(tmp_path, name):
    """Checkpoints written before the setting was recorded still load (strict), unchanged."""
    build, source, setting, value, _ = CASES[name]
    trained = build(init_cfg=dict(type='Pretrained', checkpoint=source(tmp_path)))
    trained.init_weights()
    old = {f'backbone.{k}': v for k, v in trained.state_dict().items() if k != setting}
    model = Detector(build())
    before = model.backbone.get_setting(setting)
    model.load_state_dict(old, strict=False)
    assert model.backbone.get_setting(setting) == before
    torch.save({'state_dict': old}, tmp_path / 'old.pth')
    via_init = build(init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'old.pth')))
    via_init.init_weights()  # strict: the missing record is not an error


def test_a_bad_record_is_refused_by_name():
    model = Detector(_cvt())
    sd = model.state_dict()
    sd['backbone.mlp_act'] = torch.tensor(7, dtype=torch.int8)
    with pytest.raises(Exception, match='mlp_act=7'):
        model.load_state_dict(sd)


@pytest.mark.parametrize('name', sorted(CASES))
def test_converting_changes_nothing_loading_applies_the_record(tmp_path, name):
    """``convert_state_dict`` only reads: the setting it picks for the file's codebase travels
    in the converted weights (a converted part that is then not loaded, or a converter run for
    another purpose, leaves the model as it was); loading them applies it, and an explicit
    argument is what the record carries."""
    build, source, setting, value, explicit = CASES[name]
    sd = torch.load(source(tmp_path), map_location='cpu', weights_only=True)
    sd = sd.get('state_dict', sd)
    model = build()
    default = model.get_setting(setting)
    x = torch.randn(1, 3, 160, 224)
    with torch.no_grad():
        before = model.eval()(x)
        converted = model.convert_state_dict(dict(sd))
        assert model.get_setting(setting) == default  # the buffer
        assert all(torch.equal(a, b) for a, b in zip(before, model(x)))  # what it computes
        assert model.setting_record(setting, value).item() == converted.state_dict[setting]
        base.load_converted(model, converted)
        assert model.get_setting(setting) == value
        # the same file through mmengine's load of a whole model (ConvertCheckpointHook's path)
        whole = Detector(build())
        load_checkpoint(whole, str(_as_whole(tmp_path, converted.state_dict)),
                        map_location='cpu', strict=True)
        assert whole.backbone.get_setting(setting) == value
        assert all(torch.equal(a, b) for a, b in zip(model(x), whole.backbone.eval()(x)))
        forced = build(**explicit)
        converted = forced.convert_state_dict(dict(sd))
        base.load_converted(forced, converted)
        assert forced.get_setting(setting) == default != value


def _as_whole(tmp_path, backbone_sd):
    path = tmp_path / 'whole.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in backbone_sd.items()}}, path)
    return path
