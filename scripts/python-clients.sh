#!/usr/bin/env bash
# A Python virtual environment with the official `openai` client, for the tests that talk to Blockmesh the
# way seed 004's test plan does (the Python OpenAI SDK). Kept outside the repository, between runs:
#   ${BLOCKMESH_CACHE:-$HOME/.cache/blockmesh}/py-clients
# Idempotent; prints the venv's python. Without python3 (or its venv module) it says so and exits 0: the
# tests that need it say so and skip.
set -euo pipefail
VENV="${BLOCKMESH_CACHE:-$HOME/.cache/blockmesh}/py-clients"
OPENAI_VERSION="2.8.1"
if ! command -v python3 >/dev/null 2>&1; then echo "python-clients: no python3; the Python client tests will skip" >&2; exit 0; fi
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import openai, sys; sys.exit(0 if openai.__version__ == '$OPENAI_VERSION' else 1)" 2>/dev/null; then
  echo "$VENV/bin/python"; exit 0
fi
python3 -m venv "$VENV" || { echo "python-clients: python3 -m venv failed; the Python client tests will skip" >&2; exit 0; }
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "openai==$OPENAI_VERSION"
echo "$VENV/bin/python"
