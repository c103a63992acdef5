#!/usr/bin/env bash
# The embedded-mode demo: a two-node mesh in network namespaces on this machine, traffic
# across nodes, and ztunnel access-log lines with both SPIFFE identities. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
AMBIT_SKIP_KUBE_BUILD=1 ./scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
echo "Building Ambit (release; the first build takes a few minutes)..."
cargo build --release --quiet --locked -p ztunnel -p ambit-ca -p ambit-cni -p ambit-tests --bins
exec ./target/release/ambit-demo
