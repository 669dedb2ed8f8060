"""tools/model_converters/*2mmvtx.py write files that load back to the same model."""
import json

import pytest
import torch

from mmvtx.models.backbones.swin import SwinTransformer
from mmvtx.models.backbones.vit import ViT
from mmvtx.utils.convert_cli import convert_main
from tests.conftest import jitter_


def test_swin2mmvtx_roundtrip(tmp_path):
    from mmdet.models.backbones import SwinTransformer as MMDetSwin
    ref = MMDetSwin(embed_dims=48, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24))
    ref.eval()
    jitter_(ref)
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in ref.state_dict().items()}},
               tmp_path / 'mmdet_swin.pth')
    for dst in ('swin.pth', 'swin.safetensors'):
        convert_main('SwinTransformer', 'tiny', [
            str(tmp_path / 'mmdet_swin.pth'), str(tmp_path / dst),
            '--options', '{"embed_dims": 48, "depths": [2, 2, 2, 2], "always_shift": true}'])
        model = SwinTransformer(embed_dims=48, depths=(2, 2, 2, 2), always_shift=True,
                                init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / dst)))
        model.init_weights()
        model.eval()
        x = torch.randn(1, 3, 64, 96)
        with torch.no_grad():
            assert max((a - b).abs().max() for a, b in zip(ref(x), model(x))) <= 1e-4


def test_vit2mmvtx_resizes_position_embedding(tmp_path):
    src = ViT(embed_dims=64, num_layers=2, num_heads=2, img_size=224)
    torch.save(src.state_dict(), tmp_path / 'vit.pth')
    convert_main('ViT', 'base', [str(tmp_path / 'vit.pth'), str(tmp_path / 'out.pth'),
                                 '--options', '{"embed_dims": 64, "num_layers": 2, '
                                 '"num_heads": 2, "img_size": 384}'])
    sd = torch.load(tmp_path / 'out.pth', weights_only=True)['state_dict']
    assert sd['pos_embed'].shape == (1, 1 + 24 * 24, 64)


SMALL_SWIN = dict(embed_dims=24, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24))
SMALL_SWIN_OPTIONS = json.dumps(dict(SMALL_SWIN, depths=[2, 2, 2, 2], num_heads=[3, 6, 12, 24]))


def _same_outputs(a, b, size=(64, 96)):
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        return max((u - v).abs().max() for u, v in zip(a.eval()(x), b.eval()(x))) <= 1e-4


def test_swin2mmvtx_converts_an_mmengine_training_checkpoint(tmp_path):
    """The README's use: a whole detector checkpoint of tools/train.py (mmengine's
    HistoryBuffer and numpy scalars in its meta), cut to backbone.; was refused by
    torch.load(weights_only=True) with a hint to use the converter itself."""
    import numpy as np
    from mmengine.logging import HistoryBuffer
    ref = jitter_(SwinTransformer(**SMALL_SWIN))
    loss = HistoryBuffer()
    loss.update(1.5)
    torch.save({'meta': {'epoch': np.int64(0), 'iter': 20,
                         'message_hub': {'log_scalars': {'train/loss': loss}}},
                'state_dict': {**{f'backbone.{k}': v for k, v in ref.state_dict().items()},
                               'neck.conv.weight': torch.zeros(2, 2)}},
               tmp_path / 'iter_20.pth')
    allowed = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()  # as in a fresh process: nothing allowed yet
    try:
        convert_main('SwinTransformer', 'tiny', [str(tmp_path / 'iter_20.pth'),
                                                 str(tmp_path / 'swin.pth'),
                                                 '--options', SMALL_SWIN_OPTIONS])
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(allowed)
    model = SwinTransformer(**SMALL_SWIN, init_cfg=dict(type='Pretrained',
                                                        checkpoint=str(tmp_path / 'swin.pth')))
    model.init_weights()
    assert _same_outputs(ref, model)


@pytest.mark.parametrize('dst', ['cvt.pth', 'cvt.safetensors'])
def test_cvt2mmvtx_keeps_the_authors_quick_gelu(tmp_path, dst):
    """The converted authors' file, loaded with act='auto', computes what the authors' file
    does (QuickGELU, recorded in mlp_act), not GELU."""
    from mmvtx.models.backbones.cvt import CvT
    from tests.models.backbones.test_cvt import LAYOUTS, authors_checkpoint
    src, gelu = authors_checkpoint(tmp_path)
    options = json.dumps({k: list(v) for k, v in LAYOUTS['small'].items()})
    convert_main('CvT', '13', [src, str(tmp_path / dst), '--options', options])
    models = [CvT(**LAYOUTS['small'], drop_path_rate=0.0,
                  init_cfg=dict(type='Pretrained', checkpoint=path))
              for path in (src, str(tmp_path / dst))]
    for m in models:
        m.init_weights()
    assert models[1].get_setting('mlp_act') == 'quick_gelu'
    assert _same_outputs(*models)
    assert not _same_outputs(models[1], gelu)  # GELU != QuickGELU


def test_converter_refuses_outputs_it_cannot_write(tmp_path, capsys):
    """The input as output was overwritten, a .npz name got a torch zip (unreadable as .npz),
    a missing folder failed after converting: refused up front (or created), naming the file."""
    src = tmp_path / 'swin.pth'
    torch.save(SwinTransformer(**SMALL_SWIN).state_dict(), src)
    before = src.read_bytes()
    (tmp_path / 'a_dir.pth').mkdir()
    for dst, why in ((src, 'is the input file'), (tmp_path / '.' / 'swin.pth', 'is the input'),
                     (tmp_path / 'out.npz', "not '.npz'"), (tmp_path / 'out', 'no extension'),
                     (tmp_path / 'a_dir.pth', 'is a folder')):
        with pytest.raises(SystemExit):
            convert_main('SwinTransformer', 'tiny', [str(src), str(dst),
                                                     '--options', SMALL_SWIN_OPTIONS])
        err = capsys.readouterr().err
        assert f'{dst}' in err and why in err, err
    assert src.read_bytes() == before
    assert not (tmp_path / 'out.npz').exists()
    convert_main('SwinTransformer', 'tiny', [str(src), str(tmp_path / 'new' / 'dir' / 'out.PT'),
                                             '--options', SMALL_SWIN_OPTIONS])
    assert 'state_dict' in torch.load(tmp_path / 'new' / 'dir' / 'out.PT', weights_only=True)


def test_a_converted_standin_stays_marked(tmp_path):
    """Loading a converted stand-in still warns that its weights are random."""
    from mmengine.logging import MMLogger
    from mmvtx.utils.standin import is_standin_checkpoint, mark_standin, standin_info
    src = tmp_path / 'swin_tiny_patch4_window7_224.pth'
    torch.save({'model': SwinTransformer(**SMALL_SWIN).state_dict()}, src)
    mark_standin(str(src), dict(mmvtx_standin=True, release=src.name, seed=0))
    convert_main('SwinTransformer', 'tiny', [str(src), str(tmp_path / 'out.pth'),
                                             '--options', SMALL_SWIN_OPTIONS])
    assert is_standin_checkpoint(str(tmp_path / 'out.pth'))
    assert standin_info(str(tmp_path / 'out.pth'))['release'] == src.name
    model = SwinTransformer(**SMALL_SWIN, init_cfg=dict(type='Pretrained',
                                                        checkpoint=str(tmp_path / 'out.pth')))
    logged = []
    logger = MMLogger.get_current_instance()
    handler = __import__('logging').Handler()
    handler.emit = lambda record: logged.append(record.getMessage())
    logger.addHandler(handler)
    try:
        model.init_weights()
    finally:
        logger.removeHandler(handler)
    assert any('STAND-IN' in m for m in logged), logged


def test_converter_names_bad_options(tmp_path, capsys):
    """``--options`` that is not a JSON object stopped with json's or dict()'s traceback
    ('Expecting property name enclosed in double quotes', 'got multiple values for keyword
    argument 'arch''), naming neither the option nor its text."""
    src = tmp_path / 'swin.pth'
    torch.save(SwinTransformer(**SMALL_SWIN).state_dict(), src)
    for options, flags, why in (("{window_size: 7}", (), 'not valid JSON'),
                                ('[7]', (), 'must be a JSON object'),
                                ('{"arch": "small"}', ('--arch', 'tiny'), 'and so does --arch')):
        with pytest.raises(SystemExit):
            convert_main('SwinTransformer', 'tiny', [str(src), str(tmp_path / 'out.pth'),
                                                     '--options', options, *flags])
        err = capsys.readouterr().err
        assert f'--options {options}' in err and why in err, err
    assert not (tmp_path / 'out.pth').exists()
    # the preset may be given in --options instead of --arch
    options = json.loads(SMALL_SWIN_OPTIONS)
    convert_main('SwinTransformer', 'tiny', [str(src), str(tmp_path / 'out.pth'), '--options',
                                             json.dumps(dict(options, arch='tiny'))])
    assert 'state_dict' in torch.load(tmp_path / 'out.pth', weights_only=True)


def test_converter_names_a_wrong_input_without_a_traceback(tmp_path, capsys):
    """A Swin file given to the ViT converter, a missing or cut-off file, an unknown ``--arch``
    or constructor argument, a checkpoint of another width: each stopped with a traceback (as
    tools/train.py and tools/test.py no longer do for a checkpoint that does not fit); now
    ``error:`` and the reason, exit status 1 or 2, and no output file."""
    src = tmp_path / 'swin.pth'
    torch.save(SwinTransformer(**SMALL_SWIN).state_dict(), src)
    cut = tmp_path / 'cut.pth'  # an interrupted download: was a RuntimeError's traceback
    cut.write_bytes(src.read_bytes()[:src.stat().st_size // 2])
    dst = tmp_path / 'out.pth'
    for converter, argv, why in (
            (('SwinTransformer', 'tiny'), [str(cut), str(dst)],
             f'{cut} could not be read with torch.load'),
            (('ViT', 'base'), [str(src), str(dst)],
             'not a ViT checkpoint: it holds the weights of a Swin Transformer'),
            (('SwinTransformer', 'tiny'), [str(tmp_path / 'nope.pth'), str(dst)],
             f'checkpoint not found: {tmp_path / "nope.pth"}'),
            (('SwinTransformer', 'tiny'), [str(src), str(dst), '--arch', 'huge'],
             "--arch huge: SwinTransformer: unknown arch 'huge'"),
            (('SwinTransformer', 'tiny'), [str(src), str(dst), '--options', '{"embed_dim": 24}'],
             'unknown argument(s) embed_dim=24 (did you mean embed_dims?)'),
            (('SwinTransformer', 'tiny'), [str(src), str(dst)],
             'patch_embed.proj.weight: checkpoint (24, 3, 4, 4) vs model (96, 3, 4, 4)')):
        with pytest.raises(SystemExit) as exit_info:
            convert_main(*converter, argv)
        assert exit_info.value.code in (1, 2)
        err = capsys.readouterr().err
        assert err.startswith(('error: ', 'usage: ')) and why in err, err
        assert 'Traceback' not in err
    assert not dst.exists()


SMALL_OPTIONS = {  # a small model of each backbone, to keep the conversion fast
    'SwinTransformer': dict(embed_dims=24, depths=[2, 2, 2, 2], num_heads=[3, 6, 12, 24]),
    'ViT': dict(embed_dims=64, num_layers=2, num_heads=2),
    'CvT': dict(embed_dims=[16, 32, 64], depths=[1, 1, 1], num_heads=[1, 1, 2]),
}


@pytest.mark.parametrize('tool', ['swin2mmvtx.py', 'vit2mmvtx.py', 'cvt2mmvtx.py'])
def test_converter_help_options_example_converts(tool, tmp_path, capsys):
    """The ``--options`` example that each converter's ``--help`` shows is one its backbone
    takes: a user copying it gets a converted file, not an error. cvt2mmvtx.py had shown
    Swin's '{"window_size": 12}', which CvT refuses (unknown argument window_size=12)."""
    import os.path as osp
    import re
    from mmvtx.registry import MODELS
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    with open(osp.join(root, 'tools', 'model_converters', tool)) as f:
        backbone_type, arch = re.search(r"convert_main\('(\w+)', '(\w+)'\)", f.read()).groups()
    with pytest.raises(SystemExit):
        convert_main(backbone_type, arch, ['--help'])
    help_text = ' '.join(capsys.readouterr().out.split())
    example = json.loads(re.search(r"--options OPTIONS JSON [^']*e\.g\. '(\{.*?\})'",
                                   help_text).group(1))
    small = SMALL_OPTIONS[backbone_type]
    src = MODELS.build(dict(type=backbone_type, arch=arch, **small))
    torch.save(src.state_dict(), tmp_path / 'src.pth')
    convert_main(backbone_type, arch, [str(tmp_path / 'src.pth'), str(tmp_path / 'out.pth'),
                                       '--options', json.dumps(dict(small, **example))])
    sd = torch.load(tmp_path / 'out.pth', weights_only=True)['state_dict']
    target = MODELS.build(dict(type=backbone_type, arch=arch, **small, **example))
    target.load_state_dict(sd, strict=True)  # the file fits the model the example asks for
    assert any(sd[k].shape != v.shape for k, v in src.state_dict().items() if k in sd), \
        f'--options {example} changed no tensor of the converted file'
