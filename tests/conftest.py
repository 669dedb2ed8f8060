import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import mmvtx  # noqa: E402,F401  registers everything

if os.environ.get('PYTEST_XDIST_WORKER'):
    # several test processes (make test: pytest -n N): each, and the tools it runs, gets its
    # share of the cores instead of all of them
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', 1)))
    os.environ['OMP_NUM_THREADS'] = str(_threads)
    torch.set_num_threads(_threads)


# The modules whose tests run tools in subprocesses (tens of seconds each) are spread over the
# two halves of the collection, each half starting with its share of them: `make test` runs
# pytest-xdist with --dist worksteal, which gives each of its 2 workers one contiguous half of
# the collected tests and lets an idle worker take the later half of the other's queue. Both
# workers then start on long tests and end on short ones, and no worker idles while the other
# runs the last long test.
SLOW_MODULES = (
    'tests/configs/test_recipes_train.py', 'tests/tools/test_benchmark_recipe.py',
    'tests/engine/test_train_tools.py', 'tests/engine/test_exact_resume.py',
    'tests/tools/test_benchmark.py', 'tests/tools/test_analysis_tools.py',
    'tests/engine/test_run_failures.py', 'tests/engine/test_evaluation_tools.py',
    'tests/engine/test_released_checkpoints.py')


def pytest_collection_modifyitems(config, items):
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', 1))  # set in xdist's workers
    if workers < 2:
        return
    slow = [i for i in items if i.nodeid.split('::')[0] in SLOW_MODULES]
    quick = [i for i in items if i.nodeid.split('::')[0] not in SLOW_MODULES]
    items[:] = [i for w in range(workers) for i in slow[w::workers] + quick[w::workers]]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _default_scope_unchanged():
    """A test that sets mmengine's default scope (a Runner, init_default_scope) must not change
    how the tests after it, in the same process, resolve registry names (``SwinTransformer``
    is mmdet's in mmdet's scope): the scopes are put back as they were."""
    from mmengine.registry import DefaultScope
    saved = DefaultScope._instance_dict.copy()
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(saved)


def jitter_(module: torch.nn.Module, std: float = 0.02) -> torch.nn.Module:
    """Adds noise to every parameter and float buffer, so that no weight is at a trivial value
    (zero bias tables, unit norms) that would hide a wrongly mapped key."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * std)
    return module


@pytest.fixture(autouse=True)
def _log_streams_open():
    """mmengine's loggers write to the ``sys.stdout`` of the moment they were made: made during
    an earlier test, that is pytest's capture of it, closed since, and a message logged now
    ends in logging's '--- Logging error --- Traceback' on this test's stderr (a test asserting
    a tool's one-line error then failed only in the whole suite). Their handlers on a closed
    stream are pointed at the current ``sys.stdout``."""
    import logging

    from mmengine.logging import MMLogger
    for logger in list(MMLogger._instance_dict.values()):
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler and \
                    getattr(handler.stream, 'closed', False):
                handler.stream = sys.stdout  # setStream would flush the closed one first
