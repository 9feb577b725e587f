/**
 * Decoder hyper-parameters read from a GGUF's metadata, for the architecture families the graph builder
 * knows: `llama` (Llama 2/3, Mistral, SmolLM), `qwen2` and `gemma3`. Every value comes from the file;
 * the only constants are the ones llama.cpp itself hard-codes for an architecture (named below).
 */
import { z } from 'zod'
import { GgufError } from './file.ts'
import type { GgufFile, GgufValue } from './file.ts'

export const SUPPORTED_ARCHITECTURES = ['llama', 'qwen2', 'gemma3'] as const
export type Architecture = typeof SUPPORTED_ARCHITECTURES[number]

export interface DecoderConfig {
  architecture: Architecture
  layers: number
  hidden: number
  heads: number
  kvHeads: number
  headDim: number
  ffn: number
  vocab: number
  contextLength: number
  eps: number
  /** rotary embedding: base frequency, rotated dimensions, and how pairs are laid out (HF "rotate_half" after un-permuting llama's Q/K) */
  rope: { theta: number, dim: number, linearFactor: number, freqFactors: boolean }
  /**
   * gemma3: local (sliding-window) layers see the last `window` positions (themselves included), use their own
   * RoPE base and no RoPE scaling; every `pattern`-th layer is global
   */
  sliding: { window: number, pattern: number, theta: number, linearFactor: number } | null
  /** multiply the token embedding by sqrt(hidden) (gemma) */
  embedScale: number
  /** scale applied to q·k (1/sqrt(headDim) unless the architecture says otherwise: Gemma 3 27B uses 1/sqrt(hidden/heads)) */
  attentionScale: number
  activation: 'silu' | 'gelu_tanh'
  qkvBias: boolean
  qkNorm: boolean
  /** gemma3: norms after attention and after the MLP as well as before */
  sandwichNorms: boolean
  /** llama's GGUF converter permutes Q/K rows for ggml's interleaved RoPE; the builder undoes it */
  unpermuteQK: boolean
  tiedEmbeddings: boolean
}

const positive = z.number().int().positive()

function num (meta: Record<string, GgufValue>, key: string): number | undefined {
  const v = meta[key]
  if (typeof v === 'number') return v
  if (typeof v === 'bigint') return Number(v)
  return undefined
}

/** Reads and checks the decoder hyper-parameters; refuses unknown architectures by name. */
export function decoderConfig (file: GgufFile): DecoderConfig {
  const meta = file.metadata
  const arch = meta['general.architecture']
  if (typeof arch !== 'string') throw new GgufError('missing_metadata', `${file.path} has no general.architecture`, { path: file.path })
  if (!(SUPPORTED_ARCHITECTURES as readonly string[]).includes(arch)) {
    throw new GgufError('unsupported_architecture', `${file.path}: architecture "${arch}" is not supported (supported: ${SUPPORTED_ARCHITECTURES.join(', ')})`, { path: file.path, architecture: arch })
  }
  const a = arch as Architecture
  const k = (key: string): number | undefined => num(meta, `${a}.${key}`)
  const need = (key: string): number => {
    const v = k(key)
    if (v === undefined) throw new GgufError('missing_metadata', `${file.path}: metadata ${a}.${key} is missing`, { path: file.path, key: `${a}.${key}` })
    return v
  }
  const hidden = need('embedding_length')
  const heads = need('attention.head_count')
  const kvHeads = k('attention.head_count_kv') ?? heads
  const headDim = k('attention.key_length') ?? hidden / heads
  const embd = file.tensors.get('token_embd.weight')
  if (embd == null) throw new GgufError('missing_tensor', `${file.path} has no token_embd.weight`, { path: file.path })
  const vocab = k('vocab_size') ?? embd.shape[1]
  const scalingType = meta[`${a}.rope.scaling.type`]
  const linearFactor = scalingType === 'linear' ? (k('rope.scaling.factor') ?? 1) : 1
  if (typeof scalingType === 'string' && scalingType !== 'linear' && scalingType !== 'none') {
    throw new GgufError('unsupported_architecture', `${file.path}: RoPE scaling "${scalingType}" is not supported (linear and none are)`, { path: file.path })
  }
  const gemma = a === 'gemma3'
  // llama.cpp (llama-model.cpp, LLM_ARCH_GEMMA3): a gemma3 file with attention.sliding_window > 0 has
  // sliding-window layers, base 10000 and no RoPE scaling there, and every 6th layer global (llm_build_gemma3<true>,
  // no final logit softcapping); without one, every layer is global and the logits are soft-capped
  // (llm_build_gemma3<false>), which this builder does not do
  const slidingWindow = gemma ? k('attention.sliding_window') ?? 0 : 0
  if (gemma && slidingWindow <= 0) {
    throw new GgufError('unsupported_architecture', `${file.path}: gemma3 without attention.sliding_window (all-global attention with final logit softcapping) is not supported`, { path: file.path })
  }
  const valueLength = k('attention.value_length')
  if (valueLength !== undefined && valueLength !== headDim) {
    throw new GgufError('unsupported_architecture', `${file.path}: value heads of ${valueLength} dimensions with key heads of ${headDim} are not supported`, { path: file.path })
  }
  const cfg: DecoderConfig = {
    architecture: a,
    layers: need('block_count'),
    hidden,
    heads,
    kvHeads,
    headDim,
    ffn: need('feed_forward_length'),
    vocab,
    contextLength: need('context_length'),
    eps: k('attention.layer_norm_rms_epsilon') ?? 1e-6,
    rope: { theta: k('rope.freq_base') ?? 10_000, dim: k('rope.dimension_count') ?? headDim, linearFactor, freqFactors: file.tensors.has('rope_freqs.weight') },
    sliding: gemma ? { window: slidingWindow, pattern: 6, theta: 10_000, linearFactor: 1 } : null,
    embedScale: gemma ? Math.sqrt(hidden) : 1,
    // llama.cpp: f_attention_scale, 1/sqrt(n_embd/n_head) for the 27B (62 layers), else 1/sqrt(head dim)
    attentionScale: gemma && need('block_count') === 62 ? 1 / Math.sqrt(hidden / heads) : 1 / Math.sqrt(headDim),
    activation: gemma ? 'gelu_tanh' : 'silu',
    qkvBias: file.tensors.has('blk.0.attn_q.bias'),
    qkNorm: file.tensors.has('blk.0.attn_q_norm.weight'),
    sandwichNorms: file.tensors.has('blk.0.post_attention_norm.weight'),
    unpermuteQK: a === 'llama',
    tiedEmbeddings: !file.tensors.has('output.weight')
  }
  const checks: Array<[string, number]> = [['block_count', cfg.layers], ['embedding_length', hidden], ['attention.head_count', heads], ['attention.head_count_kv', kvHeads],
    ['head dimension', headDim], ['feed_forward_length', cfg.ffn], ['vocab_size', vocab], ['context_length', cfg.contextLength]]
  for (const [name, v] of checks) {
    if (!positive.safeParse(v).success) throw new GgufError('corrupt', `${file.path}: ${name} is ${v}, not a positive integer`, { path: file.path })
  }
  if (heads % kvHeads !== 0) throw new GgufError('corrupt', `${file.path}: ${heads} attention heads are not a multiple of ${kvHeads} KV heads`, { path: file.path })
  if (cfg.rope.dim !== headDim) throw new GgufError('unsupported_architecture', `${file.path}: partial rotary embeddings (${cfg.rope.dim} of ${headDim} dimensions) are not supported`, { path: file.path })
  if (cfg.rope.freqFactors) throw new GgufError('unsupported_architecture', `${file.path}: Llama 3.1-style RoPE frequency factors (rope_freqs.weight) are not supported yet`, { path: file.path })
  if (embd.shape[0] !== hidden || embd.shape[1] !== vocab) {
    throw new GgufError('corrupt', `${file.path}: token_embd.weight is [${embd.shape.join(', ')}], expected [${hidden}, ${vocab}]`, { path: file.path })
  }
  return cfg
}

/** Parameters of the decoder, counted from the tensor table (tied embeddings once). */
export function parameterCount (file: GgufFile): number {
  let n = 0
  for (const t of file.tensors.values()) n += t.elements
  return n
}
