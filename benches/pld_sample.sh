#!/usr/bin/env bash
# The PLD accountant's automatic grid on 160 random problems drawn as in issue 28, section 4
# (fixed seed; tests/accounting_pld_sample.rs): errors, under-reports against a lower reference,
# the gap to a 10x finer grid, and the time per case. Prints one line per case and a summary.
# Usage: benches/pld_sample.sh   (needs LIBTORCH set as for any build of this crate)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --test accounting_pld_sample auto_grid_sample_full -- --ignored --nocapture
