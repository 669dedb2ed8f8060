"""What every command-line tool of mmvtx does alike with the files it writes.

* :func:`check_output_dir` / :func:`check_output_file`: an output path that cannot be used (an
  existing file where a folder is expected or the reverse, a file on the way to it, a place the
  user may not write) is refused with one ``error:`` line naming the flag and the path, before
  any work is done (it had been a ``FileExistsError``/``IsADirectoryError`` traceback, some only
  after minutes of computation).
* :func:`atomic_output`: each output file is written under a hidden temporary name in its
  folder and renamed into place once whole, so that an interrupted run (Ctrl-C, a kill) leaves
  the previous file or none, never a cut-off file under the final name (checkpoints are written
  the same way: :mod:`mmvtx.engine.reliability`).

Imported by the tools after their arguments are parsed: importing ``mmvtx`` registers
everything (mmdet, mmseg: seconds), which ``--help`` should not wait for.
"""
import argparse
import contextlib
import os
import os.path as osp
import shutil
import tempfile
from typing import Iterator, Optional


def config_path(path: str) -> str:
    """A config's file: ``path`` itself, or for ``PACKAGE::rel/path.py`` (``mmdet::swin/...``,
    ``mmseg::...``, as mim and ``_base_`` name them) the file pip installed with that package
    (what ``mmengine.hub.get_config`` reads, without its attempt to pip-install a package it
    does not find by distribution name). Raises ``FileNotFoundError`` naming the path (and the
    package's config folder) when there is no such file."""
    if '::' not in path or osp.isfile(path):
        if not osp.isfile(path):
            raise FileNotFoundError(f'config {path}: no such file')
        return path
    import importlib.util
    package, rel = path.split('::', 1)
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f'config {path}: no package {package!r} is installed')
    folder = osp.join(osp.dirname(spec.origin), '.mim', 'configs')
    if not osp.isfile(osp.join(folder, rel)):
        raise FileNotFoundError(f'config {path}: {package} has no such config (its configs '
                                f'are under {folder})')
    return osp.join(folder, rel)


def _nearest_existing(path: str) -> str:
    """``path`` or the nearest of its parents that exists."""
    path = osp.abspath(path)
    while not osp.exists(path):
        parent = osp.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def output_dir_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be (made) a folder to write into, or None."""
    if osp.exists(path) and not osp.isdir(path):
        return 'is a file, not a folder'
    existing = _nearest_existing(path)
    if not osp.isdir(existing):
        return f'cannot be made: {existing} is a file, not a folder'
    if not os.access(existing, os.W_OK | os.X_OK):
        return f'cannot be written: no permission to write in {existing}'
    return None


def output_file_problem(path: str) -> Optional[str]:
    """Why a file cannot be written at ``path`` (its folder made if missing), or None."""
    if osp.isdir(path):
        return 'is a folder: name the output file'
    folder = osp.dirname(osp.abspath(path))
    problem = output_dir_problem(folder)
    if problem:
        return f'its folder {folder} {problem}'
    if osp.exists(path) and not os.access(path, os.W_OK):
        return 'cannot be written: no permission to replace it'
    return None


def check_output_dir(parser: argparse.ArgumentParser, path: str, flag: str):
    """Refuses, as argparse refuses a bad flag (``error:`` line, exit status 2), an output
    folder ``path`` (given as ``flag``) that cannot be made or written into."""
    problem = output_dir_problem(path)
    if problem:
        parser.error(f'{flag} {path} {problem}')


def check_output_file(parser: argparse.ArgumentParser, path: str, flag: str):
    """:func:`check_output_dir` for an output file."""
    problem = output_file_problem(path)
    if problem:
        parser.error(f'{flag} {path}: {problem}')


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[str]:
    """``with atomic_output(path) as tmp: write(tmp)``: ``tmp`` is a file of the same name in a
    hidden temporary folder beside ``path`` (matplotlib and ``torch.save`` see the same name and
    format; the writer creates it, with the usual permissions); moved to ``path`` when the
    block ends, removed with its folder if the block raises or is interrupted."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f'.{osp.basename(path)}.', suffix='.tmp', dir=folder)
    try:
        tmp = osp.join(tmp_dir, osp.basename(path))
        yield tmp
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
