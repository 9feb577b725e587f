import { LN_EPS } from './weights.ts'
import type { NamedTensor } from './weights.ts'
import { MASK_NEG } from './graph.ts'
import { headDim } from './spec.ts'
import type { ModelSpec } from './spec.ts'

/**
 * A plain TypeScript forward pass of the generated decoder (float64
 * arithmetic), written from the maths rather than from the graph, to check
 * that the ONNX graph computes what it claims. Slow; for tests only.
 */

/** [batch][heads][time][headDim] flattened, with its time length. */
export interface KV { data: Float64Array, time: number }
export interface ReferenceInput {
  inputIds: number[][]
  attentionMask: number[][]
  positionIds: number[][]
  /** per layer; absent = empty cache */
  past?: Array<{ key: KV, value: KV }>
}
export interface ReferenceOutput { logits: Float64Array, present: Array<{ key: KV, value: KV }> }

/** erf, Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7). */
export function erf (x: number): number {
  const s = Math.sign(x)
  const a = Math.abs(x)
  const t = 1 / (1 + 0.3275911 * a)
  const y = 1 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-a * a)
  return s * y
}

function layerNorm (x: Float64Array, g: Float32Array, b: Float32Array): Float64Array {
  const n = x.length
  let mean = 0
  for (const v of x) mean += v
  mean /= n
  let vr = 0
  for (const v of x) vr += (v - mean) ** 2
  vr /= n
  const inv = 1 / Math.sqrt(vr + LN_EPS)
  const out = new Float64Array(n)
  for (let i = 0; i < n; i++) out[i] = (x[i] - mean) * inv * g[i] + b[i]
  return out
}

/** x (in) · W (in × out, row-major) + bias */
function linear (x: Float64Array, w: Float32Array, bias: Float32Array | null, out: number): Float64Array {
  const y = new Float64Array(out)
  for (let i = 0; i < x.length; i++) {
    const xi = x[i]
    if (xi === 0) continue
    const row = i * out
    for (let j = 0; j < out; j++) y[j] += xi * w[row + j]
  }
  if (bias != null) for (let j = 0; j < out; j++) y[j] += bias[j]
  return y
}

export function referenceForward (spec: ModelSpec, weights: Map<string, Float32Array>, input: ReferenceInput): ReferenceOutput {
  const H = spec.hidden
  const A = spec.heads
  const D = headDim(spec)
  const V = spec.vocab
  const B = input.inputIds.length
  const S = input.inputIds[0].length
  const T = input.attentionMask[0].length
  const P = T - S
  const w = (name: string): Float32Array => {
    const t = weights.get(name)
    if (t == null) throw new Error(`no weight ${name}`)
    return t
  }
  // hidden[b][s] : Float64Array(H)
  let hidden: Float64Array[][] = input.inputIds.map((row, b) => row.map((tok, s) => {
    const pos = input.positionIds[b][s]
    const x = new Float64Array(H)
    const wte = w('transformer.wte.weight')
    const wpe = w('transformer.wpe.weight')
    for (let i = 0; i < H; i++) x[i] = wte[tok * H + i] + wpe[pos * H + i]
    return x
  }))
  const present: Array<{ key: KV, value: KV }> = []
  const idx = (b: number, a: number, t: number, time: number): number => ((b * A + a) * time + t) * D
  for (let l = 0; l < spec.layers; l++) {
    const p = `transformer.h.${l}`
    const key = new Float64Array(B * A * T * D)
    const value = new Float64Array(B * A * T * D)
    const past = input.past?.[l]
    const queries: Float64Array[][] = []
    for (let b = 0; b < B; b++) {
      queries.push([])
      for (let a = 0; a < A; a++) {
        for (let t = 0; t < P; t++) {
          for (let d = 0; d < D; d++) {
            key[idx(b, a, t, T) + d] = past?.key.data[idx(b, a, t, P) + d] ?? 0
            value[idx(b, a, t, T) + d] = past?.value.data[idx(b, a, t, P) + d] ?? 0
          }
        }
      }
      for (let s = 0; s < S; s++) {
        const x = layerNorm(hidden[b][s], w(`${p}.ln_1.weight`), w(`${p}.ln_1.bias`))
        const qkv = linear(x, w(`${p}.attn.c_attn.weight`), w(`${p}.attn.c_attn.bias`), 3 * H)
        queries[b].push(qkv.subarray(0, H))
        for (let a = 0; a < A; a++) {
          for (let d = 0; d < D; d++) {
            key[idx(b, a, P + s, T) + d] = qkv[H + a * D + d]
            value[idx(b, a, P + s, T) + d] = qkv[2 * H + a * D + d]
          }
        }
      }
    }
    present.push({ key: { data: key, time: T }, value: { data: value, time: T } })
    const next: Float64Array[][] = []
    for (let b = 0; b < B; b++) {
      next.push([])
      for (let s = 0; s < S; s++) {
        const ctx = new Float64Array(H)
        for (let a = 0; a < A; a++) {
          const scores = new Float64Array(T)
          let max = -Infinity
          for (let k = 0; k < T; k++) {
            let dot = 0
            for (let d = 0; d < D; d++) dot += queries[b][s][a * D + d] * key[idx(b, a, k, T) + d]
            const allowed = k <= P + s && input.attentionMask[b][k] !== 0
            scores[k] = dot / Math.sqrt(D) + (allowed ? 0 : MASK_NEG)
            max = Math.max(max, scores[k])
          }
          let sum = 0
          for (let k = 0; k < T; k++) { scores[k] = Math.exp(scores[k] - max); sum += scores[k] }
          for (let k = 0; k < T; k++) {
            const pk = scores[k] / sum
            for (let d = 0; d < D; d++) ctx[a * D + d] += pk * value[idx(b, a, k, T) + d]
          }
        }
        const attnOut = linear(ctx, w(`${p}.attn.c_proj.weight`), w(`${p}.attn.c_proj.bias`), H)
        const h1 = hidden[b][s].map((v, i) => v + attnOut[i])
        const y = layerNorm(h1, w(`${p}.ln_2.weight`), w(`${p}.ln_2.bias`))
        const fc = linear(y, w(`${p}.mlp.c_fc.weight`), w(`${p}.mlp.c_fc.bias`), 4 * H).map(v => 0.5 * v * (1 + erf(v / Math.SQRT2)))
        const mlpOut = linear(fc, w(`${p}.mlp.c_proj.weight`), w(`${p}.mlp.c_proj.bias`), H)
        next[b].push(h1.map((v, i) => v + mlpOut[i]))
      }
    }
    hidden = next
  }
  const logits = new Float64Array(B * S * V)
  for (let b = 0; b < B; b++) {
    for (let s = 0; s < S; s++) {
      const x = layerNorm(hidden[b][s], w('transformer.ln_f.weight'), w('transformer.ln_f.bias'))
      logits.set(linear(x, w('lm_head.weight'), null, V), (b * S + s) * V)
    }
  }
  return { logits, present }
}

export function weightMap (tensors: Iterable<NamedTensor>): Map<string, Float32Array> {
  const m = new Map<string, Float32Array>()
  for (const t of tensors) m.set(t.name, t.data)
  return m
}
