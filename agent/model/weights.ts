import { readFileSync } from 'node:fs'
import { Rng, subSeed } from './random.ts'
import { orthonormalBasisWithoutMean, symmetricEigen } from './linalg.ts'
import { BOS, BYTE_VOCAB, EOS, PAD } from './spec.ts'
import type { ModelSpec } from './spec.ts'

export const CORPUS_URL = new URL('./corpus.txt', import.meta.url)
export const LN_EPS = 1e-5
/** Logit offset that keeps BOS, PAD and any token past the byte vocabulary from being sampled. */
export const NEVER = -30

export interface NamedTensor { name: string, dims: number[], data: Float32Array }

/**
 * log P(next | current) over the byte vocabulary, from the corpus: each
 * paragraph is BOS, its bytes, EOS. Contexts the corpus never shows back off
 * to the unigram distribution. Rows are centred (softmax ignores a per-row
 * constant), which keeps the factorisation small.
 */
export function bigramLogits (corpus: Uint8Array, alpha = 0.01): Float64Array {
  const V = BYTE_VOCAB
  const counts = new Float64Array(V * V)
  const unigram = new Float64Array(V)
  const text = new TextDecoder().decode(corpus)
  for (const para of text.split(/\n\s*\n/).map(p => p.trim()).filter(Boolean)) {
    const bytes = new TextEncoder().encode(para)
    let prev = BOS
    for (const b of bytes) {
      counts[prev * V + b]++
      unigram[b]++
      prev = b
    }
    counts[prev * V + EOS]++
    unigram[EOS]++
  }
  const out = new Float64Array(V * V)
  const uniTotal = unigram.reduce((a, b) => a + b, 0)
  for (let a = 0; a < V; a++) {
    let n = 0
    for (let b = 0; b < V; b++) n += counts[a * V + b]
    let mean = 0
    for (let b = 0; b < V; b++) {
      const p = n > 0
        ? (counts[a * V + b] + alpha) / (n + alpha * V)
        : (unigram[b] + alpha) / (uniTotal + alpha * V)
      out[a * V + b] = Math.log(p)
      mean += out[a * V + b]
    }
    mean /= V
    for (let b = 0; b < V; b++) out[a * V + b] -= mean
  }
  return out
}

/**
 * Embedding (V x H) and LM head (H x V) such that, for every byte context a,
 * LayerNorm(embedding[a]) · lmHead = the rank-r approximation of the bigram
 * logits row a (+ NEVER for tokens that must not be produced). Rows are
 * built from an orthonormal basis orthogonal to the all-ones vector and padded
 * to one common norm, so the final LayerNorm (gamma 1, beta 0) only rescales
 * them by a known constant that the LM head undoes.
 */
export function bigramEmbedding (spec: ModelSpec, corpus: Uint8Array): { wte: Float32Array, lmHead: Float32Array, rank: number } {
  const V = BYTE_VOCAB
  const H = spec.hidden
  const M = bigramLogits(corpus)
  // C = M^T M; its eigenvectors are M's right singular vectors
  const C = new Float64Array(V * V)
  for (let i = 0; i < V; i++) {
    for (let j = i; j < V; j++) {
      let s = 0
      for (let a = 0; a < V; a++) s += M[a * V + i] * M[a * V + j]
      C[i * V + j] = s
      C[j * V + i] = s
    }
  }
  const { values, vectors } = symmetricEigen(C, V)
  let rank = Math.min(V, H - 3)
  while (rank > 0 && values[rank - 1] <= 1e-9) rank--
  const Er = new Float64Array(V * rank) // U Σ^½
  const Wr = new Float64Array(rank * V) // Σ^½ Vᵀ
  for (let k = 0; k < rank; k++) {
    const sigma = Math.sqrt(values[k])
    const root = Math.sqrt(sigma)
    for (let b = 0; b < V; b++) Wr[k * V + b] = root * vectors[b * V + k]
    for (let a = 0; a < V; a++) {
      let s = 0
      for (let b = 0; b < V; b++) s += M[a * V + b] * vectors[b * V + k]
      Er[a * rank + k] = s / root
    }
  }
  const rowNorm = (a: number): number => {
    let s = 0
    for (let k = 0; k < rank; k++) s += Er[a * rank + k] ** 2
    return Math.sqrt(s)
  }
  let R0 = 0
  for (let a = 0; a < V; a++) R0 = Math.max(R0, rowNorm(a))
  R0 = Math.max(R0, 1)
  const beta = R0
  const rng = new Rng(subSeed(spec.seed, 'basis'))
  const q = orthonormalBasisWithoutMean(rank + 2, H, () => rng.normal())
  const padDir = q[rank]
  const biasDir = q[rank + 1]

  const wte = new Float32Array(spec.vocab * H)
  for (let a = 0; a < spec.vocab; a++) {
    const pad = a < V ? Math.sqrt(Math.max(0, R0 * R0 - rowNorm(a) ** 2)) : R0
    for (let i = 0; i < H; i++) {
      let x = pad * padDir[i] + beta * biasDir[i]
      if (a < V) for (let k = 0; k < rank; k++) x += Er[a * rank + k] * q[k][i]
      wte[a * H + i] = x
    }
  }
  // LayerNorm of a row: mean 0, variance R²/H → divides by s = sqrt(R²/H + eps)
  const s = Math.sqrt((R0 * R0 + beta * beta) / H + LN_EPS)
  const lmHead = new Float32Array(H * spec.vocab)
  for (let b = 0; b < spec.vocab; b++) {
    const bias = b >= V || b === BOS || b === PAD ? NEVER : 0
    for (let i = 0; i < H; i++) {
      let x = (bias / beta) * biasDir[i]
      if (b < V) for (let k = 0; k < rank; k++) x += Wr[k * V + b] * q[k][i]
      lmHead[i * spec.vocab + b] = s * x
    }
  }
  return { wte, lmHead, rank }
}

export function readCorpus (): Uint8Array {
  return readFileSync(CORPUS_URL)
}

/**
 * Every weight of the model, in graph order, deterministic in (spec, corpus).
 * Attention and MLP branches are small random perturbations (their output
 * projections are scaled down), so the model stays a readable bigram model
 * while every operator of a real decoder runs and is checked.
 */
export function* modelWeights (spec: ModelSpec, corpus = readCorpus()): Generator<NamedTensor> {
  const H = spec.hidden
  const { wte, lmHead } = bigramEmbedding(spec, corpus)
  const normal = (name: string, dims: number[], std: number, mean = 0): NamedTensor => {
    const n = dims.reduce((a, b) => a * b, 1)
    return { name, dims, data: new Rng(subSeed(spec.seed, name)).fillNormal(new Float32Array(n), std, mean) }
  }
  const rowScale = Math.sqrt(wte.subarray(0, H).reduce((s, x) => s + x * x, 0) / H)
  yield { name: 'transformer.wte.weight', dims: [spec.vocab, H], data: wte }
  yield normal('transformer.wpe.weight', [spec.maxPositions, H], 0.01 * rowScale)
  for (let i = 0; i < spec.layers; i++) {
    const p = `transformer.h.${i}`
    yield normal(`${p}.ln_1.weight`, [H], 0.02, 1)
    yield normal(`${p}.ln_1.bias`, [H], 0.01)
    yield normal(`${p}.attn.c_attn.weight`, [H, 3 * H], 0.02)
    yield normal(`${p}.attn.c_attn.bias`, [3 * H], 0.01)
    yield normal(`${p}.attn.c_proj.weight`, [H, H], 0.004)
    yield normal(`${p}.attn.c_proj.bias`, [H], 0.001)
    yield normal(`${p}.ln_2.weight`, [H], 0.02, 1)
    yield normal(`${p}.ln_2.bias`, [H], 0.01)
    yield normal(`${p}.mlp.c_fc.weight`, [H, 4 * H], 0.02)
    yield normal(`${p}.mlp.c_fc.bias`, [4 * H], 0.01)
    yield normal(`${p}.mlp.c_proj.weight`, [4 * H, H], 0.002)
    yield normal(`${p}.mlp.c_proj.bias`, [H], 0.001)
  }
  yield { name: 'transformer.ln_f.weight', dims: [H], data: new Float32Array(H).fill(1) }
  yield { name: 'transformer.ln_f.bias', dims: [H], data: new Float32Array(H) }
  yield { name: 'lm_head.weight', dims: [H, spec.vocab], data: lmHead }
}
