"""``pip install -e .[tests]`` installs what the suite imports: the packages that
``requirements/tests.txt`` gives ``make test`` (``scripts/setup_env.sh``)."""
import ast
import os.path as osp
import re

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _name(requirement: str) -> str:
    return re.split(r'[<>=!~\[; ]', requirement.strip(), 1)[0].lower().replace('_', '-')


def test_tests_extra_installs_the_test_requirements():
    """The ``tests`` extra had pytest and transformers only: without hypothesis the suite
    stopped at collecting tests/models/backbones/test_arguments.py (ModuleNotFoundError)."""
    with open(osp.join(ROOT, 'setup.py')) as f:
        tree = ast.parse(f.read())
    extras = next(kw.value for node in ast.walk(tree) if isinstance(node, ast.Call)
                  for kw in node.keywords if kw.arg == 'extras_require')
    extras = ast.literal_eval(extras)
    with open(osp.join(ROOT, 'requirements', 'tests.txt')) as f:
        needed = {_name(line.split('#')[0]) for line in f if line.split('#')[0].strip()}
    assert needed <= {_name(r) for r in extras['tests']}, needed
