#!/usr/bin/env bash
# A Python virtual environment with the splitter SDK (sdk/python, seed 002's aios_model_splitter) and its test
# dependencies, for test/python-sdk.test.ts. Kept outside the repository, between runs:
#   ${BLOCKMESH_CACHE:-$HOME/.cache/blockmesh}/py-sdk
# Idempotent: the SDK is installed again only when its files changed (a hash of them is kept in the venv).
# Prints the venv's python. Without python3 (or its venv module) it says so and exits 0: the test says so and skips.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${BLOCKMESH_CACHE:-$HOME/.cache/blockmesh}/py-sdk"
STAMP="$VENV/.sdk-hash"
if ! command -v python3 >/dev/null 2>&1; then echo "python-sdk: no python3; the Python SDK tests will skip" >&2; exit 0; fi
# the package's own files (not its tests, not build leftovers), by content
HASH="$(find sdk/python -type f \( -path 'sdk/python/aios_model_splitter/*' -o -name pyproject.toml -o -name README.md \) \
  -not -path '*/__pycache__/*' -not -path '*.egg-info/*' -not -path 'sdk/python/build/*' -print0 \
  | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$HASH" ] \
  && "$VENV/bin/python" -c "import aios_model_splitter, pytest, boto3" 2>/dev/null; then
  echo "$VENV/bin/python"; exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" || { echo "python-sdk: python3 -m venv failed; the Python SDK tests will skip" >&2; exit 0; }
fi
rm -f "$STAMP"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./sdk/python >&2
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "./sdk/python[test]" >&2
rm -rf sdk/python/build sdk/python/*.egg-info
echo "$HASH" > "$STAMP"
echo "$VENV/bin/python"
