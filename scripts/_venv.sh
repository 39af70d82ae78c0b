# Sourced by the other scripts: create or reuse ./.venv and install the project into it.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { echo "passkit-stamps needs Python >= 3.11 (set PYTHON=...)" >&2; exit 1; }
    "$PYTHON" -m venv "$VENV"
fi
# Reinstall only when the dependencies changed.
STAMP="$VENV/.installed-$(cat "$ROOT/pyproject.toml" | "$VENV/bin/python" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])')"
if [ ! -f "$STAMP" ]; then
    echo "Installing passkit-stamps and its dependencies into $VENV (log: $VENV/install.log)" >&2
    if ! { "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade pip \
           && "$VENV/bin/python" -m pip install --disable-pip-version-check -e "$ROOT[dev]"; \
         } >"$VENV/install.log" 2>&1; then
        tail -n 30 "$VENV/install.log" >&2
        echo "install failed: see $VENV/install.log" >&2
        exit 1
    fi
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
