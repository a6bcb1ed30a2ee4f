#!/usr/bin/env bash
# Every GPU check in one command, for a short lease of a GPU machine:
#
#     bash benchmarks/gpu_check.sh [LOG_DIR]
#
# (HISTOLOGY_CHECKPOINT=... for trained weights; STEPS="kernel_tests wsi_throughput" for some steps)
#
# the Triton kernel tests on the GPU, the kernel timings (gating, tile blending), training and
# inference rows with the fused gating, and the whole-slide engine (trivial model's ceiling,
# histology model's busy fraction) with the machine's cores for loading and writing. Each step
# has its own time limit and log (LOG_DIR/<step>.log); a failing step does not stop the others.
set -u
LOGS=${1:-gpu_check_logs}
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
PY=${PYTHON:-python3}
CORES=$(nproc)
WORKERS=$(( CORES / 2 > 1 ? CORES / 2 : 1 ))
WRITERS=$(( CORES - WORKERS - 1 > 1 ? CORES - WORKERS - 1 : 1 ))
CHECKPOINT=${HISTOLOGY_CHECKPOINT:+--histology-checkpoint $HISTOLOGY_CHECKPOINT}

step() {  # step NAME SECONDS COMMAND...: run with a limit, log, print the log's end
    local name=$1 limit=$2 start
    shift 2
    [[ -z "${STEPS:-}" || " $STEPS " == *" $name "* ]] || return 0  # STEPS="a b": only those
    start=$(date +%s)
    timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1
    echo "== $name: exit $? after $(( $(date +%s) - start )) s"
    tail -n "${TAIL:-30}" "$LOGS/$name.log" | cut -c 1-220
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader
"$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available())"
TAIL=4 step kernel_tests 150 "$PY" -m pytest -q -x tests/test_expert_gating.py tests/test_tile_blend.py
# (each histology run took about a minute on an H100 in 2026-11: the CPU-side finishing bounds it)
step wsi_throughput 300 "$PY" benchmarks/wsi_throughput.py --workers "$WORKERS" --writers "$WRITERS" \
    --repeats 3 --histology-repeats 2 --replay $CHECKPOINT
# the same with instance extraction in processes (wsi.instance_workers), which leaves the GIL to the model's thread
step wsi_instance_workers 200 "$PY" benchmarks/wsi_throughput.py --workers "$WORKERS" --writers "$WRITERS" \
    --repeats 1 --histology-repeats 1 --replay --instance-workers "$WRITERS" $CHECKPOINT
step gating 90 "$PY" benchmarks/gating.py
step tile_blend 60 "$PY" benchmarks/tile_blend.py
TAIL=14 step train_throughput 90 "$PY" benchmarks/train_throughput.py --repeats 5 --steps 5
TAIL=6 step wsi_throughput_amp 90 "$PY" benchmarks/wsi_throughput.py --workers "$WORKERS" --writers "$WRITERS" \
    --repeats 1 --histology-repeats 1 --amp $CHECKPOINT
