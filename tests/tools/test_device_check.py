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


def _run(tmp_path, *args, env=None):
    """Runs a copy of the script (its repository root: ``tmp_path/repo``) with STEPS=backbone
    and a python that prints ``cpu`` for every call."""
    repo = tmp_path / 'repo'
    (repo / 'tools' / 'analysis_tools').mkdir(parents=True, exist_ok=True)
    shutil.copy(SCRIPT, repo / 'tools' / 'analysis_tools' / 'device_check.sh')
    fake = tmp_path / 'bin' / 'python'
    fake.parent.mkdir(exist_ok=True)
    fake.write_text('#!/bin/sh\necho cpu\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PYTHON=str(fake), **(env or dict(STEPS='backbone')))
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


def test_steps_run_in_order_within_the_budget(tmp_path):
    """The issue's aims first (Swin's backbone step, then the Mask R-CNN iteration against
    mmdet's), each step in STEPS order; with the budget spent every step is skipped, named in
    the summary, and the script still ends with its summary (the device machine stops a command
    at 10 minutes)."""
    out = tmp_path / 'out'
    env_steps = dict(STEPS='backbone_swin recipe_mask-rcnn det_mmvtx backbone',
                     BACKBONES='vit 1x3x64x64 swin 1x3x64x64')
    res = _run(tmp_path, str(out), '--quick', env=env_steps)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in (out / 'summary.txt').read_text().splitlines() if ln.startswith('== ')]
    assert [ln.split()[1:4] for ln in lines[1:6]] == [  # Swin: both bias-gradient kernels
        ['MMVTX_BIAS_GRAD=auto', 'benchmark_backbone.py', '--model'],
        ['MMVTX_BIAS_GRAD=recompute', 'benchmark_backbone.py', '--model'],
        ['benchmark_recipe.py', '--preset', 'mask-rcnn'],
        ['tools/train.py', 'mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'],
        ['MMVTX_BIAS_GRAD=auto', 'benchmark_backbone.py', '--model']]
    assert '--model swin' in lines[1] and '--model vit' in lines[5]
    assert len([ln for ln in lines if '--model swin' in ln]) == 2  # not run again by 'backbone'
    assert (out / 'backbone_swin_1x3x64x64.txt').exists()

    spent = tmp_path / 'spent'
    res = _run(tmp_path, str(spent), '--quick', env=dict(env_steps, BUDGET='0'))
    assert res.returncode == 0, res.stderr
    summary = (spent / 'summary.txt').read_text()
    assert summary.count('SKIPPED: ') == 5 and 'done in ' in summary, summary
    assert not list(spent.glob('backbone_*.txt')) and not list(spent.glob('recipe_*.txt'))
