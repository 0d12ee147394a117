#!/usr/bin/env bash
# The figures of issue 28, section 1 ("audits must be able to refute what they test"):
#   1. the from-claim ceiling table, before and after (claims 1, 2, 4, 8; K = 500 ... 5,000);
#   2. audits/claims-too-much.toml (sigma 0.6 claiming the epsilon of sigma 4) under every
#      threshold rule: must never be `consistent`;
#   3. REPEATS seeded audits of a correct recipe (audits/dirac-eps2.toml, seeds 1..REPEATS):
#      at least 19 of 20 `consistent`;
#   4. an underpowered audit (dirac-eps8 with 50 runs per side): refused, then `inconclusive` (exit 12);
#   5. the fabricated-merge route: `--shard 4000/4001`, a hand-edited runs.jsonl, a runs.jsonl
#      without spec.json: each refused, with its message.
# Usage: benches/audit_issue28.sh [1 2 3 4 5]   (default: all)
# Env: K_BAD (default 1000) runs per side for 2; K_GOOD (default 1000) for 3; REPEATS (20);
#      THREADS (2); OUT (runs/issue28); DPAUDIT (default: cargo's release binary).
set -uo pipefail
cd "$(dirname "$0")/.."
K_BAD=${K_BAD:-1000}
K_GOOD=${K_GOOD:-1000}
REPEATS=${REPEATS:-20}
THREADS=${THREADS:-2}
OUT=${OUT:-runs/issue28}
if [ -z "${DPAUDIT:-}" ]; then
  cargo build --release --quiet || exit 1
  DPAUDIT=target/release/dpaudit
fi
mkdir -p "$OUT"
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(1 2 3 4 5)
verdict() { python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); print(a["verdict"], "epsilon_lower %.4f" % a["epsilon_lower"], "claim %.4f" % a["claim"]["epsilon"], "K %d" % a["runs_per_side"], "ceiling %.4f" % a["plan"]["ceiling"], "eps50", a["plan"]["detectable_epsilon_50"], "eps90", a["plan"]["detectable_epsilon_90"], "gdp %.2f" % a["gdp_estimate"]["epsilon"])' "$1"; }
for part in "${parts[@]}"; do
  case $part in
  1)
    echo "== 1. ceilings"
    echo "\$ dpaudit audit ceilings --claims 1,2,4,8 --runs 500,1000,2000,5000"
    "$DPAUDIT" audit ceilings --claims 1,2,4,8 --runs 500,1000,2000,5000
    ;;
  2)
    echo "== 2. sigma 0.6 claiming the epsilon of sigma 4, K = $K_BAD, every threshold rule"
    for rule in from-claim held-out bonferroni; do
      s=$OUT/claims-too-much-$rule.toml
      sed -e "s/^threshold = .*/threshold = \"$rule\"/" -e "s/^runs_per_side = .*/runs_per_side = $K_BAD/" audits/claims-too-much.toml > "$s"
      d=$OUT/claims-too-much-$rule
      start=$(date +%s)
      "$DPAUDIT" audit run "$s" --out "$d" --threads "$THREADS" > "$d.txt" 2>&1
      rc=$?
      echo "$rule: exit $rc, $(( $(date +%s) - start )) s: $(verdict "$d/audit.json")"
    done
    ;;
  3)
    echo "== 3. $REPEATS seeded audits of the correct recipe audits/dirac-eps2.toml, K = $K_GOOD"
    ok=0
    for seed in $(seq 1 "$REPEATS"); do
      s=$OUT/correct-$seed.toml
      sed -e "s/^seed = .*/seed = $seed/" -e "s/^runs_per_side = .*/runs_per_side = $K_GOOD/" audits/dirac-eps2.toml > "$s"
      d=$OUT/correct-$seed
      "$DPAUDIT" audit run "$s" --out "$d" --threads "$THREADS" > "$d.txt" 2>&1
      rc=$?
      [ $rc -eq 0 ] && ok=$((ok + 1))
      echo "seed $seed: exit $rc: $(verdict "$d/audit.json")"
    done
    echo "consistent: $ok of $REPEATS"
    ;;
  4)
    echo "== 4. an underpowered audit: audits/dirac-eps8.toml with 50 runs per side"
    s=$OUT/underpowered.toml
    sed -e "s/^runs_per_side = .*/runs_per_side = 50/" audits/dirac-eps8.toml > "$s"
    rm -rf "$OUT/underpowered"
    echo "\$ dpaudit audit run $s --out $OUT/underpowered"
    "$DPAUDIT" audit run "$s" --out "$OUT/underpowered" --threads "$THREADS" 2>&1 | tail -n 2
    echo "exit ${PIPESTATUS[0]}"
    echo "\$ dpaudit audit run $s --out $OUT/underpowered --allow-inconclusive"
    "$DPAUDIT" audit run "$s" --out "$OUT/underpowered" --threads "$THREADS" --allow-inconclusive 2>/dev/null
    echo "exit ${PIPESTATUS[0]}"
    ;;
  5)
    echo "== 5. the fabricated-merge route"
    s=$OUT/merge.toml
    sed -e "s/^runs_per_side = .*/runs_per_side = 100/" audits/dirac-eps2.toml > "$s"
    rm -rf "$OUT/fab" "$OUT/shard0" "$OUT/shard1" "$OUT/merged" "$OUT/stray"
    echo "\$ dpaudit audit run $s --out $OUT/fab --shard 4000/4001"
    "$DPAUDIT" audit run "$s" --out "$OUT/fab" --shard 4000/4001 2>&1 | tail -n 1
    echo "exit ${PIPESTATUS[0]}; spec.json written: $([ -f "$OUT/fab/spec.json" ] && echo yes || echo no)"
    "$DPAUDIT" audit run "$s" --out "$OUT/shard0" --shard 0/2 --threads "$THREADS" > /dev/null 2>&1
    "$DPAUDIT" audit run "$s" --out "$OUT/shard1" --shard 1/2 --threads "$THREADS" > /dev/null 2>&1
    cp "$OUT/shard0/runs.jsonl" "$OUT/shard0-runs.orig"
    # Hand-written score in every record (all other fields kept): passes the field checks.
    python3 - "$OUT/shard0/runs.jsonl" <<'PY'
import json, sys
p = sys.argv[1]
rows = [json.loads(l) for l in open(p)]
for r in rows:
    r["score"] = 9.0 if r["side"] == "with" else -9.0
open(p, "w").write("".join(json.dumps(r) + "\n" for r in rows))
PY
    echo "\$ dpaudit audit merge $OUT/shard0 $OUT/shard1 --out $OUT/merged   # shard0's scores hand-written"
    "$DPAUDIT" audit merge "$OUT/shard0" "$OUT/shard1" --out "$OUT/merged" 2>&1 | tail -n 1
    echo "exit ${PIPESTATUS[0]}"
    # A foreign seed.
    python3 - "$OUT/shard0-runs.orig" "$OUT/shard0/runs.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rows[0]["seed"] += 1
open(sys.argv[2], "w").write("".join(json.dumps(r) + "\n" for r in rows))
PY
    echo "\$ dpaudit audit merge $OUT/shard0 $OUT/shard1 --out $OUT/merged   # one seed changed"
    "$DPAUDIT" audit merge "$OUT/shard0" "$OUT/shard1" --out "$OUT/merged" 2>&1 | tail -n 1
    echo "exit ${PIPESTATUS[0]}"
    cp "$OUT/shard0-runs.orig" "$OUT/shard0/runs.jsonl"
    mkdir -p "$OUT/stray"
    cp "$OUT/shard0/runs.jsonl" "$OUT/stray/runs.jsonl"
    echo "\$ dpaudit audit run $s --out $OUT/stray   # runs.jsonl without spec.json"
    "$DPAUDIT" audit run "$s" --out "$OUT/stray" 2>&1 | tail -n 1
    echo "exit ${PIPESTATUS[0]}"
    echo "\$ dpaudit audit merge $OUT/shard0 $OUT/shard1 --out $OUT/merged   # the genuine shards"
    "$DPAUDIT" audit merge "$OUT/shard0" "$OUT/shard1" --out "$OUT/merged" 2>&1 | grep -E "^audit|records|ceiling" 
    echo "exit ${PIPESTATUS[0]}"
    ;;
  esac
done
