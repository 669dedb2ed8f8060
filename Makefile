# The two commands of the README. Each sets up .venv first (scripts/setup_env.sh: idempotent,
# the mmcv wheel with compiled ops is built once and cached in ~/.cache/mmvtx).
PY := .venv/bin/python
MODEL ?= swin

.PHONY: setup demo test bench clean
setup:
	@bash scripts/setup_env.sh

demo: setup
	$(PY) tools/demo.py --model $(MODEL)

test: setup
	$(PY) -m pytest tests -q --durations=15

bench: setup
	$(PY) tools/analysis_tools/benchmark_backbone.py

clean:
	rm -rf work_dirs outputs .pytest_cache
