#!/usr/bin/env python3
"""Generate test/fixtures/gguf-quants.json: golden dequantization outputs from the
Python `gguf` package (an independent numpy implementation of ggml's quant formats),
used by test/unit/gguf-quants.test.ts to cross-check agent/model/gguf/quants.ts.

Usage (from the repo root):
    python3 -m venv /tmp/ggufvenv && /tmp/ggufvenv/bin/pip install gguf numpy
    /tmp/ggufvenv/bin/python scripts/golden/gguf-quants.py [out.json]

Types that gguf can quantize (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) are
quantized from fixed pseudo-random data (plus a few edge-case blocks). K-quants
(Q2_K..Q6_K), which gguf can only dequantize, are built as random raw super-blocks
from a fixed seed, with their f16 scale fields overwritten by small finite values in
[0.001, 0.1] so every output is finite. For each type the fixture records the raw
bytes (base64), the element count and gguf.quants.dequantize's float32 output
(base64, little-endian).
"""
import base64
import json
import sys
from importlib.metadata import version

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

SEED = 20240611
OUT = sys.argv[1] if len(sys.argv) > 1 else "test/fixtures/gguf-quants.json"

rng = np.random.default_rng(SEED)


def b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def record(qtype: T, raw: np.ndarray, note: str) -> dict:
    raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    block_size, type_size = quants.GGML_QUANT_SIZES[qtype]
    assert raw.size % type_size == 0
    elements = raw.size // type_size * block_size
    out = quants.dequantize(raw.reshape(1, -1), qtype).astype(np.float32, copy=False).reshape(-1)
    assert out.size == elements
    assert out.dtype == np.float32
    return {
        "type": int(qtype),
        "name": qtype.name,
        "elements": int(elements),
        "note": note,
        "raw": b64(raw),
        "expected": b64(out.astype("<f4")),
    }


def source_values(n_blocks: int, block: int) -> np.ndarray:
    """Pseudo-random weights with varying per-block magnitude, plus edge blocks."""
    x = rng.standard_normal((n_blocks, block)).astype(np.float32)
    x *= (10.0 ** rng.uniform(-3, 1, size=(n_blocks, 1))).astype(np.float32)
    x[0, :] = 0.0                       # all-zero block (d == 0)
    x[1, :] = np.float32(0.75)          # constant block (Q4_1/Q5_1: d == 0, m != 0)
    x[2, :] = np.float32(-0.3)          # constant negative block
    x[3, : block // 2] = np.abs(x[3, : block // 2])  # positive-only half (min > 0 case)
    x[4, :] = rng.uniform(1000, 60000, size=block).astype(np.float32)  # large magnitudes
    return x.reshape(-1)


cases = []

# Types gguf can quantize: quantize fixed data, then record gguf's dequantization.
for qtype in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0):
    x = source_values(12, 32)
    raw = quants.quantize(x.reshape(1, -1), qtype).view(np.uint8)
    cases.append(record(qtype, raw, "gguf.quants.quantize of seeded normal data (+ zero/constant/large blocks)"))

# F16: random values plus special bit patterns (subnormals, max, inf, signed zero).
f16_specials = np.array([0x0000, 0x8000, 0x0001, 0x8001, 0x0200, 0x03FF, 0x0400, 0x83FF, 0x3C00,
                         0xBC00, 0x3555, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x0101], dtype=np.uint16)
f16_vals = quants.quantize((rng.standard_normal(240) * 100).astype(np.float32), T.F16).view(np.uint16)
cases.append(record(T.F16, np.concatenate([f16_specials, f16_vals]).view(np.uint8),
                    "special f16 bit patterns + numpy astype(float16) of seeded data"))

# BF16: gguf's round-to-nearest-even quantization, plus special patterns.
bf16_specials = np.array([0x0000, 0x8000, 0x0001, 0x807F, 0x3F80, 0xC040, 0x4049, 0x7F7F,
                          0x7F80, 0xFF80, 0x0080, 0x3EAA], dtype=np.uint16)
bf16_vals = quants.quantize((rng.standard_normal(244) * 1000).astype(np.float32), T.BF16).view(np.uint16)
cases.append(record(T.BF16, np.concatenate([bf16_specials, bf16_vals]).view(np.uint8),
                    "special bf16 bit patterns + gguf BF16 quantize of seeded data"))

# F32: passthrough.
cases.append(record(T.F32, rng.standard_normal(64).astype("<f4").view(np.uint8), "seeded normal data"))

# K-quants: random but valid raw super-blocks; f16 scale fields set to finite values in [0.001, 0.1].
# Byte offsets of the f16 fields inside each block (see ggml-common.h block_q*_K).
K_HALF_FIELDS = {
    T.Q2_K: (80, 82),   # scales[16], qs[64], d, dmin
    T.Q3_K: (108,),     # hmask[32], qs[64], scales[12], d
    T.Q4_K: (0, 2),     # d, dmin, scales[12], qs[128]
    T.Q5_K: (0, 2),     # d, dmin, scales[12], qh[32], qs[128]
    T.Q6_K: (208,),     # ql[128], qh[64], scales[16] (int8), d
}
N_SUPER = 4
for qtype, fields in K_HALF_FIELDS.items():
    _, type_size = quants.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(N_SUPER, type_size), dtype=np.uint8)
    for off in fields:
        h = rng.uniform(0.001, 0.1, size=N_SUPER).astype(np.float16).view(np.uint8).reshape(N_SUPER, 2)
        raw[:, off:off + 2] = h
    cases.append(record(qtype, raw, f"{N_SUPER} random raw super-blocks, f16 scales in [0.001, 0.1]"))

doc = {
    "generator": "scripts/golden/gguf-quants.py",
    "source": "Python gguf package (gguf.quants.quantize / gguf.quants.dequantize)",
    "gguf_version": version("gguf"),
    "numpy_version": np.__version__,
    "seed": SEED,
    "cases": cases,
}
with open(OUT, "w") as f:
    json.dump(doc, f, indent=1)
    f.write("\n")
print(f"wrote {OUT}: {len(cases)} cases, gguf {doc['gguf_version']}, numpy {doc['numpy_version']}")
