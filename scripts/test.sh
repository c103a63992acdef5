#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, formatting, lints, every test, then every fuzz
# target briefly.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
# The scripts' own scenarios, a few seconds (setup.sh's toolchain step, kube-build's apt entry).
for script_test in scripts/tests/*.test.sh; do "$script_test"; done
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# `cargo test --workspace` builds every mesh binary (each package has integration tests) with the
# features this build unifies; the mesh harness takes those instead of running its own `cargo
# build -p …`, which would unify other features and compile most of the workspace a second time.
AMBIT_MESH_BIN_DIR="$PWD/target/debug" cargo test --workspace --locked --no-fail-fast
# Every fuzz target for 20 s (AMBIT_FUZZ_SECONDS), from its committed corpus; ~3.5 min with a
# built fuzz/target, plus the fuzz crate's own build the first time.
./scripts/fuzz-smoke.sh
