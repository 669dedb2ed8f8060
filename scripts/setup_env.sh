#!/usr/bin/env bash
# Creates .venv in the repo with everything mmvtx needs, idempotently.
#   torch (CPU 2.13.0 unless a compatible torch is already importable), mmcv 2.1.0 built from its
#   PyPI source with the compiled ops (wheel cached outside the repo), mmengine 0.10.7, mmdet 3.3.0,
#   mmsegmentation 1.2.2, the test-only references (transformers) and mmvtx itself (editable).
# A second run with nothing changed takes a second: a stamp records the inputs it was built from.
set -euo pipefail
# (the body is one function, so editing this file while it runs cannot break the run)
main() {
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
VENV=${MMVTX_VENV:-$ROOT/.venv}
CACHE=${MMVTX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmvtx}
TORCH_SPEC=${MMVTX_TORCH:-torch==2.13.0}
MMCV_VERSION=2.1.0
STAMP=$VENV/.mmvtx-setup
inputs=$(cat scripts/setup_env.sh requirements/*.txt setup.py | sha1sum | cut -c1-16)

if [[ -f $STAMP && $(cat "$STAMP") == "$inputs" ]]; then
  exit 0
fi
log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

if [[ ! -x $VENV/bin/python ]]; then
  log "creating venv $VENV"
  "$PY" -m venv "$VENV"
fi
export PATH="$VENV/bin:$PATH"  # ninja from the venv: mmcv's ops then compile in parallel
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }
# setuptools 77..80: torch 2.13 asks for >= 77, mmcv 2.1.0's setup.py still imports pkg_resources (gone in 81).
pip install -q -U "pip>=23" "setuptools>=77,<81" wheel ninja

# Keep a compatible torch that is already installed (e.g. a CUDA build on a GPU box).
if "$VENV/bin/python" -c 'import torch, sys; v = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(0 if v >= (2, 1) else 1)' 2>/dev/null; then
  log "keeping torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
else
  log "installing $TORCH_SPEC"
  pip install -q "$TORCH_SPEC"
fi
pip install -q -r requirements/build.txt

# mmcv with compiled ops, built once per (python, torch, cuda) and cached outside the repo.
tag=$("$VENV/bin/python" -c 'import sys, torch; print(f"py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__}".replace("+", "_"))')
wheel_dir=$CACHE/wheels/mmcv-$MMCV_VERSION-$tag
if ! "$VENV/bin/python" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null; then
  if ! ls "$wheel_dir"/mmcv-$MMCV_VERSION-*.whl >/dev/null 2>&1; then
    log "building mmcv $MMCV_VERSION with its compiled ops (one time, ~6 min on 2 cores; cached in $wheel_dir)"
    mkdir -p "$wheel_dir.tmp"
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      pip wheel --no-build-isolation --no-deps -w "$wheel_dir.tmp" "mmcv==$MMCV_VERSION"
    rm -rf "$wheel_dir" && mv "$wheel_dir.tmp" "$wheel_dir"
  fi
  pip install -q --no-deps "$wheel_dir"/mmcv-$MMCV_VERSION-*.whl
fi

log "installing mmengine, mmdet, mmseg, test references and mmvtx"
pip install -q -r requirements/runtime.txt -r requirements/tests.txt
pip install -q --no-build-isolation --no-deps -e .
"$VENV/bin/python" -c 'import mmcv.ops, mmdet, mmseg, mmvtx; print("[setup] ok: mmcv", mmcv.__version__, "mmdet", mmdet.__version__, "mmseg", mmseg.__version__)'
echo "$inputs" > "$STAMP"
}
main "$@"
