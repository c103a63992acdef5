#!/usr/bin/env bash
# Scenarios for scripts/setup.sh's toolchain step, as a new user meets it: no Rust at all, a
# Rust too old, and the demo's setup (which must not start the test suite's long installs). Each
# runs setup.sh with a private HOME and a PATH of stand-in programs (cargo, rustc, curl) that
# record how they were called; the system's packages are already there, so apt does nothing.
# Needs root, as setup.sh does.
#
#   scripts/tests/setup.test.sh     prints one line per scenario, then "N passed, N failed"
set -uo pipefail

SETUP="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/setup.sh"
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
SYSTEM_PATH=/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin
passed=0
failed=0

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.test.sh needs root (setup.sh refuses to run without it); run it as root"
  exit 1
fi

# A fresh user: $USER_HOME/home as HOME, $USER_HOME/bin first on PATH, calls recorded in $CALLS.
new_user() {
  USER_HOME="$SCRATCH/$1"
  CALLS="$USER_HOME/calls"
  mkdir -p "$USER_HOME/home" "$USER_HOME/bin"
  : >"$CALLS"
  # A downloader that must never be used.
  stand_in curl 'exit 1'
}

stand_in() {
  local name=$1 body=$2
  printf '#!/bin/sh\necho "%s $*" >>"%s"\n%s\n' "$name" "$CALLS" "$body" >"$USER_HOME/bin/$name"
  chmod +x "$USER_HOME/bin/$name"
}

run_setup() {
  OUTPUT=$(HOME="$USER_HOME/home" PATH="$USER_HOME/bin:$SYSTEM_PATH" "$SETUP" "$@" 2>&1 </dev/null)
  STATUS=$?
}

verdict() {
  local scenario=$1 problem=$2
  if [ -z "$problem" ]; then
    echo "ok   $scenario"
    passed=$((passed + 1))
  else
    echo "FAIL $scenario: $problem"
    while IFS= read -r line; do echo "    | $line"; done <<<"$OUTPUT"
    failed=$((failed + 1))
  fi
}

# The system's own tools must be there for any scenario to mean something.
for tool in dpkg-query ip; do
  command -v "$tool" >/dev/null || {
    echo "setup.test.sh: $tool is missing; run scripts/setup.sh once first"
    exit 1
  }
done

# --- No Rust anywhere: a clear refusal that says what to install, and nothing downloaded.
new_user no-toolchain
run_setup --demo
problem=""
[ "$STATUS" -ne 0 ] || problem="setup.sh succeeded without a toolchain"
[[ $OUTPUT == *"no Rust toolchain found"* ]] || problem="${problem:-it does not say that no toolchain was found}"
[[ $OUTPUT == *"rustup toolchain install stable --profile minimal --component clippy,rustfmt"* ]] ||
  problem="${problem:-it does not give the rustup command}"
[[ $OUTPUT == *"standalone installer"* ]] || problem="${problem:-it does not name the offline way}"
[ ! -s "$CALLS" ] || problem="${problem:-it ran: $(cat "$CALLS")}"
verdict "no toolchain: refused with what to install, nothing fetched" "$problem"

# --- Debian 12's own rustc: too old, said before any build starts.
new_user old-toolchain
stand_in rustc 'echo "rustc 1.63.0"'
stand_in cargo 'exit 0'
run_setup --demo
problem=""
[ "$STATUS" -ne 0 ] || problem="setup.sh accepted Rust 1.63"
[[ $OUTPUT == *"Rust 1.63.0; Ambit needs 1.89 or newer"* ]] || problem="${problem:-it does not name both versions}"
grep -q '^cargo ' "$CALLS" && problem="${problem:-it ran cargo: $(cat "$CALLS")}"
verdict "Rust 1.63: refused, naming the version found and the one needed" "$problem"

# --- The demo's setup with a good toolchain: done, without cargo-fuzz or the API server build.
new_user demo
stand_in rustc 'echo "rustc 1.95.0 (59807616e 2026-04-14)"'
stand_in cargo 'exit 0'
run_setup --demo
problem=""
[ "$STATUS" -eq 0 ] || problem="setup.sh --demo failed (exit $STATUS)"
grep -q 'install' "$CALLS" && problem="${problem:-it installed something: $(cat "$CALLS")}"
[[ $OUTPUT == *kube-build* ]] && problem="${problem:-it started kube-build.sh}"
verdict "--demo with Rust 1.95: succeeds without cargo install or kube-build" "$problem"

# --- The test suite's setup: cargo-fuzz is installed when missing (the stand-in records it).
new_user test-suite
stand_in rustc 'echo "rustc 1.95.0-nightly (59807616e 2026-04-14)"'
stand_in cargo 'exit 0'
AMBIT_SKIP_KUBE_BUILD=1 run_setup
problem=""
[ "$STATUS" -eq 0 ] || problem="setup.sh failed (exit $STATUS)"
grep -q '^cargo install cargo-fuzz --locked$' "$CALLS" || problem="${problem:-cargo-fuzz was not installed: $(cat "$CALLS")}"
verdict "test setup with a nightly 1.95: installs cargo-fuzz" "$problem"

echo "setup: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
