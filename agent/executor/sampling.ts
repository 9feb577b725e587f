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
    // The nucleus is a prefix of all tokens sorted by probability (ties: lower id first). Sorting only
    // the tokens above a threshold gives that same prefix, summed in the same order, whenever they
    // reach top_p; the threshold is lowered until they do (0 takes every token). The first threshold
    // comes from the probability mass per power of two.
    const target = p.topP * sum
    const buckets = new Float64Array(64)
    for (let i = 0; i < n; i++) if (probs[i] > 0) buckets[Math.min(63, Math.floor(-Math.log2(probs[i])))] += probs[i]
    let first = 0
    for (let b = 0, acc = 0; b < 63; b++) { acc += buckets[b]; if (acc >= target) { first = 2 ** -(b + 1); break } }
    for (const threshold of [first, first / 1024, 1e-12, 0]) {
      const cand: number[] = []
      for (let i = 0; i < n; i++) if (probs[i] >= threshold) cand.push(i)
      cand.sort((a, b) => probs[b] - probs[a] || a - b)
      let acc = 0
      let keep = 0
      while (keep < cand.length && acc < p.topP * sum) acc += probs[cand[keep++]]
      if (acc < p.topP * sum && cand.length < n) continue
      order = cand.slice(0, Math.max(1, keep))
      mass = acc
      break
    }
    if (order == null) { // NaN logits: the full sort
      order = Array.from({ length: n }, (_, i) => i).sort((a, b) => probs[b] - probs[a] || a - b)
      let acc = 0
      let keep = 0
      while (keep < n && acc < p.topP * sum) acc += probs[order[keep++]]
      order = order.slice(0, Math.max(1, keep))
      mass = acc
    }
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

/**
 * OpenAI's presence and frequency penalties, in place: for each token id that
 * the completion has produced `count` times, logit -= presence * (count > 0) + frequency * count.
 */
export function applyPenalties (logits: Float32Array, counts: ReadonlyMap<number, number>, presence: number, frequency: number): void {
  for (const [id, count] of counts) {
    if (count > 0 && id >= 0 && id < logits.length) logits[id] -= presence + frequency * count
  }
}

/**
 * Hugging Face's repetition penalty, in place: every token seen (prompt and
 * completion) has its logit divided by `penalty` when positive, multiplied when negative.
 */
export function applyRepetitionPenalty (logits: Float32Array, seen: Iterable<number>, penalty: number): void {
  for (const id of seen) {
    if (id < 0 || id >= logits.length) continue
    const l = logits[id]
    logits[id] = l > 0 ? l / penalty : l * penalty
  }
}

/** log(sum(exp(logits))), computed stably (−Infinity entries contribute nothing). */
export function logSumExp (logits: ArrayLike<number>): number {
  let max = -Infinity
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i]
  if (max === -Infinity) return -Infinity
  let sum = 0
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max)
  return max + Math.log(sum)
}

/** log_softmax of a row of logits (temperature-free, as OpenAI reports logprobs). */
export function logSoftmax (logits: ArrayLike<number>): Float64Array {
  const lse = logSumExp(logits)
  const out = new Float64Array(logits.length)
  for (let i = 0; i < logits.length; i++) out[i] = logits[i] - lse
  return out
}

/** A sampled token's log-probability and the k most likely alternatives, as [id, logprob], best first (ties: lower id first). */
export interface TokenLogprob { logprob: number, top: Array<[number, number]> }

/** The `k` largest entries of `logits` as ids, best first, ties to the lower id; −Infinity entries are never returned. */
export function topK (logits: ArrayLike<number>, k: number): number[] {
  const best: number[] = []
  if (k <= 0) return best
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i]
    if (v === -Infinity || Number.isNaN(v)) continue
    if (best.length === k && v <= logits[best[k - 1]]) continue
    let j = best.length < k ? best.length : k - 1
    if (best.length < k) best.push(i)
    while (j > 0 && logits[best[j - 1]] < v) { best[j] = best[j - 1]; j-- }
    best[j] = i
  }
  return best
}

/** The logprob of `chosen` and the top `k` logprobs, from one row of (already penalised/masked) logits. */
export function tokenLogprobs (logits: ArrayLike<number>, chosen: number, k: number): TokenLogprob {
  const lse = logSumExp(logits)
  return {
    logprob: logits[chosen] - lse,
    top: topK(logits, k).map(id => [id, logits[id] - lse])
  }
}

/** Sets every logit whose token is not in `mask` (a bitset over token ids) to −Infinity, in place. */
export function applyMask (logits: Float32Array, mask: Uint8Array): void {
  const n = Math.min(logits.length, mask.length * 8)
  for (let i = 0; i < n; i++) if ((mask[i >> 3] & (1 << (i & 7))) === 0) logits[i] = -Infinity
  for (let i = n; i < logits.length; i++) logits[i] = -Infinity
}

/** The controls beyond temperature and top_p; each is off when absent (or neutral: 0, 0, 1). */
export interface SamplingControls {
  /** OpenAI presence_penalty, −2..2 */
  presencePenalty?: number
  /** OpenAI frequency_penalty, −2..2 */
  frequencyPenalty?: number
  /** Hugging Face repetition_penalty, > 0 (1 = off), over prompt and completion tokens */
  repetitionPenalty?: number
  /** 0..20: each token carries its logprob and this many alternatives */
  topLogprobs?: number
}

export interface SampledToken { token: number, logprob?: TokenLogprob }

/**
 * One sequence's sampler: its seeded generator, the token counts the penalties need, and per step
 * penalties → mask → logprobs (log_softmax of the processed logits, before temperature) → sampling.
 * A sequence without controls and without a mask samples the raw row exactly as sampleToken always has.
 */
export class SequenceSampler {
  private readonly p: SamplingParams & SamplingControls
  private readonly rng: Rng
  private readonly presence: number
  private readonly frequency: number
  private readonly repetition: number
  private readonly counts = new Map<number, number>()
  private readonly seen = new Set<number>()
  /** no penalties and no logprobs */
  readonly plain: boolean

  constructor (p: SamplingParams & SamplingControls, rng: Rng, prompt: ArrayLike<number> = []) {
    this.p = p
    this.rng = rng
    this.presence = p.presencePenalty ?? 0
    this.frequency = p.frequencyPenalty ?? 0
    this.repetition = p.repetitionPenalty ?? 1
    this.plain = this.presence === 0 && this.frequency === 0 && this.repetition === 1 && p.topLogprobs == null
    if (this.repetition !== 1) for (let i = 0; i < prompt.length; i++) this.seen.add(prompt[i])
  }

  /**
   * A resumed sequence (its prompt ends with tokens an earlier run generated): counts them for the
   * penalties as if this sampler had picked them. The generator is advanced separately (skipDraws).
   */
  resume (generated: ArrayLike<number>): void {
    for (let i = 0; i < generated.length; i++) {
      const token = generated[i]
      if (this.repetition !== 1) this.seen.add(token)
      if (this.presence !== 0 || this.frequency !== 0) this.counts.set(token, (this.counts.get(token) ?? 0) + 1)
    }
  }

  next (row: Float32Array, mask: Uint8Array | null = null): SampledToken {
    if (this.plain && mask == null) return { token: sampleToken(row, this.p, this.rng) }
    const logits = Float32Array.from(row)
    if (this.repetition !== 1) applyRepetitionPenalty(logits, this.seen, this.repetition)
    if (this.presence !== 0 || this.frequency !== 0) applyPenalties(logits, this.counts, this.presence, this.frequency)
    if (mask != null) applyMask(logits, mask)
    let token = sampleToken(logits, this.p, this.rng)
    if (logits[token] === -Infinity) token = argmax(logits) // rounding at the end of the distribution
    const logprob = this.p.topLogprobs != null ? tokenLogprobs(logits, token, this.p.topLogprobs) : undefined
    if (this.repetition !== 1) this.seen.add(token)
    if (this.presence !== 0 || this.frequency !== 0) this.counts.set(token, (this.counts.get(token) ?? 0) + 1)
    return logprob != null ? { token, logprob } : { token }
  }
}

/**
 * Advances a sequence's generator past `n` tokens it sampled before (a resumed sequence): sampling
 * draws exactly one number per token when the temperature is above 0, none when greedy. So a seed
 * reproduces the same tokens after a replay as in one uninterrupted run.
 */
export function skipDraws (rng: Rng, p: SamplingParams, n: number): void {
  if (p.temperature <= 0) return
  for (let i = 0; i < n; i++) rng.next()
}
