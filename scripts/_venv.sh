# Sourced by scripts/dev, scripts/test and scripts/bench: make .venv hold rmwatch (an editable
# install: the rmwatch import root maps to this checkout) and its test extras.
# Re-installs only when what the install depends on changed: the stamp is a hash of
# pyproject.toml's [build-system], [project] and [tool.setuptools], so a second run starts in
# about a second instead of the ~60 s a fresh install takes, and editing the ruff, mypy or
# pytest settings does not reinstall.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"

find_python() {
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  echo "rmwatch needs Python >= 3.11 (python3.11+ on PATH)" >&2
  return 1
}

# install_stamp PYTHON: a hash of the parts of pyproject.toml that decide what gets installed
# (tomllib: Python 3.11+, which find_python guarantees).
install_stamp() {
  "$1" -c '
import hashlib, json, sys, tomllib
with open(sys.argv[1], "rb") as f:
    data = tomllib.load(f)
parts = [data.get("build-system"), data.get("project"), data.get("tool", {}).get("setuptools")]
print(hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest())
' "$root/pyproject.toml"
}

py=$(find_python)
stamp=$(install_stamp "$py")
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.rmwatch-stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "setting up $venv with $($py --version) ..." >&2
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q -e "$root[test]" >&2
  echo "$stamp" >"$venv/.rmwatch-stamp"
fi
