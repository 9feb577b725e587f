#!/usr/bin/env python3
"""Golden reference outputs from an independent implementation: llama.cpp (via llama-cpp-python).

Usage (in a venv with `pip install llama-cpp-python numpy`):
    python scripts/golden/llamacpp.py MODEL.gguf OUT.json [--threads 2] [--full-logits N]

What is recorded (all from llama.cpp itself; nothing here comes from Blockmesh):
  header     implementation + version, llama.cpp system info, model file SHA-256/size, date,
             n_threads/n_ctx/n_batch, the command line, and the tokenizer facts the run relied on.
  prompts    5 fixed single-turn user prompts rendered with the GGUF's own `tokenizer.chat_template`
             (jinja2, add_generation_prompt=True, exactly as llama-cpp-python's Jinja2ChatFormatter does).
             A GGUF without a template gets Blockmesh's documented fallback format
             ("user: <content>\\n" ... "assistant:", see agent/model/tokenizers/bundle.ts fallbackChat).
             For each: the rendered text; llama.cpp's token ids of it (special=True; BOS prepended iff
             the GGUF says add_bos_token and the text does not already start with the BOS token, i.e.
             exactly one BOS -- what llama.cpp's server does); up to 16 greedy tokens computed here by
             evaluating the context and taking argmax of the raw logits (no sampler: no temperature,
             penalties, top-k...; generation stops after an end-of-generation token); the raw next-token
             logits at the last prompt position (full vocabulary, float32 little-endian, base64) plus
             top-5 for readability. Vocabularies too large for the size budget (Gemma: 262144 entries =
             1.4 MB base64 per vector) store the full vector for the first `--full-logits` prompts only and
             top-256 + logsumexp + summary statistics for the rest.
  tokenizer  llama.cpp token ids (add_bos=False, special=False; and special=True for strings holding
             special-token text) and llama.cpp's own detokenization (llama_detokenize) for a fixed list
             of multilingual / emoji / code / whitespace strings.
"""
from __future__ import annotations

import argparse
import base64
import ctypes
import datetime as _dt
import hashlib
import json
import os
import platform
import shlex
import sys

import numpy as np

import llama_cpp
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

SEED = 1234
N_CTX = 2048
MAX_NEW_TOKENS = 16
TOP_READABLE = 5
TOP_COMPACT = 256
# Above this many vocabulary entries, only --full-logits prompts keep the full logits vector.
FULL_LOGITS_VOCAB_LIMIT = 65536

USER_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three primary colors.",
    "Translate 'good morning' to Spanish.",
    "What is 12 times 7?",
]

# (name, text, also tokenize with special=True)
TOKENIZER_STRINGS = [
    ("english", "The quick brown fox jumps over the lazy dog.", False),
    ("german_umlauts", "Grüße aus München! Die Bäume blühen schön, Straße, Äpfel, Öl, Übermut.", False),
    ("french_accents", "Où est la bibliothèque ? Déjà vu, garçon, crème brûlée, naïve, Noël.", False),
    ("chinese", "你好，世界！今天天气很好，我们去公园散步吧。", False),
    ("japanese", "こんにちは世界。東京は日本の首都です。カタカナとひらがな。", False),
    ("russian", "Привет, мир! Москва — столица России.", False),
    ("arabic", "مرحبا بالعالم! القاهرة هي عاصمة مصر.", False),
    ("emoji_zwj_skin", "Family 👩‍👩‍👧 and thumbs 👍🏽 plus 🏳️‍🌈 and 🇫🇷 🚀😀", False),
    ("code_tabs_newlines", "def add(a, b):\n\treturn a + b\n\nif __name__ == \"__main__\":\n\tprint(add(1, 2))\r\n", False),
    ("multiple_spaces", "a  b   c    d\u00a0e \n  \n    indented   text  ", False),
    ("digits", "1234567 and 3.14159, 1,000,000 and 0007", False),
    ("chatml_special_text", "Hello<|im_end|>\n<|im_start|>assistant\nHi", True),
    ("gemma_special_text", "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n", True),
    ("leading_space", " leading space and trailing space ", False),
]


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def b64_f32(vec: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode("ascii")


def detokenize(vocab, ids: list[int], remove_special: bool, unparse_special: bool) -> bytes:
    """llama.cpp's own llama_detokenize (not llama-cpp-python's piece concatenation)."""
    arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
    size = 64 + 16 * len(ids)
    while True:
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, size, remove_special, unparse_special)
        if n >= 0:
            return buf.raw[:n]
        size = -n + 1


def token_text(vocab, tid: int) -> str:
    """The vocabulary entry as stored in the GGUF (e.g. 'Ġthe' for GPT-2 BPE, '▁the' for SentencePiece)."""
    return llama_cpp.llama_vocab_get_text(vocab, tid).decode("utf-8", errors="backslashreplace")


def top_k(logits: np.ndarray, k: int) -> list[tuple[int, float]]:
    idx = np.argpartition(-logits, k)[:k]
    idx = idx[np.lexsort((idx, -logits[idx]))]  # by logit desc, ties by id asc
    return [(int(i), float(logits[i])) for i in idx]


def logsumexp(x: np.ndarray) -> float:
    x64 = x.astype(np.float64)
    m = x64.max()
    return float(m + np.log(np.exp(x64 - m).sum()))


def argmax_lowest_id(logits: np.ndarray) -> int:
    return int(np.argmax(logits))  # numpy returns the first (lowest id) maximum


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--full-logits", type=int, default=1,
                    help="for vocabularies over %d entries: how many prompts keep full logits" % FULL_LOGITS_VOCAB_LIMIT)
    args = ap.parse_args()

    llm = Llama(
        model_path=args.model,
        n_ctx=N_CTX,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        logits_all=True,
        seed=SEED,
        verbose=False,
    )
    vocab = llm._model.vocab
    n_vocab = llm.n_vocab()
    meta = llm.metadata
    bos_id = llm.token_bos()
    eos_id = llm.token_eos()
    add_bos_meta = bool(llm._model.add_bos_token())
    bos_text = token_text(vocab, bos_id) if bos_id >= 0 else ""
    eos_text = token_text(vocab, eos_id) if eos_id >= 0 else ""
    eog_ids = [i for i in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i)]
    template = meta.get("tokenizer.chat_template")

    if template is not None:
        formatter = Jinja2ChatFormatter(template=template, eos_token=eos_text, bos_token=bos_text,
                                        add_generation_prompt=True)

        def render(content: str) -> str:
            return formatter(messages=[{"role": "user", "content": content}]).prompt
        prompt_format = "gguf tokenizer.chat_template (jinja2, add_generation_prompt=True, bos_token/eos_token from vocab)"
    else:
        def render(content: str) -> str:
            return f"user: {content}\n" + "assistant:"
        prompt_format = ("GGUF has no tokenizer.chat_template: Blockmesh fallback format "
                         "'<role>: <content>\\n' per message then 'assistant:' (fallbackChat)")

    full_logits_all = n_vocab <= FULL_LOGITS_VOCAB_LIMIT

    def eval_context(tokens: list[int]) -> np.ndarray:
        """Fresh context state, evaluate tokens, return the logits of the last position."""
        llm.reset()
        llm.eval(tokens)
        return np.array(llm.scores[len(tokens) - 1], dtype=np.float32, copy=True)

    prompts_out = []
    for pi, content in enumerate(USER_PROMPTS):
        text = render(content)
        starts_with_bos = bool(bos_text) and text.startswith(bos_text)
        add_bos = add_bos_meta and not starts_with_bos
        ids = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
        if len(ids) > 1 and bos_id >= 0 and ids[0] == bos_id and ids[1] == bos_id:
            raise SystemExit("double BOS in prompt tokens")

        logits = eval_context(ids)
        # determinism check: a second evaluation from scratch must give identical bits
        again = eval_context(ids)
        deterministic = bool(np.array_equal(logits.view(np.uint32), again.view(np.uint32)))

        # greedy: our own argmax over raw logits, one token at a time (KV cache kept between steps)
        gen: list[int] = []
        step_logit: list[float] = []
        step_margin: list[float] = []
        cur = logits
        stopped_on_eog = False
        for _ in range(MAX_NEW_TOKENS):
            t = argmax_lowest_id(cur)
            two = top_k(cur, 2)
            gen.append(t)
            step_logit.append(float(cur[t]))
            step_margin.append(two[0][1] - two[1][1])
            if llama_cpp.llama_vocab_is_eog(vocab, t):
                stopped_on_eog = True
                break
            llm.eval([t])
            cur = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32, copy=True)

        entry = {
            "user": content,
            "rendered": text,
            "rendered_starts_with_bos_text": starts_with_bos,
            "tokenize_add_bos": add_bos,
            "token_ids": ids,
            "n_tokens": len(ids),
            "deterministic_rerun": deterministic,
            "greedy": {
                "token_ids": gen,
                "text": detokenize(vocab, gen, remove_special=False, unparse_special=False).decode("utf-8", errors="replace"),
                "text_with_special": detokenize(vocab, gen, remove_special=False, unparse_special=True).decode("utf-8", errors="replace"),
                "token_texts": [token_text(vocab, t) for t in gen],
                "chosen_logits": step_logit,
                "top1_top2_margins": step_margin,
                "stopped_on_eog": stopped_on_eog,
            },
            "last_position_logits": {
                "position": len(ids) - 1,
                "n_vocab": n_vocab,
                "top5": [{"id": i, "logit": v, "text": token_text(vocab, i)} for i, v in top_k(logits, TOP_READABLE)],
                "logsumexp": logsumexp(logits),
                "stats": {"min": float(logits.min()), "max": float(logits.max()),
                          "mean": float(logits.astype(np.float64).mean()), "std": float(logits.astype(np.float64).std())},
            },
        }
        if full_logits_all or pi < args.full_logits:
            entry["last_position_logits"]["f32le_base64"] = b64_f32(logits)
        else:
            entry["last_position_logits"]["top256"] = [[i, v] for i, v in top_k(logits, TOP_COMPACT)]
        prompts_out.append(entry)

    tok_out = []
    for name, text, with_special in TOKENIZER_STRINGS:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        rt = detokenize(vocab, ids, remove_special=False, unparse_special=False).decode("utf-8", errors="replace")
        rec = {
            "name": name,
            "text": text,
            "token_ids": ids,
            "token_texts": [token_text(vocab, t) for t in ids],
            "detokenized": rt,
            "roundtrip_exact": rt == text,
        }
        if with_special:
            sids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            rec["special_true"] = {
                "token_ids": sids,
                "token_texts": [token_text(vocab, t) for t in sids],
                "detokenized_unparse_special": detokenize(vocab, sids, remove_special=False, unparse_special=True)
                .decode("utf-8", errors="replace"),
                "detokenized_no_special": detokenize(vocab, sids, remove_special=False, unparse_special=False)
                .decode("utf-8", errors="replace"),
            }
        tok_out.append(rec)

    keep_meta = {k: v for k, v in meta.items()
                 if k.startswith("general.") or k.startswith("tokenizer.ggml.") or "." not in k
                 or k.split(".", 1)[0] == meta.get("general.architecture")}
    out = {
        "schema": "blockmesh-golden/llamacpp/v1",
        "header": {
            "implementation": "llama.cpp via llama-cpp-python",
            "llama_cpp_python_version": llama_cpp.__version__,
            "llama_cpp_system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "date_utc": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "command": " ".join(shlex.quote(a) for a in [os.path.basename(sys.executable), *sys.argv]),
            "model_file": os.path.basename(args.model),
            "model_sha256": sha256_file(args.model),
            "model_size_bytes": os.path.getsize(args.model),
            "n_threads": args.threads,
            "n_ctx": N_CTX,
            "n_batch": llm.n_batch,
            "seed": SEED,
            "logits_all": True,
            "greedy": "argmax of raw logits (lowest id on ties), no sampler; stops after an EOG token; max %d" % MAX_NEW_TOKENS,
            "logits_encoding": ("float32 little-endian, base64; full vocabulary for every prompt" if full_logits_all else
                                "float32 little-endian, base64, full vocabulary for the first %d prompt(s); "
                                "the others keep top256 [id, logit] + logsumexp + stats" % args.full_logits),
        },
        "model": {
            "architecture": meta.get("general.architecture"),
            "name": meta.get("general.name"),
            "n_vocab": n_vocab,
            "bos_id": bos_id,
            "eos_id": eos_id,
            "bos_text": bos_text,
            "eos_text": eos_text,
            "eog_ids": eog_ids,
            "add_bos_token": add_bos_meta,
            "has_chat_template": template is not None,
            "chat_template": template,
            "prompt_format": prompt_format,
            "metadata": keep_meta,
        },
        "prompts": prompts_out,
        "tokenizer": tok_out,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
