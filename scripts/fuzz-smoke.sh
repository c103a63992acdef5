#!/usr/bin/env bash
# Builds the fuzz crate (fuzz/) and runs every fuzz target briefly from its committed corpus,
# failing on any crash, timeout or leak a target reports (DESIGN §4). The last step of
# scripts/test.sh; longer runs by hand are described in fuzz/README.md.
#
#   AMBIT_FUZZ_SECONDS=20        time per target (libFuzzer -max_total_time)
#   AMBIT_FUZZ_TARGETS="a b"     only these targets (default: every target, `cargo fuzz list`)
#   AMBIT_FUZZ_SANITIZER=none    or address (ASan: needs nightly flags, enabled on stable with
#                                RUSTC_BOOTSTRAP=1; about twice slower, and a second build)
#
# The committed corpus is only read: new inputs go to a scratch directory, so a run leaves the
# tree clean. A crash is copied to fuzz/artifacts/<target>/ with the command that replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

seconds="${AMBIT_FUZZ_SECONDS:-20}"
sanitizer="${AMBIT_FUZZ_SANITIZER:-none}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz-smoke: cargo-fuzz is missing; run scripts/setup.sh (or: cargo install cargo-fuzz --locked)" >&2
  exit 1
fi
# cargo-fuzz passes `-Zsanitizer=…` for a sanitizer: a nightly flag, which the stable compiler
# accepts with RUSTC_BOOTSTRAP=1. Without a sanitizer every flag it passes is stable.
if [ "$sanitizer" != "none" ]; then
  export RUSTC_BOOTSTRAP=1
fi
# -a: debug assertions and overflow checks, so arithmetic overflow on hostile input is a crash.
build_flags=(--sanitizer "$sanitizer" --debug-assertions)

started=$(date +%s)
# The main workspace's `cargo fmt --all` does not reach this crate.
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
echo "fuzz-smoke: building fuzz targets (sanitizer: $sanitizer)"
(cd fuzz && cargo fuzz build "${build_flags[@]}")
echo "fuzz-smoke: built in $(($(date +%s) - started)) s"

if [ -n "${AMBIT_FUZZ_TARGETS:-}" ]; then
  read -r -a targets <<<"$AMBIT_FUZZ_TARGETS"
else
  mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi

binaries="fuzz/target/x86_64-unknown-linux-gnu/release"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
for target in "${targets[@]}"; do
  corpus="fuzz/corpus/$target"
  if [ ! -d "$corpus" ]; then
    echo "fuzz-smoke: $target has no corpus ($corpus); every target starts from a committed one" >&2
    failed+=("$target")
    continue
  fi
  mkdir -p "$scratch/$target/new" "$scratch/$target/artifacts"
  options=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
    -artifact_prefix="$scratch/$target/artifacts/")
  # The enrollment datagram limit is 16 KiB: longer inputs reach the truncation path.
  if [ "$target" = enroll ]; then
    options+=(-max_len=17000)
  fi
  echo "fuzz-smoke: $target for ${seconds}s ($(find "$corpus" -type f | wc -l) corpus inputs)"
  log="$scratch/$target/log"
  if "$binaries/$target" "${options[@]}" "$scratch/$target/new" "$corpus" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz-smoke: $target ok, ${runs:-?} executions"
  else
    echo "fuzz-smoke: $target FAILED; the end of its log:" >&2
    grep -v '^#[0-9]' "$log" | tail -n 40 >&2
    mkdir -p "fuzz/artifacts/$target"
    for artifact in "$scratch/$target/artifacts/"*; do
      [ -e "$artifact" ] || continue
      cp "$artifact" "fuzz/artifacts/$target/"
      echo "fuzz-smoke: replay with: (cd fuzz && cargo fuzz run ${build_flags[*]} $target artifacts/$target/$(basename "$artifact"))" >&2
    done
    failed+=("$target")
  fi
done

echo "fuzz-smoke: ${#targets[@]} targets in $(($(date +%s) - started)) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz-smoke: failing targets: ${failed[*]}" >&2
  exit 1
fi
