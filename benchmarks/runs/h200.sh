#!/usr/bin/env bash
# The H200 runs (benchmarks/results/h200-*), stage by stage, each within one 10-minute call on a GPU
# machine where the project's dependencies are importable (PYTHONPATH):
#   benchmarks/runs/h200.sh train                 # the three reference models, default presets
#   benchmarks/runs/h200.sh instances             # DLRM FP32 ONNX at 1, 2 and 4 instances per GPU
#   benchmarks/runs/h200.sh fp32 [MODEL ...]      # ONNX + TorchScript at ranking-size batches
#   benchmarks/runs/h200.sh fp16 [MODEL ...]      # the same, half-precision artifacts
#   benchmarks/runs/h200.sh export [MODEL ...]    # fp32's export alone (for the stages below)
#   benchmarks/runs/h200.sh perf-analyzer         # DLRM FP32 ONNX b16384 (after fp32 or export), both
#                                                 # load generators, CUDA shared memory
#   benchmarks/runs/h200.sh grpc-messages         # the same, ours, tensors in the gRPC messages
#   benchmarks/runs/h200.sh small [MODEL ...]     # the README table's cells: batch 1/64/256
#   benchmarks/runs/h200.sh noise NAME BATCH      # why an in-process baseline of the fp32 stage does
#                                                 # not settle (runs/baseline_noise.py)
#   benchmarks/runs/h200.sh cuda-pool             # DLRM FP32 ONNX b16384 over CUDA shared memory with
#                                                 # Triton's default and a 1 GiB CUDA memory pool
#                                                 # (runs/cuda_pool.py; after export dlrm)
# MODEL: dlrm, two_tower, dcn_v2 (default: all three; at the default 30 s cap per cell a call holds
# two_tower alone or dlrm and dcn_v2 together). INSTANCES=N skips reading the instances run;
# MAX_CELL_S sets the cap. Each stage writes its runs under $RUNS (default /tmp/h200) and copies
# results.json and results.md to $OUT when set; `tritonstack bench report DIR/results.json`
# rebuilds the rest.
set -euo pipefail
stage=$1
shift
runs=${RUNS:-/tmp/h200}
work=${WORK:-/tmp/h200-work}
cap=${MAX_CELL_S:-30}
ts=(python3 -m tritonstack)
all=(dlrm two_tower dcn_v2)
models=("${@:-${all[@]}}")
mkdir -p "$runs" "$work"

keep() {  # keep NAME: the run's results where the caller collects them
  if [ -n "${OUT:-}" ]; then mkdir -p "$OUT/$1" && cp "$runs/$1"/results.{json,md} "$OUT/$1/"; fi
}

instances() {  # INSTANCES, else the count whose cells served the most samples/s in the instances run
  if [ -n "${INSTANCES:-}" ]; then echo "$INSTANCES"; return; fi
  python3 - "$runs/h200-instances/results.json" <<'PY'
import json, sys
cells = json.load(open(sys.argv[1]))["cells"]
best = max(cells, key=lambda c: c["samples_per_s"])
print(best["name"].removeprefix("dlrm_i").removesuffix("_onnx"))
PY
}

export_models() {  # export_models REPO [options]: the selected models, ONNX + TorchScript, for the GPU
  local repo=$1 m
  shift
  for m in "${models[@]}"; do
    "${ts[@]}" export "$work/ck/$m.pt" --repo "$repo" --formats onnx,torchscript --device gpu --overwrite "$@"
  done
}

bench_models() {  # bench_models NAME [options]: the selected models of $work/NAME at concurrency 1 and 16
  local name=$1 repo=$work/$1
  shift
  [ "${#models[@]}" -eq "${#all[@]}" ] || name="$name-$(IFS=-; echo "${models[*]}")"
  "${ts[@]}" bench --repo "$repo" --models "$(IFS=,; echo "${models[*]}")" --concurrency 1,16 \
    --out "$runs/$name" --max-cell-s "$cap" "$@"
  keep "$name"
}

sweep() {  # sweep NAME [--fp16]: the selected models at ranking-size batches, tensors in CUDA shared memory
  local name=$1
  shift
  export_models "$work/$name" --instances "$(instances)" --max-batch-size 16384 "$@"
  bench_models "$name" --batch-sizes 1024,4096,16384 --shared-memory cuda --client-processes 4
}

b16384() {  # b16384 NAME [options]: DLRM FP32 ONNX of the fp32 stage at batch 16384, concurrency 1 and 16
  local name=$1
  shift
  "${ts[@]}" bench --repo "$work/h200-ranking" --models dlrm_onnx --batch-sizes 16384 --concurrency 1,16 \
    --client-processes 4 --out "$runs/$name" --max-cell-s "$cap" "$@"
  keep "$name"
}

instances_bench() {  # instances_bench NAME [options]: DLRM FP32 ONNX at 1, 2, 4 instances, batch 16384
  local name=$1
  shift
  "${ts[@]}" bench --repo "$work/instances" --batch-sizes 16384 --concurrency 8,16 --shared-memory cuda \
    --out "$runs/$name" --max-cell-s "$cap" "$@"
  keep "$name"
}

case $stage in
  train)
    for m in "${all[@]}"; do "${ts[@]}" train --arch "$m" --out "$work/ck/$m.pt"; done
    ;;
  instances)
    for n in 1 2 4; do
      "${ts[@]}" export "$work/ck/dlrm.pt" --name "dlrm_i$n" --repo "$work/instances" --formats onnx \
        --device gpu --instances "$n" --max-batch-size 16384 --overwrite
    done
    instances_bench h200-instances --client-processes 2
    ;;
  perf-analyzer) b16384 h200-perf-analyzer --shared-memory cuda --load-generator both ;;
  grpc-messages) b16384 h200-grpc-messages --shared-memory none ;;
  fp32) sweep h200-ranking ;;
  export) export_models "$work/h200-ranking" --instances "$(instances)" --max-batch-size 16384 ;;
  fp16) sweep h200-ranking-fp16 --fp16 ;;
  small) export_models "$work/h200-small" && bench_models h200-small --batch-sizes 1,64,256 ;;
  cuda-pool)
    python3 benchmarks/runs/cuda_pool.py "$work/h200-ranking" dlrm_onnx 16384 "$runs/h200-cuda-pool" default 1024
    keep h200-cuda-pool-default && keep h200-cuda-pool-1024
    ;;
  noise)
    python3 benchmarks/runs/baseline_noise.py "$work/h200-ranking" "$1" "$2" --out "${OUT:-$runs}/noise-$1-b$2.json"
    ;;
  *) echo "unknown stage $stage: train, instances, fp32, fp16, export, perf-analyzer, grpc-messages, small," \
       "noise or cuda-pool" >&2
     exit 2 ;;
esac
