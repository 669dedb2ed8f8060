"""What an OpenMMLab user expects of every command-line tool besides train.py and test.py:
``--cfg-options`` wherever a CONFIG is taken, one ``error:`` line for an output path that cannot
be used, no cut-off output file after an interruption, progress lines, and a ``--help`` that
comes at once and describes every flag."""
import argparse
import csv
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from mmvtx.utils.cli import atomic_output

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SWIN_CONFIG = osp.join(ROOT, 'configs/swin/mask-rcnn_swin-mini-p4-w7_fpn_700i_shapes.py')
TOOLS = {
    'attention_distance': 'tools/analysis_tools/attention_distance.py',
    'draw_windows': 'tools/analysis_tools/draw_windows.py',
    'cost_vs_resolution': 'tools/analysis_tools/cost_vs_resolution.py',
    'benchmark_backbone': 'tools/analysis_tools/benchmark_backbone.py',
    'benchmark_recipe': 'tools/analysis_tools/benchmark_recipe.py',
    'make_standin_data': 'tools/dataset_converters/make_standin_data.py',
    'make_standin_checkpoints': 'tools/misc/make_standin_checkpoints.py',
    'demo': 'tools/demo.py',
}
SMALL_SWIN = dict(embed_dims=24, depths=[1, 1, 1, 1], num_heads=[1, 2, 3, 4])


def _tool(name):
    spec = importlib.util.spec_from_file_location(f'mmvtx_tool_{name}',
                                                  osp.join(ROOT, TOOLS[name]))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Parsed(Exception):
    pass


def _parser_of(call, monkeypatch) -> argparse.ArgumentParser:
    """The parser ``call()`` builds (stopped where it parses)."""
    def stop(self, *a, **k):
        raise _Parsed(self)
    monkeypatch.setattr(argparse.ArgumentParser, 'parse_args', stop)
    with pytest.raises(_Parsed) as info:
        call()
    return info.value.args[0]


def _entry_points():
    from mmvtx.utils.convert_cli import convert_main
    calls = {name: (lambda name=name: _tool(name).main([])) for name in TOOLS
             if name not in ('benchmark_recipe', 'demo')}
    calls['benchmark_recipe'] = lambda: _tool('benchmark_recipe').parse_args([])
    calls['demo'] = lambda: _tool('demo').parse_args([])
    calls['model_converters'] = lambda: convert_main('SwinTransformer', 'tiny', [])
    return calls


@pytest.mark.parametrize('name', sorted(list(TOOLS) + ['model_converters']))
def test_help_describes_every_flag(name, monkeypatch):
    """``--help`` listed flags with no word about them (the config and checkpoint of
    attention_distance.py, --out-dir, --device, --seed, --warmup, --head, ...)."""
    parser = _parser_of(_entry_points()[name], monkeypatch)
    bare = [a.dest for a in parser._actions
            if a.help != argparse.SUPPRESS and not a.help and a.dest != 'help']
    assert not bare, f'{TOOLS.get(name, name)}: flags without help: {bare}'


def test_help_comes_without_importing_the_codebases():
    """``--help`` of benchmark_backbone.py, benchmark_recipe.py and make_standin_data.py
    imported mmvtx, and with it mmdet and mmseg, first: 6 s instead of about 1.5 s."""
    script = '\n'.join([
        'import runpy, sys',
        'for path in sys.argv[1:]:',
        '    sys.argv = [path, "--help"]',
        '    try:',
        '        runpy.run_path(path, run_name="__main__")',
        '    except SystemExit as e:',
        '        assert e.code in (0, None), (path, e.code)',
        '    loaded = [m for m in ("mmvtx", "mmdet", "mmseg") if m in sys.modules]',
        '    print(path, "imported", loaded, flush=True)'])
    paths = [osp.join(ROOT, p) for n, p in TOOLS.items() if n != 'demo']
    out = subprocess.run([sys.executable, '-c', script] + paths, capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    for path in paths:
        assert f'{path} imported []' in out.stdout, out.stdout


def test_atomic_output_leaves_the_old_file_or_the_whole_new_one(tmp_path):
    path = tmp_path / 'out.csv'
    path.write_text('old')
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(str(path)) as tmp:
            assert osp.basename(tmp) == 'out.csv' and osp.dirname(tmp) != str(tmp_path)
            with open(tmp, 'w') as f:
                f.write('half')
            raise KeyboardInterrupt
    assert path.read_text() == 'old' and os.listdir(tmp_path) == ['out.csv']
    with atomic_output(str(path)) as tmp:
        with open(tmp, 'w') as f:
            f.write('new')
    assert path.read_text() == 'new' and os.listdir(tmp_path) == ['out.csv']


@pytest.fixture
def image(tmp_path):
    path = str(tmp_path / 'img.png')
    cv2.imwrite(path, np.random.RandomState(0).randint(0, 255, (72, 88, 3), np.uint8))
    return path


def _rows(path):
    with open(path) as f:
        return [(r['layer'], r['head'], float(r['mean_distance_px'])) for r in csv.DictReader(f)]


def test_attention_distance_takes_cfg_options(image, tmp_path, capsys):
    """``--cfg-options model.backbone.window_size=4`` was refused ('unrecognized arguments'):
    now it measures what a config with that change measures, and shows a line per image."""
    tool = _tool('attention_distance')
    derived = tmp_path / 'window4.py'
    derived.write_text(f'_base_ = [{SWIN_CONFIG!r}]\nmodel = dict(backbone=dict(window_size=4))\n')
    common = ['--images', image, '--size', '64']
    torch.manual_seed(0)
    tool.main([SWIN_CONFIG] + common + ['--out-dir', str(tmp_path / 'a'),
                                        '--cfg-options', 'model.backbone.window_size=4'])
    assert f'[1/1] {image}' in capsys.readouterr().out
    torch.manual_seed(0)
    tool.main([str(derived)] + common + ['--out-dir', str(tmp_path / 'b')])
    torch.manual_seed(0)
    tool.main([SWIN_CONFIG] + common + ['--out-dir', str(tmp_path / 'c')])
    options, edited, default = (_rows(tmp_path / d / 'attention_distance.csv') for d in 'abc')
    assert [r[:2] for r in options] == [r[:2] for r in edited]
    assert [r[2] for r in options] == pytest.approx([r[2] for r in edited], abs=1e-3)
    assert [r[2] for r in options] != pytest.approx([r[2] for r in default], abs=1e-2)
    with pytest.raises(SystemExit) as info:  # a value the model refuses: named
        tool.main([SWIN_CONFIG] + common + ['--out-dir', str(tmp_path / 'd'),
                                            '--cfg-options', 'model.backbone.window_size=0'])
    assert info.value.code == 2
    assert 'error: --cfg-options model.backbone.window_size=0' in capsys.readouterr().err


def test_draw_windows_takes_cfg_options(tmp_path, capsys):
    tool = _tool('draw_windows')
    tool.main(['--config', SWIN_CONFIG, '--cfg-options', 'model.backbone.window_size=4',
               '--map', '8', '8', '--out', str(tmp_path)])
    assert 'window 4, shift 2' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        tool.main(['--cfg-options', 'model.backbone.window_size=4', '--out', str(tmp_path)])
    assert '--cfg-options needs --config' in capsys.readouterr().err


def _unusable_outputs(tmp_path, image):
    """(tool, argv, the flag and path named) with a file where a folder is wanted."""
    from mmvtx.utils.convert_cli import convert_main
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    src = tmp_path / 'swin.pth'
    src.write_bytes(b'')
    for place, why in ((blocker, 'is a file, not a folder'),
                       (blocker / 'sub', f'cannot be made: {blocker} is a file')):
        yield (_tool('attention_distance').main,
               [SWIN_CONFIG, '--images', image, '--out-dir', str(place)], f'--out-dir {place}',
               why)
        yield _tool('draw_windows').main, ['--out', str(place)], f'--out {place}', why
        yield (_tool('cost_vs_resolution').main, ['--sizes', '32', '64', '--out-dir', str(place)],
               f'--out-dir {place}', why)
        yield (_tool('make_standin_data').main, ['coco', '--root', str(place)], f'--root {place}',
               why)
        yield _tool('demo').parse_args, ['--work-dir', str(place)], f'--work-dir {place}', why
    yield (lambda argv: convert_main('SwinTransformer', 'tiny', argv),
           [str(src), str(blocker / 'out.pth')], f'{blocker / "out.pth"}: its folder {blocker}',
           'is a file, not a folder')


def test_an_output_path_that_cannot_be_used_is_one_error_line(tmp_path, image, capsys):
    """A file where a folder is expected (or on the way to it): attention_distance.py raised
    FileExistsError after building the model and measuring, the converters, cost_vs_resolution,
    make_standin_data.py and demo.py raised FileExistsError/NotADirectoryError tracebacks."""
    for main, argv, named, why in _unusable_outputs(tmp_path, image):
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2, (argv, err)
        assert f'error: {named}' in err and why in err, (argv, err)
    tool = _tool('make_standin_checkpoints')
    assert tool.main(['swin_tiny_patch4_window7_224.pth', '--out-dir',
                      str(tmp_path / 'a_file' / 'sub')]) == 1
    assert f'error: --out-dir {tmp_path / "a_file" / "sub"} cannot be made' in \
        capsys.readouterr().err


def _interrupt_after_writing(monkeypatch, owner, name):
    """``owner.name(obj, path, ...)`` writes a part of a file, then is interrupted (Ctrl-C)."""
    def write_half(*args, **kwargs):
        path = next(a for a in args if isinstance(a, (str, os.PathLike)))
        with open(path, 'wb') as f:
            f.write(b'\x89PNG half a file')
        raise KeyboardInterrupt
    monkeypatch.setattr(owner, name, write_half)


def test_an_interrupted_tool_leaves_no_cut_off_output(tmp_path, monkeypatch):
    """A Ctrl-C while a picture or a converted checkpoint was written left a cut-off file under
    its final name, which looks complete (a converted stand-in was even left without the mark
    that says its weights are random)."""
    import matplotlib.figure

    from mmvtx.models.backbones.swin import SwinTransformer
    from mmvtx.utils.convert_cli import convert_main
    with monkeypatch.context() as m:
        _interrupt_after_writing(m, matplotlib.figure.Figure, 'savefig')
        with pytest.raises(KeyboardInterrupt):
            _tool('draw_windows').main(['--out', str(tmp_path / 'windows')])
    assert os.listdir(tmp_path / 'windows') == []
    src = tmp_path / 'swin.pth'
    torch.save(SwinTransformer(**SMALL_SWIN).state_dict(), src)
    with monkeypatch.context() as m:
        _interrupt_after_writing(m, torch, 'save')
        with pytest.raises(KeyboardInterrupt):
            convert_main('SwinTransformer', 'tiny', [str(src), str(tmp_path / 'out' / 'x.pth'),
                                                     '--options', json.dumps(SMALL_SWIN)])
    assert os.listdir(tmp_path / 'out') == []
