#!/usr/bin/env bash
# Distributed testing: bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args]
set -e
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
PORT=${PORT:-29500}
DIR=$(dirname "$0")
PYTHONPATH="$DIR/..":$PYTHONPATH \
${PYTHON:-python} -m torch.distributed.run --nproc_per_node=$GPUS --master_port=$PORT \
    "$DIR/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
