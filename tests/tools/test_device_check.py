"""tools/analysis_tools/device_check.sh: its arguments (OUT_DIR and --quick in either order),
checked with a stand-in python that only answers ``cpu`` (no step really runs)."""
import os
import os.path as osp
import shutil
import stat
import subprocess

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(ROOT, 'tools', 'analysis_tools', 'device_check.sh')


def _run(tmp_path, *args):
    """Runs a copy of the script (its repository root: ``tmp_path/repo``) with STEPS=backbone
    and a python that prints ``cpu`` for every call."""
    repo = tmp_path / 'repo'
    (repo / 'tools' / 'analysis_tools').mkdir(parents=True, exist_ok=True)
    shutil.copy(SCRIPT, repo / 'tools' / 'analysis_tools' / 'device_check.sh')
    fake = tmp_path / 'bin' / 'python'
    fake.parent.mkdir(exist_ok=True)
    fake.write_text('#!/bin/sh\necho cpu\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PYTHON=str(fake), STEPS='backbone')
    return subprocess.run(['bash', str(repo / 'tools' / 'analysis_tools' / 'device_check.sh'),
                           *args], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize('order', ['quick_only', 'quick_first', 'quick_last'])
def test_quick_is_taken_in_any_position(tmp_path, order):
    out = tmp_path / 'out'
    args = {'quick_only': ['--quick'], 'quick_first': ['--quick', str(out)],
            'quick_last': [str(out), '--quick']}[order]
    res = _run(tmp_path, *args)
    assert res.returncode == 0, res.stderr
    folder = tmp_path / 'repo' / 'work_dirs' / 'device_check' if order == 'quick_only' else out
    summary = (folder / 'summary.txt').read_text()
    # the quick dry run: the small Swin run on the CPU, not the GPU sizes with --amp
    assert '--model swin --input 1x3x224x224 --device cpu' in summary, summary
    assert '2x3x800x1344' not in summary and '--amp' not in summary, summary
    assert not (tmp_path / '--quick').exists()


def test_unknown_option_refused(tmp_path):
    res = _run(tmp_path, '--quik')
    assert res.returncode == 2 and 'unknown option --quik' in res.stderr
    assert not (tmp_path / 'repo' / 'work_dirs').exists()
