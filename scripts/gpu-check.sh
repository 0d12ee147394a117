#!/usr/bin/env bash
# The GPU check (issue 30): on a machine with a CUDA GPU, in a few minutes, runs the per-example
# engine's equivalence tests on CUDA device 0 and measures the DP-SGD / non-private throughput
# ratio there (benches/per_example.rs, interleaved comparison), then prints a short table.
# On a machine without CUDA the tests skip (each says why); this script says so and exits 0.
#
# libtorch must be a CUDA build (LIBTORCH, or LIBTORCH_USE_PYTORCH=1 with a CUDA PyTorch), as for
# any `--device cuda` run. Tests and bench share cargo's `test` profile (opt-level 2), so the
# crate and libtorch's C++ wrapper are built once. Usage: scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== building and running the per-example equivalence tests on CUDA"
cargo test --test per_example on_cuda -- --nocapture --test-threads 1 2>&1 | tee "$log"
tests=$(grep -E '^test result:' "$log" | tail -1)

if grep -q 'no CUDA device (tch::Cuda::is_available() is false)' "$log"; then
    echo
    echo "no CUDA device visible to libtorch: the CUDA tests above were skipped, no throughput measured"
    echo "(${tests}; $((SECONDS - start)) s)"
    exit 0
fi

echo "== DP-SGD / non-private throughput on cuda:0 (tanh-cnn, lot 256)"
DPAUDIT_BENCH_DEVICE=cuda cargo bench --profile test --bench per_example -- --bench nomatch 2>&1 | tee "$log"
line=$(grep -E '^interleaved ' "$log" | tail -1)
field() { sed -E "s/.*$1 ([0-9.]+).*/\\1/" <<<"$line"; }

gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
echo
echo "| check (${gpu:-CUDA device 0}) | result |"
echo "|---|---|"
echo "| per-example equivalence tests on CUDA | ${tests#test result: } |"
echo "| non-private step, samples/s | $(field 'non-private') |"
echo "| DP-SGD step (auto routes), samples/s | $(field 'private \(auto\)') |"
echo "| DP-SGD / non-private, median ratio | $(field 'median ratio') |"
echo "| wall time | $((SECONDS - start)) s |"
