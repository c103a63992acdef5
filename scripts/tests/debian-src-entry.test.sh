#!/usr/bin/env bash
# Scenarios for scripts/debian-src-entry.sh: given a machine's apt sources, which deb-src entry
# kube-build.sh fetches the kubernetes source package with. Each scenario is a private apt
# configuration (APT_CONFIG) with its own sources and lists; nothing is downloaded, apt only
# reads the files. Hosts are under .test, which never resolves.
#
#   scripts/tests/debian-src-entry.test.sh     prints one line per scenario, then "N passed, N failed"
set -uo pipefail

HELPER="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/debian-src-entry.sh"
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
passed=0
failed=0

# A machine: $MACHINE/sources.list, $MACHINE/sources.list.d/, $MACHINE/lists/ and an apt.conf
# that points apt at them.
new_machine() {
  MACHINE="$SCRATCH/$1"
  mkdir -p "$MACHINE/sources.list.d" "$MACHINE/lists/partial" "$MACHINE/out"
  : >"$MACHINE/sources.list"
  cat >"$MACHINE/apt.conf" <<EOF
Dir::Etc::sourcelist "$MACHINE/sources.list";
Dir::Etc::sourceparts "$MACHINE/sources.list.d";
Dir::State::Lists "$MACHINE/lists";
EOF
}

# What `apt-get update` would have left for SITE/dists/SUITE: a Release file with this codename
# and label, and an (empty) main Packages index, which is what makes apt report the release info.
fetched_release() {
  local site=$1 suite=$2 codename=$3 label=$4 stem
  stem="$MACHINE/lists/$(echo "$site" | sed -e 's|^[a-z]*://||' -e 's|/$||' -e 's|/|_|g')_dists_${suite}"
  printf 'Origin: Debian\nLabel: %s\nSuite: %s\nCodename: %s\nComponents: main\nArchitectures: amd64\n' \
    "$label" "$suite" "$codename" >"${stem}_InRelease"
  : >"${stem}_main_binary-amd64_Packages"
}

run_helper() {
  OUTPUT=$(APT_CONFIG="$MACHINE/apt.conf" "$HELPER" "$@" "$MACHINE/out" 2>&1)
  STATUS=$?
}

check() {
  local scenario=$1 expected_file=$2 expected=$3 actual
  if [ "$STATUS" -ne 0 ]; then
    echo "FAIL $scenario: the helper failed: $OUTPUT"
    failed=$((failed + 1))
    return
  fi
  if [ "$OUTPUT" != "$MACHINE/out/$expected_file" ]; then
    echo "FAIL $scenario: wrote '$OUTPUT', expected $MACHINE/out/$expected_file"
    failed=$((failed + 1))
    return
  fi
  actual=$(cat "$OUTPUT")
  if [ "$actual" != "$expected" ]; then
    echo "FAIL $scenario: the entry differs"
    diff <(echo "$expected") <(echo "$actual") | sed 's/^/    /'
    failed=$((failed + 1))
    return
  fi
  echo "ok   $scenario"
  passed=$((passed + 1))
}

check_refused() {
  local scenario=$1 expected_words=$2
  if [ "$STATUS" -eq 0 ]; then
    echo "FAIL $scenario: expected a refusal, the helper wrote $OUTPUT"
    failed=$((failed + 1))
  elif [[ $OUTPUT != *"$expected_words"* ]]; then
    echo "FAIL $scenario: the refusal does not say '$expected_words': $OUTPUT"
    failed=$((failed + 1))
  else
    echo "ok   $scenario"
    passed=$((passed + 1))
  fi
}

# --- A Debian 12 image: deb822, the archive and its security archive (as on this project's machines).
new_machine deb822-bookworm
cat >"$MACHINE/sources.list.d/debian.sources" <<'EOF'
Types: deb
# the snapshot this image was built from
URIs: http://archive.test/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://archive.test/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
run_helper bookworm
check "deb822 machine: the archive's own address and key, not the security archive" debian-src.sources \
  "Types: deb-src
URIs: http://archive.test/debian/
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"

# --- A one-line sources.list with options and a trailing comment, a local mirror.
new_machine one-line-mirror
cat >"$MACHINE/sources.list" <<'EOF'
# local mirror
deb [ arch=amd64 signed-by=/etc/apt/keyrings/mirror.gpg ] http://mirror.corp.test/debian bookworm main contrib non-free-firmware # nightly
deb http://mirror.corp.test/debian-security bookworm-security main
EOF
run_helper bookworm
check "one-line machine: the options are kept, only main is asked for" debian-src.list \
  "deb-src [ arch=amd64 signed-by=/etc/apt/keyrings/mirror.gpg ] http://mirror.corp.test/debian/ bookworm main"

# --- The wanted entry is the second stanza, after a disabled one and a comment-only block, and
#     carries an inline key (continuation lines) and options that must survive.
new_machine deb822-inline-key
cat >"$MACHINE/sources.list.d/site.sources" <<'EOF'
# Types: deb
# URIs: http://old.test/debian

Types: deb
URIs: http://disabled.test/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb
URIs: http://proxy.test/debian
Suites: bookworm
Components: main contrib
Check-Valid-Until: no
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mDMEZfakeKEYlinesFORtheTEST
 -----END PGP PUBLIC KEY BLOCK-----
Trusted: yes
EOF
run_helper bookworm
check "deb822 with an inline key: the enabled stanza, every option and the whole key kept" debian-src.sources \
  "Types: deb-src
URIs: http://proxy.test/debian/
Suites: bookworm
Components: main
Check-Valid-Until: no
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mDMEZfakeKEYlinesFORtheTEST
 -----END PGP PUBLIC KEY BLOCK-----
Trusted: yes"

# --- Sources that say "stable": the fetched Release file says that is bookworm.
new_machine suite-alias
echo "deb http://archive.test/debian stable main" >"$MACHINE/sources.list"
fetched_release http://archive.test/debian/ stable bookworm Debian
run_helper bookworm
check "suite written as 'stable': matched by the codename in its Release file" debian-src.list \
  "deb-src http://archive.test/debian/ bookworm main"

# --- A newer Debian: no bookworm entry, but the same archive serves bookworm too.
new_machine trixie
cat >"$MACHINE/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://archive.test/debian-security
Suites: trixie-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://archive.test/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
fetched_release http://archive.test/debian-security/ trixie-security trixie-security Debian-Security
fetched_release http://archive.test/debian/ trixie trixie Debian
run_helper bookworm
check "trixie machine: the Debian archive (not Debian-Security) with suite bookworm" debian-src.sources \
  "Types: deb-src
URIs: http://archive.test/debian/
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"

# --- No Debian archive at all: a clear refusal that names the way out.
new_machine third-party-only
echo "deb http://vendor.test/apt stable main" >"$MACHINE/sources.list"
fetched_release http://vendor.test/apt/ stable vendor-stable Vendor
run_helper bookworm
check_refused "no Debian archive among the sources: refused, naming AMBIT_DEBIAN_MIRROR" "AMBIT_DEBIAN_MIRROR"

# --- The explicit override wins and derives nothing.
new_machine override
echo "deb http://vendor.test/apt stable main" >"$MACHINE/sources.list"
OUTPUT=$(AMBIT_DEBIAN_MIRROR=http://chosen.test/debian APT_CONFIG="$MACHINE/apt.conf" "$HELPER" bookworm "$MACHINE/out" 2>&1)
STATUS=$?
check "AMBIT_DEBIAN_MIRROR set: that archive, with Debian's keyring" debian-src.list \
  "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://chosen.test/debian bookworm main"

echo "debian-src-entry: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
