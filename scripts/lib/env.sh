# Sourced by the scripts: where the cached tools live. Override the cache
# folder with WARREN_CACHE.
WARREN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WARREN_CACHE=${WARREN_CACHE:-$HOME/.cache/warren}
WARREN_SALT_VENV=$WARREN_CACHE/salt-venv
WARREN_NPM=$WARREN_CACHE/npm
# Real clients and servers the tests drive: websockets and grpcio.
WARREN_PY_VENV=$WARREN_CACHE/py-clients
WARREN_CARGO_FUZZ=$WARREN_CACHE/cargo-fuzz/bin/cargo-fuzz
export WARREN_ROOT WARREN_CACHE WARREN_SALT_VENV WARREN_NPM WARREN_PY_VENV WARREN_CARGO_FUZZ

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
