"""tools/analysis_tools/benchmark_backbone.py runs end to end (training step and inference,
memory subprocesses included) and reports outputs equal to the reference's, and FLOPs counted
from the operators run: where both models do the same maths (Swin at a size without padding,
inference; DINOv2) the same count, though mmvtx runs PyTorch's fused CPU attention (which
PyTorch's counter alone would count as 0) and the references plain matrix products."""
import os
import os.path as osp
import re
import sys

import pytest

from tests.engine.test_train_tools import run_tool

SCRIPT = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                  'tools', 'analysis_tools', 'benchmark_backbone.py')


@pytest.mark.parametrize('model,size,extra', [
    ('swin', '1x3x64x96', []), ('swin', '1x3x224x224', ['--inference']),
    ('vitdet', '1x3x224x160', []), ('dinov2', '1x3x126x98', [])])
def test_benchmark_script_reports_ratios(model, size, extra):
    run = run_tool([sys.executable, SCRIPT, '--model', model, '--input', size, '--steps', '1',
                    '--warmup', '0'] + extra, cwd=os.getcwd())
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    diff = float(re.search(r'max \|output diff\| \(\w+ mode, same weights\): (\S+)', out)[1])
    assert diff <= 1e-4, out
    what = 'inference' if extra else 'train step'
    time_ratio = re.search(what + r'.* ratio (\S+)x', out)
    assert time_ratio and float(time_ratio[1]) > 0, out
    assert re.search(r'peak memory of .* MiB, ratio', out), out
    flops = re.search(r'FLOPs of .*: mmvtx (\S+) G, reference (\S+) G; achieved mmvtx (\S+) '
                      r'TFLOP/s', out)
    assert flops and float(flops[1]) > 0 and float(flops[3]) > 0, out
    if extra or model == 'dinov2':
        assert abs(float(flops[1]) / float(flops[2]) - 1) < 0.01, out


def _parser_error(main, argv, capsys) -> str:
    """What ``main(argv)`` says when argparse refuses the flags (exit status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize('argv,message', [
    # transformers' models crop what mmvtx pads: different work, so refused
    (['--model', 'dinov2', '--input', '1x3x100x130'], '--input 1x3x100x130: --model dinov2 '
     'needs H and W multiples of 14: the reference crops what mmvtx pads'),
    (['--model', 'vitdet', '--input', '1x3x100x130'], 'multiples of 16'),
    (['--model', 'cvt', '--input', '1x3x90x70'], 'multiples of 4'),
    (['--input', 'abc'], '--input abc: expected BxCxHxW'),
    (['--input', '1x1x64x64'], '--input 1x1x64x64: 1 channels'),
    (['--input', '0x3x64x64'], '--input 0x3x64x64: batch, height and width must be >= 1'),
    (['--steps', '0'], '--steps 0: must be >= 1'),
    (['--device', 'gpu'], '--device gpu: not a device name'),
    (['--device', 'cuda:99'], '--device cuda:99: '),  # no torch here has 100 GPUs
    (['--warmup', '-1'], '--warmup -1: must be >= 0')])
def test_benchmark_script_refuses_bad_flags(argv, message, capsys):
    sys.path.insert(0, osp.dirname(SCRIPT))
    try:
        import benchmark_backbone
    finally:
        sys.path.remove(osp.dirname(SCRIPT))
    assert message in _parser_error(benchmark_backbone.main, argv, capsys)
