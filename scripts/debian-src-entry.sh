#!/usr/bin/env bash
# Writes an apt source entry for Debian SUITE's *source* packages (deb-src, component main),
# derived from this machine's own apt sources, and prints the path of the file it wrote.
#
#   scripts/debian-src-entry.sh SUITE DIR    writes DIR/debian-src.sources or DIR/debian-src.list
#
# Why derive it: the machine's apt sources already point at an archive this machine can reach
# (a local mirror, a proxy, a snapshot), with the key it is signed with. A fixed mirror address
# works only where that one host is reachable. The entry reuses the archive's address and every
# option of the machine's own entry (Signed-By, inline keys, Trusted, Check-Valid-Until, …) and
# changes only the type, the suite and the component.
#
# Which of the machine's entries: asked from apt itself (`apt-get indextargets`), so exactly the
# entries apt reads (enabled, either format, sources.list and sources.list.d) count:
#   1. an entry for SUITE itself (by the suite it names, or by the codename in its Release file);
#   2. else the Debian archive of another release (Label "Debian", not Debian-Security): the same
#      archive also serves SUITE.
#
# Environment:
#   AMBIT_DEBIAN_MIRROR  skip the derivation and use this archive URI (signed by Debian's keyring)
#   APT_CONFIG           apt's own: another apt configuration to read (the tests use it)
set -euo pipefail

die() {
  echo "debian-src-entry: ERROR: $*" >&2
  exit 1
}

[ $# -eq 2 ] || die "usage: $0 SUITE DIR (writes DIR/debian-src.sources or DIR/debian-src.list)"
SUITE=$1
DIR=$2
[ -d "$DIR" ] || die "directory $DIR does not exist"
DEBIAN_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

if [ -n "${AMBIT_DEBIAN_MIRROR:-}" ]; then
  echo "deb-src [signed-by=$DEBIAN_KEYRING] $AMBIT_DEBIAN_MIRROR $SUITE main" >"$DIR/debian-src.list"
  echo "$DIR/debian-src.list"
  exit 0
fi

# One row per binary-package index of the machine's entries, component main. Rows with release
# information (codename, label: only for entries whose lists apt has fetched) come first; the rows
# without it list every configured entry, fetched or not. apt prints a field it does not know as
# the literal "$(NAME)", which the selection treats as empty.
# shellcheck disable=SC2016 # apt's own $(FIELD) placeholders, not shell expansions
FORMAT='$(TARGET_OF)	$(COMPONENT)	$(RELEASE)	$(CODENAME)	$(LABEL)	$(SOURCESENTRY)	$(REPO_URI)'
rows=$(
  apt-get indextargets --format "$FORMAT" 'Created-By: Packages' 2>/dev/null || true
  apt-get indextargets --no-release-info --format "$FORMAT" 'Created-By: Packages' 2>/dev/null || true
)
chosen=$(
  awk -F '\t' -v suite="$SUITE" '
    function known(value) { return value ~ /^\$\(/ ? "" : value }
    $1 != "deb" || $2 != "main" { next }
    !same_suite && ($3 == suite || known($4) == suite) { same_suite = $6 "\t" $7 }
    !debian_archive && known($5) == "Debian" { debian_archive = $6 "\t" $7 }
    END { if (same_suite) print same_suite; else if (debian_archive) print debian_archive }
  ' <<<"$rows"
)
if [ -z "$chosen" ]; then
  die "none of this machine's apt sources is a Debian archive serving $SUITE main (apt-get indextargets lists them).
  Add one (an entry naming suite $SUITE, or any Debian release of the same archive, then apt-get update),
  or set AMBIT_DEBIAN_MIRROR to a reachable Debian archive URI."
fi
entry=${chosen%%$'\t'*}
uri=${chosen#*$'\t'}
file=${entry%:*}
number=${entry##*:}
[ -r "$file" ] || die "apt names $file as the source of $uri, but it cannot be read"

case "$file" in
  *.sources)
    # deb822: entry N is the Nth stanza. Comment lines are not part of any stanza; a blank line
    # ends one. Keep every field of that stanza but the four we set, each with its continuation
    # lines (an inline Signed-By key spans many).
    out="$DIR/debian-src.sources"
    {
      printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: main\n' "$uri" "$SUITE"
      awk -v wanted="$number" '
        /^[ \t]*#/ { next }
        /^[ \t]*$/ { if (in_stanza) { in_stanza = 0 }; next }
        !in_stanza { in_stanza = 1; stanza++ }
        stanza != wanted { next }
        /^[ \t]/ { if (!dropping) print; next }
        {
          name = tolower($0); sub(/:.*/, "", name)
          dropping = (name == "types" || name == "uris" || name == "suites" || name == "components")
          if (!dropping) print
        }
      ' "$file"
    } >"$out"
    ;;
  *)
    # One-line format: entry N is line N, "deb [options] uri suite component…".
    out="$DIR/debian-src.list"
    line=$(sed -n "${number}p" "$file")
    options=""
    if [[ $line =~ ^[[:space:]]*deb[[:space:]]+(\[[^]]*\]) ]]; then
      options="${BASH_REMATCH[1]} "
    fi
    echo "deb-src ${options}$uri $SUITE main" >"$out"
    ;;
esac
echo "$out"
