"""``python tools/X.py ARGS`` for the tests, without paying the imports of torch, mmengine, mmcv,
mmdet and mmseg (5-8 s of every tool's start on the test machine) in each of the suite's ~70 tool
runs.

A server process, one per test process, imports once the third-party modules that ``import
mmvtx`` loads (their list and order come from a probe process that does import mmvtx; mmvtx
itself and the tools' own modules are not imported). For each command it forks a child that is
then what ``python tools/X.py ARGS`` is after the interpreter's start: the working directory,
the environment, ``sys.argv`` and ``sys.path[0]`` of that command, fresh seeds for ``random``
and numpy, stdout/stderr to files, stdin from /dev/null; the script runs as ``__main__`` (it
imports mmvtx, parses its flags, registers, builds, trains, in its own code), and its exit is
the interpreter's: ``SystemExit``'s code (a message printed, status 1), an uncaught exception's
traceback and status 1, the non-daemon threads joined and the ``atexit`` functions run.

Commands that this cannot stand for run as real processes (:func:`eligible`): anything but a
``.py`` file under ``tools/`` (``python -c``, ``bash``, torchrun). A command whose environment
differs from every running server's in a variable that may be read at import time (thread
counts, allocator settings, ``PYTHON*``; all but :data:`CALL_TIME_ENV`) gets a server of its own
(at most :data:`MAX_SERVERS` are kept). ``MMVTX_TEST_FORKSERVER=0`` runs every command as a
real process.

The children share the server's hash seed (a real process draws its own).
"""
import atexit
import json
import locale
import os
import os.path as osp
import select
import signal
import subprocess
import sys
import tempfile

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(ROOT, 'tools') + os.sep
# read when a command runs, not when the server imported torch: may differ from the server's
# (pytest names the running test in PYTEST_CURRENT_TEST)
CALL_TIME_ENV = frozenset({'TORCH_HOME', 'PORT', 'MASTER_PORT', 'PATH', 'SRUN_LOG',
                           'PYTEST_CURRENT_TEST'})

# the modules `import mmvtx` loads, in load order, that are not mmvtx's
PROBE = r'''
import json, sys
before = set(sys.modules)
import mmvtx  # noqa: F401
names = [n for n in sys.modules if n not in before and n.split('.')[0] not in ('mmvtx', 'tests')]
sys.stdout.write(json.dumps(names))
'''

SERVER = r'''
import importlib, json, os, sys, warnings
names = json.loads(sys.argv[1])
for name in names:
    try:
        importlib.import_module(name)
    except Exception:  # an alias or a module that only exists inside its package's import
        pass
del name, names
import atexit, random, runpy, threading, traceback
replies = os.fdopen(os.dup(1), 'w', buffering=1)
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)


def child(request):
    os.chdir(request['cwd'])
    os.environ.clear()
    os.environ.update(request['env'])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, request['stdout']), (2, request['stderr'])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    script = request['argv'][0]
    sys.argv = list(request['argv'])
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    random.seed()  # a new process's seeds: drawn from the OS
    if 'numpy' in sys.modules:
        sys.modules['numpy'].random.seed()
    code = 0
    try:
        runpy.run_path(script, run_name='__main__')
    except SystemExit as e:  # the interpreter's handling of sys.exit(code)
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            sys.stderr.write(str(e.code) + '\n')
            code = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    try:  # the interpreter's exit: non-daemon threads, then atexit functions
        threading._shutdown()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code & 0xff)


for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        replies.close()
        child(request)
    replies.write(json.dumps({'pid': pid}) + '\n')
    _, status = os.waitpid(pid, 0)
    replies.write(json.dumps({'returncode': os.waitstatus_to_exitcode(status)}) + '\n')
'''


class ForkServer:

    def __init__(self, env: dict):
        self.env = dict(env)
        self.log = tempfile.NamedTemporaryFile(prefix='mmvtx-forkserver-', suffix='.log',
                                               delete=False)
        probe = subprocess.run([sys.executable, '-c', PROBE], env=self.env, cwd=ROOT,
                               capture_output=True, text=True, check=True)
        self.proc = subprocess.Popen(
            [sys.executable, '-c', SERVER, probe.stdout], env=self.env, cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.pending = b''  # replies read from the pipe, not yet taken
        atexit.register(self.close)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        if osp.exists(self.log.name):  # closed once evicted, again at exit
            os.unlink(self.log.name)

    def _reply(self, timeout=None):
        """The server's next reply line, or None after ``timeout`` seconds without one."""
        fd = self.proc.stdout.fileno()
        while b'\n' not in self.pending:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                with open(self.log.name) as f:
                    raise RuntimeError('the fork server ended:\n' + f.read()[-3000:])
            self.pending += chunk
        line, self.pending = self.pending.split(b'\n', 1)
        return json.loads(line)

    def run(self, args, cwd, env, timeout=None):
        out_dir = tempfile.mkdtemp(prefix='mmvtx-forkserver-')
        stdout, stderr = osp.join(out_dir, 'stdout'), osp.join(out_dir, 'stderr')
        try:
            self.proc.stdin.write(json.dumps(dict(
                argv=list(args[1:]), cwd=str(cwd), env=env, stdout=stdout,
                stderr=stderr)) + '\n')
            self.proc.stdin.flush()
            pid = self._reply()['pid']
            reply = self._reply(timeout)
            if reply is None:  # as subprocess.run's timeout: the child is killed
                os.kill(pid, signal.SIGKILL)
                self._reply()
                raise subprocess.TimeoutExpired(list(args), timeout, _read(stdout),
                                                _read(stderr))
            return subprocess.CompletedProcess(list(args), reply['returncode'], _read(stdout),
                                               _read(stderr))
        finally:
            for path in (stdout, stderr):
                if osp.exists(path):
                    os.unlink(path)
            os.rmdir(out_dir)


def _read(path):
    # what subprocess.run(text=True) decodes: the locale's encoding, universal newlines
    with open(path, encoding=locale.getpreferredencoding(False)) as f:
        return f.read()


# one server per environment a command runs with (what it reads while importing: thread counts,
# allocator settings, PYTHON*), the most recently used last; tests change os.environ as they go
# (LOCAL_RANK from the tools' parser run in-process, monkeypatched variables)
_servers = {}
MAX_SERVERS = 2


def signature(env: dict) -> tuple:
    """What a server must share with a command's environment: all but :data:`CALL_TIME_ENV`."""
    return tuple(sorted((k, v) for k, v in env.items() if k not in CALL_TIME_ENV))


def eligible(args, kwargs: dict) -> bool:
    """``python tools/X.py ...`` with nothing but ``cwd``/``env``/``timeout``, unless
    ``MMVTX_TEST_FORKSERVER=0``."""
    if os.environ.get('MMVTX_TEST_FORKSERVER', '1') == '0' or kwargs:
        return False
    return len(args) >= 2 and args[0] == sys.executable and str(args[1]).endswith('.py') \
        and osp.abspath(str(args[1])).startswith(TOOLS)


def run(args, cwd, env: dict, timeout=None, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
    timeout=timeout, **kwargs)``, through a fork server of that environment where
    :func:`eligible`."""
    if not eligible(args, kwargs):
        return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout, **kwargs)
    key = signature(env)
    server = _servers.pop(key, None)
    if server is None or server.proc.poll() is not None:
        server = ForkServer(env)
    _servers[key] = server
    while len(_servers) > MAX_SERVERS:
        _servers.pop(next(iter(_servers))).close()
    return server.run(args, cwd, env, timeout)
