#!/usr/bin/env bash
# Every GPU check in one command, for a short lease of a GPU machine:
#
#     bash benchmarks/gpu_check.sh [LOG_DIR]
#
# (HISTOLOGY_CHECKPOINT=... for trained weights; STEPS="kernel_tests wsi_throughput" for some steps;
# PYSPY=... for the profile steps where py-spy is not on the PATH; a folder .dev made by
# benchmarks/gpu_bundle.sh and carried along brings the packages, py-spy and the weights)
#
# the Triton kernel tests on the GPU, the kernel timings (gating, tile blending), training and
# inference rows with the fused gating, and the whole-slide engine (trivial model's ceiling,
# histology model's busy fraction) with the machine's cores for loading and writing. Each step
# has its own time limit and log (LOG_DIR/<step>.log); a failing step does not stop the others.
#
# A lease of 15 minutes allows one call of about 10 minutes after the machine starts. The steps
# that say most about the open target (the model >= 90 % busy on a GPU), in order, each log kept
# if the call is cut short: STEPS="kernel_tests wsi_engines_costly wsi_engines wsi_target"
# (the GPU paths' tests; a batch of slides behind a model of the published Cerberus's cost and
# behind the quickstart, with 1, 2 and 3 engine processes sharing the GPU; one slide's pipeline).
set -u
LOGS=${1:-gpu_check_logs}
mkdir -p "$LOGS"
if [[ -d .dev/whl ]]; then  # made here by benchmarks/gpu_bundle.sh: what the lent machine lacks
    SITE=/tmp/vismtl_site
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .dev/whl/*.whl \
        || { echo "installing .dev/whl failed"; exit 1; }
    cp -r .dev/imagecodecs/. "$SITE/"
    export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    export PYSPY=${PYSPY:-$SITE/bin/py-spy}
    [[ -f .dev/tissue_fp16.pth ]] && export HISTOLOGY_CHECKPOINT=${HISTOLOGY_CHECKPOINT:-.dev/tissue_fp16.pth}
fi
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
PY=${PYTHON:-python3}
CORES=$(nproc)
FINISHERS=$(( CORES - 6 > 1 ? CORES - 6 : 1 ))  # the engine's default on a GPU: all but 4 readers, the model, 1
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
TAIL=4 step kernel_tests 240 "$PY" -m pytest -q -x tests/test_expert_gating.py tests/test_tile_blend.py \
    tests/test_wsi_finishing.py::test_maps_made_on_the_gpu_equal_those_made_on_the_cpu \
    tests/test_wsi_engine.py::test_outputs_made_on_the_gpu_equal_those_made_on_the_cpu \
    tests/test_wsi_graphed.py tests/test_wsi_engine.py::test_a_model_replayed_as_a_cuda_graph_gives_the_same_outputs \
    tests/test_flood_on_device.py tests/test_wsi_engine.py::test_nuclei_decided_on_the_gpu_give_the_same_outputs \
    tests/test_wsi_engine.py::test_the_model_s_thread_stitches_a_batch_without_waiting_for_the_gpu \
    tests/test_wsi_clock.py tests/test_wsi_engine.py::test_two_ranks_take_disjoint_slides
# the 90 % target in one step, batches of 64 and the defaults (the CUDA graph and the nuclei decided on
# the GPU, each a measured non-gain, have steps of their own), medians of 3: the quickstart model,
# its outputs replayed (a model that costs nothing) and replayed behind a model that costs what the
# published Cerberus costs
TAIL=12 step wsi_target 240 "$PY" benchmarks/wsi_throughput.py --skip-trivial --workers 4 --histology-repeats 3 \
    --replay --replay-behind configs/cerberus/cerberus_resnet34.py --finish-workers "$FINISHERS" --tile-cache-mb 512 \
    --batch-size 64 $CHECKPOINT
# the model and its activations replayed as one CUDA graph per batch (wsi.cuda_graph) against launched
# from Python: runs alternating on one engine, batches of 16 and 64, the histology model and replayed
TAIL=12 step wsi_cuda_graph 240 "$PY" benchmarks/wsi_throughput.py --skip-trivial --workers 4 --histology-repeats 3 \
    --replay --finish-workers "$FINISHERS" --tile-cache-mb 512 --batch-size 16 64 --cuda-graph off on $CHECKPOINT
# the nuclei decided on the GPU beside the model (wsi.decide_on_gpu) against in the finishing processes
TAIL=8 step wsi_decide_on_gpu 180 "$PY" benchmarks/wsi_throughput.py --skip-trivial --workers 4 --histology-repeats 3 \
    --finish-workers "$FINISHERS" --tile-cache-mb 512 --batch-size 64 --decide-on-gpu off on $CHECKPOINT
# histology, chunks finished in processes (the GPU default), the tile cache on (each tile computed
# once); --replay: a model that costs nothing, i.e. the engine's own ceiling. Each row's engine
# starts its finishing processes before timing (as after a batch's first slide); batches of 16
# and 64 tiles (filled across chunks) and stitching in the model's thread or its own, runs
# alternating on one engine
step wsi_throughput 420 "$PY" benchmarks/wsi_throughput.py --workers 4 --repeats 3 --histology-repeats 3 --replay \
    --finish-workers "$FINISHERS" --tile-cache-mb 512 --batch-size 16 64 --stitch-thread off on $CHECKPOINT
# how busy the engine keeps a model that costs what the published Cerberus (ResNet-34) costs,
# under the trained quickstart's post-processing load (its outputs replayed behind that model)
TAIL=8 step wsi_costly_model 180 "$PY" benchmarks/wsi_throughput.py --skip-trivial --workers 4 --histology-repeats 2 \
    --replay-behind configs/cerberus/cerberus_resnet34.py --finish-workers "$FINISHERS" --tile-cache-mb 512 \
    --batch-size 16 64 $CHECKPOINT
# a batch of slides, one after the other against overlapped (the next slide prepared, the last one
# concluded beside a slide's tiles): the GPU's share of a batch, not of one slide's pipeline
TAIL=8 step wsi_batch 180 "$PY" benchmarks/wsi_batch.py --workers 4 --batch-size 64 --repeats 3 $CHECKPOINT
# the costly model over a batch of 3 bench slides (the 20,000 px one, 610 tiles each), whose starts and
# tails overlap their neighbours': the GPU's busy share of a batch, which a lab's run is
TAIL=6 step wsi_batch_costly 200 "$PY" benchmarks/wsi_batch.py --workers 4 --batch-size 64 --repeats 3 --size 20000 \
    --slides 3 --skip-trivial --skip-histology --replay-behind configs/cerberus/cerberus_resnet34.py $CHECKPOINT
# a batch of 6 bench slides run by 1, 2 and 3 engine processes sharing the GPU (as torchrun
# --nproc_per_node=K starts them): whether more processes, each with its own GIL, keep the GPU busier
TAIL=9 step wsi_engines 240 "$PY" benchmarks/wsi_engines_per_gpu.py --engines 1 2 3 --slides 6 --size 20000 \
    --batch-size 64 --repeats 1 $CHECKPOINT
TAIL=9 step wsi_engines_costly 240 "$PY" benchmarks/wsi_engines_per_gpu.py --engines 1 2 3 --slides 6 --size 20000 \
    --batch-size 64 --repeats 1 --replay-behind configs/cerberus/cerberus_resnet34.py $CHECKPOINT
# a slide's tiles handed from the reading processes to the engine through the pool's pipe (until
# 2026-11-28) against shared-memory blocks: the engine's CPU and how long it holds a launching thread back
TAIL=8 step wsi_transfer 150 "$PY" benchmarks/wsi_transfer.py --workers 4 --repeats 5
# which of the engine's threads hold its GIL (py-spy --gil: only samples holding it) while the costly
# model runs: the model's thread launches every kernel under that lock
PYSPY_GIL=${PYSPY:-$(command -v py-spy)}
if [[ -n "$PYSPY_GIL" ]]; then
    step wsi_gil 200 "$PYSPY_GIL" record -r 200 --gil -f raw -o "$LOGS/wsi_gil.raw" --threads -- \
        "$PY" benchmarks/wsi_throughput.py --skip-trivial --workers 4 --histology-repeats 0 --batch-size 64 \
        --replay-behind configs/cerberus/cerberus_resnet34.py --finish-workers "$FINISHERS" --tile-cache-mb 512 $CHECKPOINT
    TAIL=100 step wsi_gil_summary 60 "$PY" benchmarks/profile_summary.py "$LOGS/wsi_gil.raw" --top 10 \
        --only SlideRunner.run finish_chunk Prefetched _ExecutorManagerThread
    rm -f "$LOGS/wsi_gil.raw"
fi
# PyTorch calls of the model's thread per tile (the GPU path: canvases filled with one launch per batch)
TAIL=16 step wsi_host_ops 120 "$PY" benchmarks/wsi_host_ops.py --batch-size 64 $CHECKPOINT
# the model compiled by torch.compile (fewer launches from the engine's one GIL) against eager
TAIL=8 step wsi_compile 300 "$PY" benchmarks/wsi_throughput.py --skip-trivial --workers 4 --histology-repeats 3 \
    --batch-size 64 --compile off on --finish-workers "$FINISHERS" --tile-cache-mb 512 $CHECKPOINT
# the model's own rate by batch size, precision and memory layout
TAIL=18 step histology_model_rate 90 "$PY" benchmarks/histology_model_rate.py $CHECKPOINT
# chunk finishing alone: per core, and how the finishing processes scale over this machine's cores
TAIL=16 step wsi_finishing 150 "$PY" benchmarks/wsi_finishing.py $CHECKPOINT
# where the engine's threads, its reading and its finishing processes spend their samples, with
# py-spy if there is one (PYSPY=...); the raw stacks (tens of MB) are summarised, then removed
PYSPY=${PYSPY:-$(command -v py-spy)}
if [[ -n "$PYSPY" ]]; then
    step wsi_profile 240 "$PYSPY" record -r 50 -f raw -o "$LOGS/wsi_profile.raw" --threads --subprocesses -- \
        "$PY" benchmarks/wsi_throughput.py --skip-trivial --workers 4 --histology-repeats 2 --batch-size 64 \
        --finish-workers "$FINISHERS" --tile-cache-mb 512 $CHECKPOINT
    TAIL=120 step wsi_profile_summary 60 "$PY" benchmarks/profile_summary.py "$LOGS/wsi_profile.raw" --top 10 \
        --only SlideRunner.run finish_chunk _finish_packed _worker_loop
    rm -f "$LOGS/wsi_profile.raw"
fi
step gating 90 "$PY" benchmarks/gating.py
step tile_blend 60 "$PY" benchmarks/tile_blend.py
TAIL=14 step train_throughput 90 "$PY" benchmarks/train_throughput.py --repeats 5 --steps 5
TAIL=6 step wsi_throughput_amp 120 "$PY" benchmarks/wsi_throughput.py --workers 4 --repeats 1 --histology-repeats 1 \
    --amp $CHECKPOINT
