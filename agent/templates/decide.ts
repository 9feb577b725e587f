/**
 * Whole or split: where a model goes, from its memory estimate (estimate.ts) and the peers' free memory.
 * The whole model on the peer with the most free memory when one fits it; otherwise a pipeline split into
 * as few stages as fit, on the peers with the most free memory, ordered for the lowest RTT between
 * consecutive stages; otherwise a refusal that says by how much. Every answer explains itself in words and
 * numbers. Pure: the caller gathers free memory (GPU memoryFreeBytes, else RAM availableBytes) and RTTs.
 */
import { z } from 'zod'

/** The parts of a MemoryEstimate the decision uses. */
export interface DecisionNeed {
  /** the whole model on one peer */
  totalBytes: number
  layers: number
  /** each layer on a stage: its weights and KV cache */
  perLayerBytes: number
  /** the first stage's extra: the token embedding */
  embeddingBytes: number
  /** the last stage's extra: final norm and LM head */
  headBytes: number
  /** every stage's own runtime (engine, session, activations) */
  runtimeBytes: number
}

export const CandidateSchema = z.object({
  peerId: z.string().min(1),
  name: z.string().min(1),
  freeBytes: z.number().finite().min(0),
  kind: z.enum(['gpu', 'ram'])
}).strict()
export type Candidate = z.output<typeof CandidateSchema>

export interface DecideOptions {
  /** fraction of each peer's free memory kept free (default 0.1) */
  headroom?: number
  /** most stages a split may have (default 8) */
  maxStages?: number
  /** measured round-trip time between two peers (by peerId), when known */
  rttMs?: (a: string, b: string) => number | undefined
}

export interface Stage {
  peer: Candidate
  /** [from, to): the layers this stage runs */
  layers: [number, number]
  /** what the stage needs: runtime + its layers (+ embedding on the first, + head on the last) */
  bytes: number
}

/** Free memory per peer, by name. */
export type FreeByPeer = Record<string, number>

export type Decision =
  | { kind: 'whole', peer: Candidate, needBytes: number, freeBytes: FreeByPeer, reason: string }
  | { kind: 'split', stages: Stage[], needBytes: number, freeBytes: FreeByPeer, rttMs?: number, reason: string }
  | { kind: 'refused', needBytes: number, freeBytes: FreeByPeer, reason: string }

/** Bytes in binary units with 2 decimals ("1.50 GiB", "300.00 MiB", "12.00 KiB", "512 B"). */
export function formatBytes (n: number): string {
  const units = ['KiB', 'MiB', 'GiB', 'TiB']
  if (Math.abs(n) < 1024) return `${Math.round(n)} B`
  let v = n
  let u = -1
  while (Math.abs(v) >= 1024 && u < units.length - 1) { v /= 1024; u++ }
  return `${v.toFixed(2)} ${units[u]}`
}

/** Peers by free memory, most first; ties by name. */
function byFree (a: Candidate, b: Candidate): number {
  return b.freeBytes - a.freeBytes || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
}

/** Permutations of `items` are tried for an RTT order up to this many stages (8! = 40320); above, nearest neighbour. */
export const PERMUTATION_LIMIT = 8

/** What a stage at `index` of `k` needs besides its layers. */
function fixedOf (need: DecisionNeed, index: number, k: number): number {
  return need.runtimeBytes + (index === 0 ? need.embeddingBytes : 0) + (index === k - 1 ? need.headBytes : 0)
}

/** Layers a peer can take at position `index` of `k` stages (−1: not even the stage's fixed part fits). */
function roomFor (need: DecisionNeed, usable: number, index: number, k: number): number {
  const left = usable - fixedOf(need, index, k)
  if (left < 0) return -1
  return need.perLayerBytes > 0 ? Math.floor(left / need.perLayerBytes) : need.layers
}

/**
 * Splits `layers` over stages with room `rooms` (each ≥ 1, Σ ≥ layers): one layer each, the rest in
 * proportion to what room is left (largest remainders first), never past a stage's room.
 */
function distribute (layers: number, rooms: number[]): number[] {
  const k = rooms.length
  const counts = new Array<number>(k).fill(1)
  const rest = layers - k
  const spare = rooms.map(r => r - 1)
  const total = spare.reduce((a, b) => a + b, 0)
  const exact = spare.map(s => total > 0 ? rest * s / total : 0)
  let given = 0
  for (let i = 0; i < k; i++) {
    const n = Math.min(spare[i], Math.floor(exact[i]))
    counts[i] += n
    given += n
  }
  const order = [...Array(k).keys()].sort((a, b) => (exact[b] - Math.floor(exact[b])) - (exact[a] - Math.floor(exact[a])) || a - b)
  while (given < rest) {
    for (const i of order) {
      if (given >= rest) break
      if (counts[i] - 1 < spare[i]) { counts[i]++; given++ }
    }
  }
  return counts
}

/** Every ordering of `items` (Heap's algorithm). */
function * permutations<T> (items: T[]): Generator<T[]> {
  const a = [...items]
  const c = new Array<number>(a.length).fill(0)
  yield [...a]
  let i = 1
  while (i < a.length) {
    if (c[i] < i) {
      const j = i % 2 === 0 ? 0 : c[i]
      ;[a[j], a[i]] = [a[i], a[j]]
      yield [...a]
      c[i]++
      i = 1
    } else {
      c[i] = 0
      i++
    }
  }
}

/**
 * Decides whole, split or refused. Fitting means need ≤ free × (1 − headroom). Whole: the fitting peer with
 * the most free memory (ties: lowest name). Split: for k = 2, 3, … up to maxStages, the k peers with the most
 * free memory (if any k peers fit a split, these do: more memory never hurts a stage), the smallest k that
 * fits wins; its stage order is the one with the lowest total RTT between consecutive stages among orders
 * that fit (all orders for k ≤ PERMUTATION_LIMIT; above, nearest neighbour from each fitting first and
 * last stage); without RTTs, the first fitting order with the peers by free memory, most first. Unknown
 * RTTs count as the largest known one. Layers go one per stage, then in proportion to each stage's room.
 */
export function decidePlacement (need: DecisionNeed, candidatesIn: Candidate[], opts: DecideOptions = {}): Decision {
  const candidates = z.array(CandidateSchema).parse(candidatesIn)
  const headroom = opts.headroom ?? 0.1
  if (!(headroom >= 0 && headroom < 1)) throw new RangeError(`headroom must be in [0, 1), got ${headroom}`)
  const maxStages = opts.maxStages ?? 8
  if (!Number.isInteger(maxStages) || maxStages < 1) throw new RangeError(`maxStages must be a positive integer, got ${maxStages}`)
  const usable = (c: Candidate): number => c.freeBytes * (1 - headroom)
  const peers = [...candidates].sort(byFree)
  const freeBytes: FreeByPeer = {}
  for (const p of peers) freeBytes[p.name] = p.freeBytes
  const freeText = peers.length === 0 ? 'no candidate peers' : peers.map(p => `${p.name} ${formatBytes(p.freeBytes)} (${p.kind})`).join(', ')
  const keep = `keeping ${Math.round(headroom * 100)}% free`

  const whole = peers.find(p => need.totalBytes <= usable(p))
  if (whole != null) {
    return {
      kind: 'whole',
      peer: whole,
      needBytes: need.totalBytes,
      freeBytes,
      reason: `the whole model needs ${formatBytes(need.totalBytes)}; ${whole.name} has ${formatBytes(whole.freeBytes)} free (${whole.kind}), ` +
        `${formatBytes(usable(whole))} usable ${keep}, the most of any peer that fits it; free: ${freeText}`
    }
  }

  const rtt = opts.rttMs
  const known: number[] = []
  if (rtt != null) for (const a of peers) for (const b of peers) { const v = a !== b ? rtt(a.peerId, b.peerId) : undefined; if (v != null && Number.isFinite(v)) known.push(v) }
  const worst = known.length > 0 ? Math.max(...known) : 0
  const hop = (a: Candidate, b: Candidate): number => { const v = rtt?.(a.peerId, b.peerId); return v != null && Number.isFinite(v) ? v : worst }
  const pathRtt = (order: Candidate[]): number => { let t = 0; for (let i = 1; i < order.length; i++) t += hop(order[i - 1], order[i]); return t }
  /** rooms of an order, or null when it cannot hold the layers */
  const fits = (order: Candidate[]): number[] | null => {
    const k = order.length
    const rooms = order.map((p, i) => roomFor(need, usable(p), i, k))
    if (rooms.some(r => r < 1)) return null
    return rooms.reduce((a, b) => a + b, 0) >= need.layers ? rooms : null
  }

  const kMax = Math.min(maxStages, peers.length, need.layers)
  let best: { order: Candidate[], rooms: number[] } | null = null
  let chosenK = 0
  for (let k = 2; k <= kMax && best == null; k++) {
    const set = peers.slice(0, k)
    let bestRtt = Infinity
    const consider = (order: Candidate[]): void => {
      const rooms = fits(order)
      if (rooms == null) return
      const t = rtt != null ? pathRtt(order) : 0
      if (best == null || t < bestRtt) { best = { order, rooms }; bestRtt = t }
    }
    if (k <= PERMUTATION_LIMIT) {
      for (const order of permutations(set)) { consider(order); if (rtt == null && best != null) break }
    } else {
      // nearest neighbour between each fitting (first, last) pair
      for (const first of set) {
        for (const last of set) {
          if (first === last) continue
          const order = [first]
          const rest = set.filter(p => p !== first && p !== last)
          while (rest.length > 0) {
            const at = order[order.length - 1]
            rest.sort((a, b) => hop(at, a) - hop(at, b) || byFree(a, b))
            order.push(rest.shift() as Candidate)
          }
          order.push(last)
          consider(order)
        }
      }
    }
    if (best != null) chosenK = k
  }

  if (best != null) {
    const { order, rooms } = best as { order: Candidate[], rooms: number[] }
    const counts = distribute(need.layers, rooms)
    let at = 0
    const stages: Stage[] = order.map((peer, i) => {
      const layers: [number, number] = [at, at + counts[i]]
      at += counts[i]
      return { peer, layers, bytes: fixedOf(need, i, chosenK) + counts[i] * need.perLayerBytes }
    })
    const needBytes = stages.reduce((a, s) => a + s.bytes, 0)
    const total = rtt != null ? pathRtt(order) : undefined
    const stageText = stages.map((s, i) => `stage ${i} on ${s.peer.name}: layers ${s.layers[0]}–${s.layers[1] - 1}, ${formatBytes(s.bytes)} of ${formatBytes(s.peer.freeBytes)} free`).join('; ')
    return {
      kind: 'split',
      stages,
      needBytes,
      freeBytes,
      ...(total != null ? { rttMs: total } : {}),
      reason: `the whole model needs ${formatBytes(need.totalBytes)} and no peer has that much ${keep} (the most free: ${peers[0].name} ${formatBytes(peers[0].freeBytes)}); ` +
        `split into ${chosenK} stages, the fewest that fit (${need.layers} layers of ${formatBytes(need.perLayerBytes)}, ` +
        `${formatBytes(need.runtimeBytes)} runtime per stage, embedding ${formatBytes(need.embeddingBytes)} on the first, head ${formatBytes(need.headBytes)} on the last), ` +
        `${formatBytes(needBytes)} in all: ${stageText}` + (total != null ? `; ${total.toFixed(1)} ms RTT along the chain` : '') + `; free: ${freeText}`
    }
  }

  const totalUsable = peers.reduce((a, p) => a + usable(p), 0)
  const short = need.totalBytes - totalUsable
  const why = peers.length === 0
    ? 'there are no candidate peers'
    : short > 0
      ? `all ${peers.length} peers together have ${formatBytes(totalUsable)} usable ${keep}, ${formatBytes(short)} short`
      : `no split into at most ${Math.min(maxStages, peers.length, need.layers)} stages fits: each stage needs ${formatBytes(need.runtimeBytes)} of runtime ` +
        `plus ${formatBytes(need.perLayerBytes)} per layer (embedding ${formatBytes(need.embeddingBytes)} on the first, head ${formatBytes(need.headBytes)} on the last)` +
        (peers.length > maxStages ? ` and at most ${maxStages} stages are allowed` : '')
  return {
    kind: 'refused',
    needBytes: need.totalBytes,
    freeBytes,
    reason: `the whole model needs ${formatBytes(need.totalBytes)} (${need.layers} layers); ${why}; free: ${freeText}`
  }
}
