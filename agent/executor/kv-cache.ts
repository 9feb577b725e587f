/**
 * A batch's KV cache, kept by the engine with room to grow. onnxruntime-node copies every output of a run
 * into a new JavaScript buffer, and a decoder's present.* outputs are the whole cache: at batch 16 that copy
 * was 45% of a decode step (`npm run bench -- --only kvcopy`). Graphs that also give each layer's keys and
 * values of the run's own positions (present.N.key_step / value_step: the generated and converted graphs)
 * let an engine keep the cache itself: it feeds buffers that hold `cap` positions, the attention mask hiding
 * what is not filled yet, fetches every output but present.*, and writes the one new position per row into
 * its buffers. Graphs without those outputs (Hugging Face exports) keep the present.* way.
 *
 * Rows are left-padded: row r's `length` positions end at `end` (index `end` is the next to fill), so a
 * batch's rows stay aligned as they grow; a decode step's new position is at index `cap` of the run's
 * concatenation, and its mask is 1 on the row's positions and on `cap`.
 */
import ort from 'onnxruntime-node'
import type { Tensor } from 'onnxruntime-node'
import { io } from '../model/graph.ts'
import type { Feeds } from './feeds.ts'

/** The cache's inputs (past_key_values.N.key|value), and the heads and head size of each. */
export interface CacheLayout { names: string[], heads: number, headDim: number }

/** A cache of `rows` rows: buffers of `cap` positions, each row's positions ending at `end`. */
export interface CacheRows { past: Feeds, end: number, cap: number }

/** The output with a run's own keys or values for a cache input (past_key_values.3.key → present.3.key_step). */
export function stepOutputOf (pastName: string): string {
  const m = /^past_key_values\.(\d+)\.(key|value)$/.exec(pastName)
  if (m == null) throw new Error(`${pastName} is not a KV cache input`)
  return m[2] === 'key' ? io.stepKey(Number(m[1])) : io.stepValue(Number(m[1]))
}

/** Whether a session gives the step output of every cache input: its engine may then keep the cache itself. */
export function keepsCache (outputNames: readonly string[], layout: CacheLayout): boolean {
  return layout.names.length > 0 && layout.names.every(n => outputNames.includes(stepOutputOf(n)))
}

/** What a decode step fetches when the engine keeps the cache: every output but the whole cache (present.N.key|value). */
export function stepFetches (outputNames: readonly string[]): Record<string, null> {
  const f: Record<string, null> = {}
  for (const name of outputNames) if (!/^present\.\d+\.(key|value)$/.test(name)) f[name] = null
  return f
}

/** What a run that starts or extends a sequence's own cache fetches: every output but the step outputs (which would repeat present.*'s new positions). */
export function wholeFetches (outputNames: readonly string[]): Record<string, null> {
  const f: Record<string, null> = {}
  for (const name of outputNames) if (!/^present\.\d+\.(key|value)_step$/.test(name)) f[name] = null
  return f
}

/** Positions added beyond those filled when buffers are (re)made: a re-copy every 16 steps or 1/8 of the length, whichever is rarer. */
export function roomFor (end: number): number {
  return Math.max(16, end >> 3)
}

export function allocate (layout: CacheLayout, rows: number, cap: number): Feeds {
  const { heads: A, headDim: D } = layout
  const f: Feeds = {}
  for (const name of layout.names) f[name] = new ort.Tensor('float32', new Float32Array(rows * A * cap * D), [rows, A, cap, D])
  return f
}

/** Copies the last `length` positions of row `fromRow` of `from` into row `toRow` of `into`, ending at into.end. */
export function copyRow (layout: CacheLayout, from: CacheRows, fromRow: number, length: number, into: CacheRows, toRow: number): void {
  const { heads: A, headDim: D } = layout
  for (const name of layout.names) {
    const src = from.past[name].data as Float32Array
    const dst = into.past[name].data as Float32Array
    for (let a = 0; a < A; a++) {
      const at = ((fromRow * A + a) * from.cap + (from.end - length)) * D
      dst.set(src.subarray(at, at + length * D), ((toRow * A + a) * into.cap + (into.end - length)) * D)
    }
  }
}

/** A cache of `lengths.length` rows built from sources (each row's cache and its row there), with room to grow when `room`. */
export function gather (layout: CacheLayout, sources: Array<{ from: CacheRows, row: number }>, lengths: number[], room: boolean): CacheRows {
  const end = Math.max(...lengths)
  const cache: CacheRows = { past: {}, end, cap: room ? end + roomFor(end) : end }
  cache.past = allocate(layout, lengths.length, cache.cap)
  sources.forEach((s, i) => { copyRow(layout, s.from, s.row, lengths[i], cache, i) })
  return cache
}

/** The attention mask of a decode step over a cache with room: row r sees its `lengths[r]` positions ending at `end`, and the new one at `cap`. */
export function stepMask (lengths: number[], end: number, cap: number): Tensor {
  const W = cap + 1
  const mask = new BigInt64Array(lengths.length * W)
  lengths.forEach((len, r) => {
    mask.fill(1n, r * W + end - len, r * W + end)
    mask[r * W + cap] = 1n
  })
  return new ort.Tensor('int64', mask, [lengths.length, W])
}

/**
 * Writes a decode step's new position of every row (the step outputs, [rows, heads, 1, headDim]) at `end`,
 * moves `end` on, and makes the buffers larger when they are full (the rows keep their positions).
 */
export function appendStep (layout: CacheLayout, cache: CacheRows, out: Record<string, Tensor>, rows: number): void {
  const { heads: A, headDim: D } = layout
  if (cache.end >= cache.cap) throw new Error('the cache has no room for the step')
  for (const name of layout.names) {
    const step = out[stepOutputOf(name)]
    if (step == null || step.dims[2] !== 1) throw new Error(`the run gave no single-position ${stepOutputOf(name)}`)
    const src = step.data as Float32Array
    const dst = cache.past[name].data as Float32Array
    for (let r = 0; r < rows * A; r++) dst.set(src.subarray(r * D, (r + 1) * D), (r * cache.cap + cache.end) * D)
  }
  cache.end++
  if (cache.end === cache.cap) grow(layout, cache, rows)
}

/** Larger buffers for a full cache: every row's positions [0, end) copied as they are. */
function grow (layout: CacheLayout, cache: CacheRows, rows: number): void {
  const { heads: A, headDim: D } = layout
  const cap = cache.end + roomFor(cache.end)
  const past = allocate(layout, rows, cap)
  for (const name of layout.names) {
    const src = cache.past[name].data as Float32Array
    const dst = past[name].data as Float32Array
    for (let r = 0; r < rows * A; r++) dst.set(src.subarray(r * cache.cap * D, (r * cache.cap + cache.end) * D), r * cap * D)
  }
  cache.past = past
  cache.cap = cap
}
