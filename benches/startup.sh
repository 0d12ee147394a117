#!/usr/bin/env bash
# Start-up time of the commands a data office runs on a machine without PyTorch:
# `dpaudit account epsilon` and `dpaudit cert verify`, run by the front binary (no libtorch),
# beside the same command lines run by `dpaudit-torch` (which loads libtorch), interleaved.
# Median wall time of N runs each (default 20). Issue 29's target: at most 30 ms.
#
#   benches/startup.sh [N]        (builds the release binaries first)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-20}"
cargo build --release --quiet --bins
bin=target/release
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# A certificate to verify: a small private run on the bundled fixture, signed with a fresh key.
"$bin/dpaudit" keygen --out "$work/keys" >/dev/null
"$bin/dpaudit" train --dataset fixture --model logreg --noise-multiplier 1.0 --epochs 1 \
    --out "$work/run" >/dev/null
"$bin/dpaudit" cert sign --run "$work/run" --key "$work/keys/dpaudit-cert.key" --out "$work/cert.json" >/dev/null

account=(account epsilon -q 0.01 -s 1.1 -t 1000 -d 1e-5 --accountant rdp)
verify=(cert verify "$work/cert.json" --pubkey "$work/keys/dpaudit-cert.pub")

ms() { # milliseconds of one run of "$@", output discarded
    local t0 t1
    t0=$(date +%s%N)
    "$@" >/dev/null 2>&1
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000))
}
declare -A times
for _ in $(seq "$n"); do
    times[front_account]+="$(ms "$bin/dpaudit" "${account[@]}") "
    times[torch_account]+="$(ms "$bin/dpaudit-torch" "${account[@]}") "
    times[front_verify]+="$(ms "$bin/dpaudit" "${verify[@]}") "
    times[torch_verify]+="$(ms "$bin/dpaudit-torch" "${verify[@]}") "
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; printf "%.1f", m / 1000}'; }
echo "median wall time of $n interleaved runs (ms), $(nproc) cores, $(date -u +%Y-%m-%d)"
printf '%-40s %10s %14s\n' command "dpaudit" "dpaudit-torch"
printf '%-40s %10s %14s\n' "account epsilon (RDP)" "$(median <<<"${times[front_account]}")" "$(median <<<"${times[torch_account]}")"
printf '%-40s %10s %14s\n' "cert verify" "$(median <<<"${times[front_verify]}")" "$(median <<<"${times[torch_verify]}")"
if readelf -d "$bin/dpaudit" | grep NEEDED | grep -q 'libtorch'; then
    echo "error: the front binary dpaudit links libtorch"; exit 1
fi
echo "dpaudit links libtorch: no"
