#!/usr/bin/env bash
# Training under slurm: bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]
# Paths may hold spaces; $PYTHON is the interpreter (default python), as in tools/dist_train.sh.
# GPUS (8), GPUS_PER_NODE (8), CPUS_PER_TASK (5), SRUN_ARGS: as mmdet's slurm_train.sh.
if [ $# -lt 4 ] || [ -z "$1" ] || [ -z "$2" ] || [ -z "$3" ] || [ -z "$4" ]; then
    echo "error: slurm_train.sh takes PARTITION JOB_NAME CONFIG WORK_DIR, $# argument(s) given" >&2
    echo "usage: bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]" >&2
    exit 2
fi
if ! command -v srun > /dev/null; then
    echo "error: srun not found: tools/slurm_train.sh submits to a slurm cluster; without slurm, train with bash tools/dist_train.sh CONFIG GPUS --work-dir WORK_DIR (or python tools/train.py CONFIG)" >&2
    exit 2
fi
for var in GPUS GPUS_PER_NODE CPUS_PER_TASK; do
    if [ -n "${!var}" ] && ! [[ "${!var}" =~ ^[1-9][0-9]*$ ]]; then
        echo "error: $var='${!var}' must be an integer >= 1" >&2
        exit 2
    fi
done
set -x
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
DIR=$(dirname "$0")
PYTHONPATH="$DIR/..":$PYTHONPATH \
srun -p "${PARTITION}" \
    --job-name="${JOB_NAME}" \
    --gres=gpu:${GPUS_PER_NODE} \
    --ntasks=${GPUS} \
    --ntasks-per-node=${GPUS_PER_NODE} \
    --cpus-per-task=${CPUS_PER_TASK} \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    ${PYTHON:-python} -u "$DIR/train.py" "${CONFIG}" --work-dir="${WORK_DIR}" --launcher="slurm" \
    "${@:5}"
