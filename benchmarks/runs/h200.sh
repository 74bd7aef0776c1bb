#!/usr/bin/env bash
# The committed H200 runs at ranking-size batches (benchmarks/results/h200-*), stage by stage, on a
# GPU machine where the project's dependencies are importable (PYTHONPATH) and `python3` is 3.12.
#   benchmarks/runs/h200.sh instances   # train the three models; DLRM FP32 ONNX at 1, 2, 4 instances
#   benchmarks/runs/h200.sh fp32        # the three models, ONNX + TorchScript, at the best instance count
#   benchmarks/runs/h200.sh fp16        # the same, half-precision artifacts
# Each stage writes its runs under $RUNS (default /tmp/h200) and copies results.json and results.md
# to $OUT when set; `tritonstack bench report DIR/results.json` rebuilds the rest.
set -euo pipefail
stage=$1
runs=${RUNS:-/tmp/h200}
work=${WORK:-/tmp/h200-work}
ts=(python3 -m tritonstack)
models=(dlrm two_tower dcn_v2)
batches=1024,4096,16384
mkdir -p "$runs" "$work"

keep() {  # keep NAME: the run's results where the caller collects them
  if [ -n "${OUT:-}" ]; then mkdir -p "$OUT/$1" && cp "$runs/$1"/results.{json,md} "$OUT/$1/"; fi
}

best_instances() {  # the instance count whose cells served the most samples/s in the instances run
  python3 - "$runs/h200-instances/results.json" <<'PY'
import json, sys
cells = json.load(open(sys.argv[1]))["cells"]
best = max(cells, key=lambda c: c["samples_per_s"])
print(best["name"].removeprefix("dlrm_i").removesuffix("_onnx"))
PY
}

export_models() {  # export_models REPO INSTANCES [--fp16]
  local repo=$1 instances=$2
  shift 2
  for m in "${models[@]}"; do
    "${ts[@]}" export "$work/ck/$m.pt" --repo "$repo" --formats onnx,torchscript --device gpu \
      --instances "$instances" --max-batch-size 16384 "$@"
  done
}

bench() {  # bench NAME REPO [options]: the three models at ranking-size batches
  local name=$1 repo=$2
  shift 2
  "${ts[@]}" bench --repo "$repo" --batch-sizes "$batches" --out "$runs/$name" --max-cell-s 10 "$@"
  keep "$name"
}

case $stage in
  instances)
    for m in "${models[@]}"; do "${ts[@]}" train --arch "$m" --out "$work/ck/$m.pt"; done
    for n in 1 2 4; do
      "${ts[@]}" export "$work/ck/dlrm.pt" --name "dlrm_i$n" --repo "$work/instances" --formats onnx \
        --device gpu --instances "$n" --max-batch-size 16384
    done
    "${ts[@]}" bench --repo "$work/instances" --batch-sizes 16384 --concurrency 8,16 --shared-memory cuda \
      --client-processes 2 --out "$runs/h200-instances" --max-cell-s 10
    keep h200-instances
    "${ts[@]}" bench --repo "$work/instances" --batch-sizes 16384 --concurrency 8,16 --shared-memory cuda \
      --load-generator perf_analyzer --out "$runs/h200-instances-perf-analyzer" --max-cell-s 10 \
      && keep h200-instances-perf-analyzer
    ;;
  fp32)
    n=$(best_instances)
    export_models "$work/fp32" "$n"
    bench h200-ranking "$work/fp32" --concurrency 1,16 --shared-memory cuda --client-processes 4
    ;;
  fp16)
    n=$(best_instances)
    export_models "$work/fp16" "$n" --fp16
    bench h200-ranking-fp16 "$work/fp16" --concurrency 1,16 --shared-memory cuda --client-processes 4
    ;;
  *) echo "unknown stage $stage: instances, fp32 or fp16" >&2; exit 2 ;;
esac
