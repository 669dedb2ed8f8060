# The two commands of the README. Each sets up .venv first (scripts/setup_env.sh: idempotent,
# the mmcv wheel with compiled ops is built once and cached in ~/.cache/mmvtx).
PY := .venv/bin/python
MODEL ?= swin
# test processes (pytest-xdist); each gets its share of the cores
TEST_WORKERS ?= 2

.PHONY: setup demo test bench clean
setup:
	@bash scripts/setup_env.sh

demo: setup
	$(PY) tools/demo.py --model $(MODEL)

test: setup
	$(PY) -c "from mmvtx.datasets import prepare_shapes; prepare_shapes('data/shapes')"  # before the workers
	$(PY) -m pytest tests -q -n $(TEST_WORKERS) --dist worksteal --durations=15

bench: setup
	$(PY) tools/analysis_tools/benchmark_backbone.py

clean:
	rm -rf work_dirs outputs .pytest_cache
