#!/usr/bin/env bash
# The embedded-mode demo: a two-node mesh in network namespaces on this machine, traffic
# across nodes, and ztunnel access-log lines with both SPIFFE identities. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --demo
export PATH="$HOME/.cargo/bin:$PATH"

# One cargo build for everything the demo runs. The package set matters: cargo unifies dependency
# features over the packages it is asked for, so a second build of a subset (what the harness does
# when left alone) would compile most of the mesh again. AMBIT_MESH_BIN_DIR hands the harness
# these binaries instead. cargo's own progress stays visible: a fresh build takes minutes.
echo "Building ztunnel, ambit-ca, ambit-cni, waypoint and the demo (release, one build; about 10 minutes on 2 cores the first time, seconds after)..."
cargo build --release --locked -p ztunnel -p ambit-ca -p ambit-cni -p waypoint -p ambit-tests \
  --bin ztunnel --bin ambit-ca --bin ambit-cni --bin waypoint --bin ambit-demo --bin ambit-testapp
release_dir="${CARGO_TARGET_DIR:-$PWD/target}/release"
AMBIT_MESH_BIN_DIR="$release_dir" exec "$release_dir/ambit-demo"
