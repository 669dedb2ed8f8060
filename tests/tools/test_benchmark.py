"""tools/analysis_tools/benchmark_backbone.py runs end to end (training step and inference,
memory subprocesses included) and reports outputs equal to the reference's."""
import os.path as osp
import re
import subprocess
import sys

import pytest

SCRIPT = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                  'tools', 'analysis_tools', 'benchmark_backbone.py')


@pytest.mark.parametrize('model,size,extra', [
    ('swin', '1x3x64x96', []), ('swin', '1x3x64x96', ['--inference']),
    ('vitdet', '1x3x224x160', []), ('dinov2', '1x3x126x98', [])])
def test_benchmark_script_reports_ratios(model, size, extra):
    out = subprocess.run(
        [sys.executable, SCRIPT, '--model', model, '--input', size, '--steps', '1',
         '--warmup', '0'] + extra, check=True, capture_output=True, text=True).stdout
    diff = float(re.search(r'max \|output diff\| \(\w+ mode, same weights\): (\S+)', out)[1])
    assert diff <= 1e-4, out
    what = 'inference' if extra else 'train step'
    time_ratio = re.search(what + r'.* ratio (\S+)x', out)
    assert time_ratio and float(time_ratio[1]) > 0, out
    assert re.search(r'peak memory of .* MiB, ratio', out), out
