#!/usr/bin/env bash
# Installs what the tests need (PostgreSQL, compression CLIs) and runs every
# test: formatting, lints, unit tests, store conformance, and the end-to-end
# tests that drive real PostgreSQL servers, and the documentation's examples
# (scripts/doc-test.sh). Run as root or as a user who can
# sudo-less run PostgreSQL; see README.
set -euo pipefail
cd "$(dirname "$0")/.."

bash .ci/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked --no-fail-fast
echo "== scripts/doc-test.sh (the examples of README.md and docs/, with the debug binary cargo test built)"
bash scripts/doc-test.sh
