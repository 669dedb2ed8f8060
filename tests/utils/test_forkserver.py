"""tests/forkserver.py stands for ``python tools/X.py ARGS`` in the tool tests: a forked child
must give what the real process gives (output, exit status, working directory, arguments,
environment, a SystemExit message, an uncaught exception's traceback, atexit functions)."""
import os
import os.path as osp
import subprocess
import sys

import pytest

from tests import forkserver
from tests.engine.test_train_tools import ROOT, run_tool

SCRIPT = r'''
import atexit, os, sys
print('preloaded', 'torch' in sys.modules, file=sys.stderr)  # True only in a forked child
print('argv', sys.argv[1:], 'cwd', os.getcwd(), 'path0', sys.path[0])
print('env', os.environ.get('PORT'), 'mmvtx' in sys.modules)
atexit.register(lambda: print('atexit ran'))
what = sys.argv[1]
if what == '0':  # registers everything in the child, after the server's imports
    import mmvtx  # noqa: F401
    from mmdet.registry import MODELS
    assert MODELS.get('mmvtx.SwinTransformer') is not None
if what == 'message':
    sys.exit('error: a message')
if what == 'raise':
    raise ValueError('an uncaught error')
sys.exit(int(what))
'''


@pytest.mark.parametrize('what', ['0', '3', 'message', 'raise'])
def test_forked_tool_run_is_the_real_process(what, tmp_path, monkeypatch):
    script = tmp_path / 'tools' / 'probe.py'
    script.parent.mkdir()
    script.write_text(SCRIPT)
    monkeypatch.setattr(forkserver, 'TOOLS', str(script.parent) + os.sep)
    cwd = tmp_path / 'cwd'
    cwd.mkdir()
    args = [sys.executable, str(script), what]
    monkeypatch.setenv('LOCAL_RANK', '0')  # tests change os.environ (here: the tools' parser)
    forked = run_tool(args, cwd=str(cwd), env_extra=dict(PORT='1234'))
    assert forked.stderr.startswith('preloaded True\n'), forked.stderr  # it was forked
    assert forked.returncode == {'0': 0, '3': 3}.get(what, 1), forked.stderr
    if what != '0':  # (a real process importing mmvtx takes seconds)
        monkeypatch.setenv('MMVTX_TEST_FORKSERVER', '0')
        real = run_tool(args, cwd=str(cwd), env_extra=dict(PORT='1234'))
        assert forked.returncode == real.returncode
        assert forked.stdout == real.stdout, (forked.stdout, real.stdout)
        assert real.stderr.startswith('preloaded False\n'), real.stderr
    assert f"argv ['{what}'] cwd {cwd} path0 {script.parent}\nenv 1234 False\n" in forked.stdout
    assert forked.stdout.endswith('atexit ran\n')
    if what == 'message':
        assert forked.stderr.endswith('error: a message\n')
    if what == 'raise':
        assert 'Traceback' in forked.stderr
        assert forked.stderr.endswith('ValueError: an uncaught error\n')
        assert real.stderr.endswith('ValueError: an uncaught error\n')


def test_forked_tool_run_times_out_as_subprocess_run(tmp_path, monkeypatch):
    script = tmp_path / 'tools' / 'sleep.py'
    script.parent.mkdir()
    script.write_text('import sys, time\nprint("started", flush=True)\n'
                      'time.sleep(float(sys.argv[1]))\n')
    monkeypatch.setattr(forkserver, 'TOOLS', str(script.parent) + os.sep)
    with pytest.raises(subprocess.TimeoutExpired) as info:
        run_tool([sys.executable, str(script), '60'], cwd=str(tmp_path), timeout=2)
    assert info.value.output == 'started\n'
    after = run_tool([sys.executable, str(script), '0'], cwd=str(tmp_path))  # the next runs
    assert after.returncode == 0 and after.stdout == 'started\n'


def test_commands_the_fork_server_cannot_stand_for_run_as_processes(monkeypatch):
    env = dict(os.environ)
    tool = osp.join(ROOT, 'tools', 'train.py')
    assert forkserver.eligible([sys.executable, tool, 'cfg.py'], {})
    assert not forkserver.eligible([sys.executable, '-c', 'pass'], {})
    assert not forkserver.eligible(['bash', osp.join(ROOT, 'tools', 'dist_train.sh')], {})
    assert not forkserver.eligible([sys.executable, tool], {'input': 'x'})
    assert not forkserver.eligible([sys.executable, osp.join(ROOT, 'setup.py')], {})
    monkeypatch.setenv('MMVTX_TEST_FORKSERVER', '0')
    assert not forkserver.eligible([sys.executable, tool, 'cfg.py'], {})
    # another thread count (read when torch is imported) needs a server of its own; variables
    # read when the command runs do not
    assert forkserver.signature(dict(env, OMP_NUM_THREADS='7')) != forkserver.signature(env)
    assert forkserver.signature(dict(env, TORCH_HOME='/x', PORT='1')) == \
        forkserver.signature(env)
