#!/usr/bin/env bash
# README command 2: set everything up, then run the whole test suite (unit, integration, property
# and doc tests). CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --all-targets "$@"
cargo test --doc
