#!/usr/bin/env bash
# Installs everything Ambit's demo and test suite need on a Debian machine, as root.
# Idempotent: packages already present are not touched, so a second run is instant.
set -euo pipefail

# System packages the cluster-in-a-box and the tests use:
#   iproute2       network namespaces, veths, bridges, routes (nodes and pods)
#   nftables       in-pod redirect rules (iptables is the fallback on hosts without nft)
#   containernetworking-plugins  Debian's CNI reference plugins (bridge, host-local), chained like kubelet does
#   tcpdump        the "no plaintext on the wire" test captures the link between nodes
#   openssl        `openssl verify` cross-checks the chains our CA issues
#   procps         ps/pkill used by the harness for cleanup
PACKAGES=(iproute2 nftables iptables containernetworking-plugins tcpdump openssl procps ca-certificates curl build-essential pkg-config)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh must run as root (it installs packages and the tests create network namespaces); try: sudo $0" >&2
  exit 1
fi

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Rust: use the machine's toolchain when there is one; otherwise install rustup's stable.
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: installing the Rust toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi

# cargo-fuzz, for the fuzz targets in fuzz/ (scripts/fuzz-smoke.sh, the last step of test.sh).
# It builds with the stable toolchain (fuzz/README.md says which flags need RUSTC_BOOTSTRAP).
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "setup: installing cargo-fuzz (cargo install cargo-fuzz --locked; a few minutes the first time)"
  cargo install cargo-fuzz --locked
  echo "setup: cargo-fuzz $(cargo fuzz --version 2>/dev/null || echo installed)"
fi

# The kernel features the mesh relies on: network namespaces and nftables.
if ! ip netns list >/dev/null 2>&1; then
  echo "setup: 'ip netns' does not work here; Ambit's tests need network namespaces (run as root on a Linux host or a privileged container)" >&2
  exit 1
fi

# A real Kubernetes 1.20.2 API server (plus controller manager and kubectl) for the
# Kubernetes-mode tests: built from Debian's source package once (~15-20 min on 2 cores) into a
# cache that later runs reuse in a fraction of a second. Skip with AMBIT_SKIP_KUBE_BUILD=1 (the
# demo does not need it).
if [ "${AMBIT_SKIP_KUBE_BUILD:-0}" != "1" ]; then
  "$(dirname "$0")/kube-build.sh"
fi
