#!/usr/bin/env bash
# Distributed testing: bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args]
# Several machines, as mmdet's and mmseg's: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=<node 0> [PORT]
set -e
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
# torchrun alone stopped with a traceback ("Unsupported nproc_per_node value: --work-dir")
if ! [[ "$GPUS" =~ ^([1-9][0-9]*|auto|cpu|gpu)$ ]]; then
    echo "error: GPUS='$GPUS': the number of processes (GPUs) must be an integer >= 1 (or torchrun's auto, cpu, gpu)" >&2
    echo "usage: bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args]" >&2
    exit 2
fi
DIR=$(dirname "$0")
source "$DIR/dist_check_port.sh"
PYTHONPATH="$DIR/..":$PYTHONPATH \
${PYTHON:-python} -m torch.distributed.run \
    --nnodes=$NNODES --node_rank=$NODE_RANK --master_addr=$MASTER_ADDR \
    --nproc_per_node=$GPUS --master_port=$PORT \
    "$DIR/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
