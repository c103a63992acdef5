#!/usr/bin/env bash
# Installs everything Ambit's demo and test suite need on a Debian machine, as root.
# Idempotent: what is already present is not touched, so a second run is instant.
#
#   scripts/setup.sh           what the test suite needs (scripts/test.sh runs this)
#   scripts/setup.sh --demo    only what the demo needs (scripts/demo.sh runs this): no cargo-fuzz,
#                              no Kubernetes API server build
#
# It downloads nothing but Debian packages (apt) and crates (cargo): no toolchain installer is
# fetched from anywhere, since many machines that run this reach only package registries.
set -euo pipefail

# The Rust release the locked dependencies need (kube 4.2 declares rust-version 1.89; the
# workspace's own rust-version is lower). cargo names the exact crate when a toolchain is older.
MIN_RUST=1.89

# System packages the cluster-in-a-box and the tests use:
#   iproute2       network namespaces, veths, bridges, routes (nodes and pods)
#   nftables       in-pod redirect rules (iptables is the fallback on hosts without nft)
#   containernetworking-plugins  Debian's CNI reference plugins (bridge, host-local), chained like kubelet does
#   tcpdump        the "no plaintext on the wire" test captures the link between nodes
#   openssl        `openssl verify` cross-checks the chains our CA issues
#   procps         ps/pkill used by the harness for cleanup
#   ca-certificates  cargo fetching crates over TLS
#   build-essential, pkg-config  crates that compile C (ring)
PACKAGES=(iproute2 nftables iptables containernetworking-plugins tcpdump openssl procps ca-certificates build-essential pkg-config)

demo_only=0
case "${1:-}" in
  "") ;;
  --demo) demo_only=1 ;;
  -h | --help)
    sed -n '2,10p' "$0"
    exit 0
    ;;
  *)
    echo "setup.sh: unknown argument '$1' (usage: $0 [--demo])" >&2
    exit 2
    ;;
esac

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh must run as root (it installs packages and the tests create network namespaces); try: sudo $0" >&2
  exit 1
fi

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt_log=$(mktemp /tmp/ambit-setup-apt.XXXXXX.log)
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$apt_log" 2>&1; then
    echo "setup: installing ${missing[*]} failed; the last lines of $apt_log:" >&2
    tail -n 20 "$apt_log" >&2
    exit 1
  fi
  rm -f "$apt_log"
fi

# Before anything slow: the kernel features the mesh relies on.
if ! ip netns list >/dev/null 2>&1; then
  echo "setup: 'ip netns' does not work here; Ambit's tests need network namespaces (run as root on a Linux host or a privileged container)" >&2
  exit 1
fi

# Rust: the machine's toolchain (on PATH, or rustup's in ~/.cargo/bin). None is downloaded here.
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null 2>&1 || ! command -v rustc >/dev/null 2>&1; then
  cat >&2 <<EOF
setup: no Rust toolchain found (no cargo and rustc on PATH, none in ~/.cargo/bin).
Ambit builds with stable Rust $MIN_RUST or newer; the test suite also needs its clippy and rustfmt
components. setup.sh does not fetch toolchains. Install one, then run this again:
  - with rustup, where the Rust project's download servers are reachable:
      rustup toolchain install stable --profile minimal --component clippy,rustfmt
    (rustup itself: Debian 13 and later package it, apt-get install rustup)
  - without internet: the Rust project's standalone installer for x86_64-unknown-linux-gnu
    (rust-<version>-x86_64-unknown-linux-gnu.tar.xz, which includes clippy and rustfmt), copied
    to this machine, unpacked, then ./install.sh
Debian 12's own packages are too old: rustc/cargo 1.63, rustc-web/cargo-web 1.85 (without clippy).
EOF
  exit 1
fi
rust_version=$(rustc --version | cut -d' ' -f2)
if [ "$(printf '%s\n%s\n' "$MIN_RUST" "${rust_version%%-*}" | sort -V | head -n 1)" != "$MIN_RUST" ]; then
  echo "setup: $(command -v rustc) is Rust $rust_version; Ambit needs $MIN_RUST or newer (rustup update stable, or put a newer toolchain first on PATH)" >&2
  exit 1
fi

if [ "$demo_only" -eq 1 ]; then
  exit 0
fi

# cargo-fuzz, for the fuzz targets in fuzz/ (scripts/fuzz-smoke.sh, the last step of test.sh).
# It builds with the stable toolchain (fuzz/README.md says which flags need RUSTC_BOOTSTRAP).
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "setup: installing cargo-fuzz (cargo install cargo-fuzz --locked; a few minutes the first time)"
  cargo install cargo-fuzz --locked
  echo "setup: cargo-fuzz $(cargo fuzz --version 2>/dev/null || echo installed)"
fi

# A real Kubernetes 1.20.2 API server (plus controller manager and kubectl) for the
# Kubernetes-mode tests: built from Debian's source package once (~15-20 min on 2 cores) into a
# cache that later runs reuse in a fraction of a second. Skip with AMBIT_SKIP_KUBE_BUILD=1.
if [ "${AMBIT_SKIP_KUBE_BUILD:-0}" != "1" ]; then
  "$(dirname "$0")/kube-build.sh"
fi
