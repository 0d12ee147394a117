#!/usr/bin/env bash
# README command 2: set everything up, then run the whole test suite (unit, integration, property
# and doc tests). CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# Formatting is part of the suite (rustfmt.toml).
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo fmt --check
# So is clippy: every lint is an error.
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
cargo clippy --all-targets -- -D warnings
cargo test --all-targets "$@"
cargo test --doc
