import { Rng } from '../model/random.ts'

export interface SamplingParams {
  /** 0 = greedy (argmax, deterministic) */
  temperature: number
  /** nucleus: keep the smallest set of tokens whose probability reaches top_p */
  topP: number
}

/** Index of the largest value; ties go to the lowest index. */
export function argmax (logits: Float32Array): number {
  let best = 0
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i
  return best
}

/**
 * Picks the next token from one row of logits. Greedy at temperature 0;
 * otherwise softmax(logits / T), cut to the top-p nucleus, sampled with the
 * sequence's own seeded generator (so a seed reproduces a completion).
 */
export function sampleToken (logits: Float32Array, p: SamplingParams, rng: Rng): number {
  if (p.temperature <= 0) return argmax(logits)
  const n = logits.length
  let max = -Infinity
  for (let i = 0; i < n; i++) if (logits[i] > max) max = logits[i]
  const probs = new Float64Array(n)
  let sum = 0
  for (let i = 0; i < n; i++) {
    const e = Math.exp((logits[i] - max) / p.temperature)
    probs[i] = e
    sum += e
  }
  let order: number[] | null = null
  let mass = sum
  if (p.topP < 1) {
    order = Array.from({ length: n }, (_, i) => i).sort((a, b) => probs[b] - probs[a] || a - b)
    let acc = 0
    let keep = 0
    while (keep < n && acc < p.topP * sum) acc += probs[order[keep++]]
    order = order.slice(0, Math.max(1, keep))
    mass = acc
  }
  let r = rng.next() * mass
  if (order != null) {
    for (const i of order) {
      r -= probs[i]
      if (r < 0) return i
    }
    return order[order.length - 1]
  }
  for (let i = 0; i < n; i++) {
    r -= probs[i]
    if (r < 0) return i
  }
  return n - 1
}
