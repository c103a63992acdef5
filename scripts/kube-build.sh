#!/usr/bin/env bash
# Builds a real Kubernetes API server (kube-apiserver, kube-controller-manager, kubectl) for the
# tests, from Debian bookworm's `kubernetes` 1.20.2 *source* package: no registry reachable here
# ships these binaries, but Debian ships the full vendored source and a Go that compiles it offline.
#
# Idempotent: the binaries land in a cache directory, and a later run that finds them (plus the
# stamp written last) returns at once. Takes 10-20 minutes on 2 cores the first time.
#
#   scripts/kube-build.sh            build once (as root: it apt-installs scripts/kube-packages.txt)
#   scripts/kube-build.sh --force    rebuild even if the cache is complete
#
# Environment:
#   AMBIT_KUBE_CACHE      cache directory (default /var/cache/ambit/kubernetes-1.20.2);
#                         the binaries end up in $AMBIT_KUBE_CACHE/bin
#   AMBIT_DEBIAN_MIRROR   Debian archive URI for the source package; by default the address (and
#                         key) of this machine's own apt entry for Debian (scripts/debian-src-entry.sh)
#   AMBIT_KUBE_KEEP_WORK  set to 1 to keep the unpacked source and Go cache after a successful build
set -euo pipefail

KUBE_VERSION=1.20.2
CACHE=${AMBIT_KUBE_CACHE:-/var/cache/ambit/kubernetes-${KUBE_VERSION}}
SUITE=bookworm
BINARIES=(kube-apiserver kube-controller-manager kubectl)
# Bump when the recipe changes, so caches built by an older recipe are rebuilt.
RECIPE=1
STAMP_CONTENT="kubernetes ${KUBE_VERSION} recipe ${RECIPE}"
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PACKAGES_FILE="$SCRIPT_DIR/kube-packages.txt"

START=$(date +%s)
say() { echo "kube-build [$(($(date +%s) - START))s]: $*"; }
die() {
  echo "kube-build: ERROR: $*" >&2
  exit 1
}

force=0
case "${1:-}" in
  "") ;;
  --force) force=1 ;;
  -h | --help)
    sed -n '2,17p' "$0"
    exit 0
    ;;
  *) die "unknown argument '$1' (usage: $0 [--force])" ;;
esac

cache_complete() {
  [ -f "$CACHE/stamp" ] && [ "$(cat "$CACHE/stamp")" = "$STAMP_CONTENT" ] || return 1
  for binary in "${BINARIES[@]}"; do
    [ -x "$CACHE/bin/$binary" ] || return 1
  done
}

# 1. Packages: also checked on a cached run, because the tests need etcd-server and openssl
#    at run time, not only the build.
[ -r "$PACKAGES_FILE" ] || die "package list $PACKAGES_FILE is missing"
mapfile -t packages < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$PACKAGES_FILE")
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || die "packages ${missing[*]} are missing; run this script as root so it can install them"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
fi

if [ "$force" -eq 0 ] && cache_complete; then
  say "already built: $CACHE/bin (${BINARIES[*]}); nothing to do"
  exit 0
fi

mkdir -p "$CACHE" || die "cannot create the cache directory $CACHE (set AMBIT_KUBE_CACHE to a writable path)"
# Two concurrent runs (say setup.sh and a developer) must not build into the same work tree.
exec 9>"$CACHE/lock"
if ! flock -n 9; then
  say "another kube-build.sh holds $CACHE/lock; waiting for it"
  flock 9
  if [ "$force" -eq 0 ] && cache_complete; then
    say "the other run finished the build: $CACHE/bin"
    exit 0
  fi
fi

WORK="$CACHE/work"
LOG="$CACHE/build.log"
rm -rf "$WORK" "$CACHE/stamp"
mkdir -p "$WORK"
: >"$LOG"
trap 'status=$?; [ $status -eq 0 ] || echo "kube-build: FAILED (exit $status); the work tree is kept in $WORK, the build log is $LOG" >&2' EXIT

# 2. Source: a private apt configuration with only a deb-src entry, so /etc/apt stays untouched
#    and the machine's own package lists are not replaced. The entry is the machine's own entry
#    for the Debian archive (its address and key) with the type changed to deb-src: wherever apt
#    works, this works, and no archive host is written here.
APT_DIR="$WORK/apt"
mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$WORK/download"
SOURCE_ENTRY=$("$SCRIPT_DIR/debian-src-entry.sh" "$SUITE" "$APT_DIR") ||
  die "no apt source for Debian $SUITE's source packages (the message above says why)"
say "[1/5] fetching the kubernetes source package (apt entry $SOURCE_ENTRY, derived from this machine's apt sources)"
{
  echo "apt source entry $SOURCE_ENTRY:"
  cat "$SOURCE_ENTRY"
} >>"$LOG"
APT_OPTS=(
  -o "Dir::Etc::sourcelist=$SOURCE_ENTRY"
  -o "Dir::Etc::sourceparts=-"
  -o "Dir::State::Lists=$APT_DIR/lists"
  -o "Dir::Cache=$APT_DIR/cache"
  # The work tree is root's and private; the _apt sandbox user could not write into it.
  -o "APT::Sandbox::User=root"
)
apt-get "${APT_OPTS[@]}" update -qq >>"$LOG" 2>&1 || die "apt-get update against $SOURCE_ENTRY failed (see $LOG); it is derived from this machine's apt sources, so check that apt-get update works, or set AMBIT_DEBIAN_MIRROR"
(cd "$WORK/download" && apt-get "${APT_OPTS[@]}" source kubernetes) >>"$LOG" 2>&1 ||
  die "apt-get source kubernetes failed (see $LOG)"
# Debian's version is "1.20.5+really1.20.2" (a 1.20.5 upload reverted to 1.20.2).
unpacked=()
for dir in "$WORK"/download/kubernetes-*; do
  case "$dir" in *really"$KUBE_VERSION" | */kubernetes-"$KUBE_VERSION") [ -d "$dir" ] && unpacked+=("$dir") ;; esac
done
[ ${#unpacked[@]} -eq 1 ] ||
  die "expected one unpacked kubernetes ${KUBE_VERSION} tree in $WORK/download, found: $(ls "$WORK/download")"
# GOPATH mode needs the tree at $GOPATH/src/k8s.io/kubernetes (the vendored imports say so).
export GOPATH="$WORK/gopath"
TREE="$GOPATH/src/k8s.io/kubernetes"
mkdir -p "$GOPATH/src/k8s.io"
mv "${unpacked[0]}" "$TREE"
say "source: $(basename "$(ls "$WORK"/download/*.dsc)") unpacked at $TREE"

# Keep Go's caches inside the work tree: removed with it, and never mixed with a user's.
export GOCACHE="$WORK/gocache"
export GOFLAGS=
export CGO_ENABLED=0
cd "$TREE"

# 3. The OpenAPI definitions are generated, not shipped; the API server does not compile without them.
say "[2/5] make gen_openapi"
nice -n 10 make gen_openapi >>"$LOG" 2>&1 || die "make gen_openapi failed (see $LOG)"
[ -s pkg/generated/openapi/zz_generated.openapi.go ] || die "make gen_openapi did not write pkg/generated/openapi/zz_generated.openapi.go"

# 4. Source fixes for a Go newer than the one 1.20 was released with.
say "[3/5] patching: reflect2 1.0.2, null handling in OpenAPI type validation (kubernetes#99804)"
# reflect2 1.0.1 reads runtime internals that changed in Go 1.18: the API server segfaults at start.
REFLECT2=/usr/share/gocode/src/github.com/modern-go/reflect2
[ -f "$REFLECT2/go_above_118.go" ] || die "$REFLECT2 is not reflect2 >= 1.0.2 (install golang-github-modern-go-reflect2-dev)"
rm -rf vendor/github.com/modern-go/reflect2
cp -r "$REFLECT2" vendor/github.com/modern-go/reflect2
# The type validator's zero-value check compares two reflect.Values: always false before Go 1.16,
# but since reflect.Zero shares one pointer it matches "", 0 and false, so a custom resource with
# such a field is rejected as "got null". Upstream's fix (kube-openapi#230): only nil is null.
for type_go in vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go vendor/github.com/go-openapi/validate/type.go; do
  grep -q 'if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data)) {' "$type_go" ||
    die "$type_go does not contain the expected zero-value check; the source changed, review the patch"
  sed -i 's/if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data)) {/if data == nil {/' "$type_go"
done

# 5. Compile. GOPATH mode: the 1.20 tree's staging repos are wired in through vendor/ symlinks.
say "[4/5] go build ${BINARIES[*]} ($(go version | cut -d' ' -f3), nice 10; 10-20 minutes on 2 cores; log: $LOG)"
PKG=k8s.io/kubernetes
ldflags="-s -w"
for key_value in "gitVersion=v${KUBE_VERSION}" gitMajor=1 gitMinor=20 gitTreeState=clean \
  "buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
  # The same variables hack/lib/version.sh sets, so `kubectl version` and /version say 1.20.2.
  ldflags+=" -X $PKG/vendor/k8s.io/client-go/pkg/version.$key_value"
  ldflags+=" -X $PKG/vendor/k8s.io/component-base/version.$key_value"
done
mkdir -p "$WORK/out"
targets=()
for binary in "${BINARIES[@]}"; do targets+=("$PKG/cmd/$binary"); done
GO111MODULE=off nice -n 10 go build -v -ldflags "$ldflags" -o "$WORK/out/" "${targets[@]}" >>"$LOG" 2>&1 &
build_pid=$!
# A heartbeat, so a CI log shows progress instead of 15 silent minutes.
while kill -0 "$build_pid" 2>/dev/null; do
  sleep 60
  kill -0 "$build_pid" 2>/dev/null && say "    still compiling ($(grep -c '' "$LOG") log lines so far)"
done
wait "$build_pid" || die "go build failed; last lines of $LOG:
$(tail -n 30 "$LOG")"

say "[5/5] installing into $CACHE/bin"
mkdir -p "$CACHE/bin"
for binary in "${BINARIES[@]}"; do
  [ -x "$WORK/out/$binary" ] || die "go build did not produce $binary"
  # Copy then rename: a test reading the cache never sees a half-written binary.
  install -m 0755 "$WORK/out/$binary" "$CACHE/bin/.$binary.new"
  mv -f "$CACHE/bin/.$binary.new" "$CACHE/bin/$binary"
done
"$CACHE/bin/kube-apiserver" --version >>"$LOG" 2>&1 || die "the built kube-apiserver does not run (see $LOG)"
echo "$STAMP_CONTENT" >"$CACHE/stamp"
cd /
if [ "${AMBIT_KUBE_KEEP_WORK:-0}" = 1 ]; then
  say "keeping the work tree $WORK (AMBIT_KUBE_KEEP_WORK=1)"
else
  rm -rf "$WORK"
fi
say "done: $("$CACHE/bin/kube-apiserver" --version) in $CACHE/bin (${BINARIES[*]})"
