#!/usr/bin/env bash
# What moving a ranking-size request costs (benchmarks/results/cpu-transport-*): a model with DLRM's
# request shape and next to no compute, batch 16384, concurrency 1, our load generator and
# perf_analyzer, tensors in the gRPC messages and in system shared memory; then `bench floor` at
# that batch (cpu-transport-floor): our client against tritonclient as its examples use it. Run from the checkout
# with the project installed (make demo's .venv); writes under benchmarks/results/.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PYTHONPATH="$PWD/benchmarks/runs${PYTHONPATH:+:$PYTHONPATH}"
ts=${TRITONSTACK:-.venv/bin/tritonstack}
py=${PYTHON:-.venv/bin/python}
"$py" -c "import torch; from passthrough import build; torch.save(build().state_dict(), '$work/passthrough.pt')"
"$ts" export "$work/passthrough.pt" --arch passthrough:build --input dense:float32:13 \
  --input sparse:int64:26:1000 --output score --name passthrough --formats onnx \
  --max-batch-size 16384 --repo "$work/repo"
for memory in none system; do
  "$ts" bench --repo "$work/repo" --models passthrough_onnx --batch-sizes 16384 --concurrency 1 \
    --load-generator both --shared-memory "$memory" --out "benchmarks/results/cpu-transport-$memory"
done
"$ts" bench floor --repo "$work/repo" --models passthrough_onnx --batch-size 16384 --requests 200 \
  --warmup 20 --out benchmarks/results/cpu-transport-floor
