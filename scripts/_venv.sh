# Sourced by scripts/dev and scripts/test: make .venv hold rmwatch and its test extras.
# Re-installs only when pyproject.toml changed (stamp = its sha256), so a second run starts in
# about a second instead of the ~60 s a fresh install takes.
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

stamp=$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.rmwatch-stamp" 2>/dev/null)" != "$stamp" ]; then
  py=$(find_python)
  echo "setting up $venv with $($py --version) ..." >&2
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q -e "$root[test]" >&2
  echo "$stamp" >"$venv/.rmwatch-stamp"
fi
