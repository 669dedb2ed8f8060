#!/usr/bin/env bash
# Distributed training through torchrun: bash tools/dist_train.sh CONFIG GPUS [train.py args]
# Uses NCCL on GPUs and gloo on CPU-only machines (the config's env_cfg decides).
# Several machines, as mmdet's: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=<node 0> [PORT=29500]
set -e
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
# torchrun alone stopped with a traceback ("Unsupported nproc_per_node value: --work-dir")
if ! [[ "$GPUS" =~ ^([1-9][0-9]*|auto|cpu|gpu)$ ]]; then
    echo "error: GPUS='$GPUS': the number of processes (GPUs) must be an integer >= 1 (or torchrun's auto, cpu, gpu)" >&2
    echo "usage: bash tools/dist_train.sh CONFIG GPUS [train.py args]" >&2
    exit 2
fi
DIR=$(dirname "$0")
source "$DIR/dist_check_port.sh"
PYTHONPATH="$DIR/..":$PYTHONPATH \
${PYTHON:-python} -m torch.distributed.run \
    --nnodes=$NNODES --node_rank=$NODE_RANK --master_addr=$MASTER_ADDR \
    --nproc_per_node=$GPUS --master_port=$PORT \
    "$DIR/train.py" "$CONFIG" --launcher pytorch "${@:3}"
