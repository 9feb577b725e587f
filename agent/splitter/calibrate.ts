/**
 * Step costs measured, for balancing a split (the splitter's default `cost: "measured"`).
 *
 * Balancing by the bytes a decode step reads (`parameterBytes(ix, { perStep: true })`) is right when every
 * weight costs the same per byte, as float weights do. Quantized models break that: their kernels differ in
 * speed per byte. SmolLM2-135M Q4_1 converted with q8 weights keeps its 4-bit layers in MatMulNBits with
 * float activations and its 8-bit tied LM head in an int8 kernel; by bytes the head weighs 6.7 layers, so
 * the 2-stage cut gave stage 0 layers 0–20 (28.7 ms per batch-4 decode step on one core) and stage 1 layers
 * 21–29 and the head (14.8 ms): the pipeline ran at the pace of a stage doing two thirds of the work.
 *
 * So the splitter times the parts of the model it is cutting, on this machine's CPU: four probe stages, cut
 * as [0,1], [1,2], [2,L−1], [L−1,L], each run for a batched decode step (`batch` rows, `past` positions of
 * cache), taking turns over several rounds (the median of each). A linear model of a step (a fixed cost per
 * run, plus a cost per byte of layer weights) gives from them what the embeddings (before layer 0) and the
 * final norm and LM head (after the last layer) cost, in layer-weight bytes of the same speed. The layers
 * keep their bytes, and pre and post are rounded to a quarter of a median layer: the same file then cuts the
 * same way from run to run (timing noise does not move a cut), and a model whose parts cost alike per byte
 * cuts as it did by bytes.
 */
import ort from 'onnxruntime-node'
import type { Tensor } from 'onnxruntime-node'
import { buildStages, indexGraph, parameterBytes } from './onnx-split.ts'
import type { StepCosts } from './onnx-split.ts'
import { encodeModel } from '../model/onnx.ts'
import type { ModelProto } from '../model/onnx.ts'
import { io } from '../model/graph.ts'
import { int64 } from '../executor/feeds.ts'
import { HIDDEN_IN, stageShape } from '../executor/stage-io.ts'

/** Median milliseconds of one decode step through each probe stage: [0,1], [1,2], [2,L−1], [L−1,L]. */
export interface ProbeTimes { first: number, second: number, middle: number, last: number }

export interface Calibration {
  /** layer bytes as read per step, pre and post measured (in bytes of layer weights of the same speed) */
  costs: StepCosts
  /** what the bytes alone say (for the record) */
  bytes: StepCosts
  times: ProbeTimes
  /** fitted: milliseconds per MB of layer weights, and per run */
  msPerMB: number
  overheadMs: number
  batch: number
  past: number
}

/** Models with fewer layers than this are balanced by bytes (the probes need two layers in the middle one). */
export const MIN_CALIBRATED_LAYERS = 5

/**
 * The costs from the probes' times (pure: ./calibrate.ts's arithmetic, tested on its own). Fits the time
 * per byte of layer weights from the two middle probes (their difference cancels the fixed cost of a run),
 * the fixed cost from [1,2], and what remains of [0,1] and [L−1,L] is the cost of pre and post. Null when
 * the times do not fit (a middle probe no slower than one layer): the caller balances by bytes.
 */
export function costsFromProbes (bytes: StepCosts, t: ProbeTimes): { costs: StepCosts, msPerByte: number, overheadMs: number } | null {
  const L = bytes.perLayer.length
  if (L < MIN_CALIBRATED_LAYERS) return null
  const b = bytes.perLayer
  const middleBytes = b.slice(2, L - 1).reduce((s, x) => s + x, 0)
  const msPerByte = (t.middle - t.second) / (middleBytes - b[1])
  if (!(msPerByte > 0) || !Number.isFinite(msPerByte)) return null
  const overheadMs = Math.max(0, t.second - msPerByte * b[1])
  const preMs = Math.max(0, t.first - overheadMs - msPerByte * b[0])
  const postMs = Math.max(0, t.last - overheadMs - msPerByte * b[L - 1])
  const quarter = layerUnit(bytes) / 4
  const round = (ms: number): number => quarter > 0 ? Math.round(ms / msPerByte / quarter) * quarter : ms / msPerByte
  return { costs: { perLayer: [...b], pre: round(preMs), post: round(postMs) }, msPerByte, overheadMs }
}

/** The median of `xs` (the upper middle one of an even count). */
function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[s.length >> 1]
}

/** A median layer's cost: pre and post are rounded to a quarter of it, and reported in it. */
export function layerUnit (c: StepCosts): number {
  return median(c.perLayer)
}

/** A part's cost in median layers, to two decimals. */
export function inLayers (c: StepCosts, x: number): number {
  const unit = layerUnit(c)
  return unit > 0 ? Math.round(100 * x / unit) / 100 : 0
}

/** Feeds for a batched single-token decode step through a probe stage: `batch` rows, `past` positions cached. */
function probeFeeds (session: ort.InferenceSession, batch: number, past: number): Record<string, Tensor> {
  const shape = stageShape(session)
  const feeds: Record<string, Tensor> = {}
  if (shape.first) feeds[io.inputIds] = int64(new Array<number>(batch).fill(1), [batch, 1])
  else {
    const meta = (session.inputMetadata as unknown as Array<{ name: string, shape?: Array<number | string> }>).find(m => m.name === HIDDEN_IN)
    const hidden = meta?.shape?.[2]
    if (typeof hidden !== 'number') throw new Error(`the probe stage does not declare its hidden size (${String(hidden)})`)
    feeds[HIDDEN_IN] = new ort.Tensor('float32', new Float32Array(batch * hidden).fill(0.01), [batch, 1, hidden])
  }
  if (shape.inputs.includes(io.attentionMask)) feeds[io.attentionMask] = int64(new Array<number>(batch * (past + 1)).fill(1), [batch, past + 1])
  if (shape.inputs.includes(io.positionIds)) feeds[io.positionIds] = int64(new Array<number>(batch).fill(past), [batch, 1])
  const kv = batch * shape.heads * past * shape.headDim
  for (const l of shape.layers) {
    feeds[io.pastKey(l)] = new ort.Tensor('float32', new Float32Array(kv).fill(0.01), [batch, shape.heads, past, shape.headDim])
    feeds[io.pastValue(l)] = new ort.Tensor('float32', new Float32Array(kv).fill(0.01), [batch, shape.heads, past, shape.headDim])
  }
  return feeds
}

/**
 * Times the probe stages of `model` and returns the measured costs, or null when the model has too few
 * layers or its times do not fit (the caller then balances by bytes). `batch`: the rows of a stage's decode
 * step (a micro-batch); `past`: the cache length; `rounds`: timed runs of each probe.
 */
export async function calibrate (model: ModelProto, opts: { batch?: number, past?: number, rounds?: number, signal?: AbortSignal } = {}): Promise<Calibration | null> {
  const ix = indexGraph(model)
  const L = ix.layers
  if (L < MIN_CALIBRATED_LAYERS) return null
  const batch = Math.max(1, Math.floor(opts.batch ?? 4))
  const past = Math.max(1, Math.floor(opts.past ?? 128))
  const rounds = Math.max(3, Math.floor(opts.rounds ?? 7))
  const bytes = parameterBytes(ix, { perStep: true })
  const probes = buildStages(model, [[0, 1], [1, 2], [2, L - 1], [L - 1, L]])
  const sessionOpts: ort.InferenceSession.SessionOptions = { executionProviders: ['cpu'], graphOptimizationLevel: 'all', intraOpNumThreads: 1, interOpNumThreads: 1 }
  const sessions: ort.InferenceSession[] = []
  try {
    for (const p of probes) sessions.push(await ort.InferenceSession.create(encodeModel(p.model), sessionOpts))
    const runs = sessions.map(s => {
      const feeds = probeFeeds(s, batch, past)
      // what a stage that keeps its cache fetches: everything but the whole present.* (where step outputs exist)
      const keeps = s.outputNames.some(n => /_step$/.test(n))
      const fetches = keeps ? s.outputNames.filter(n => !/^present\.\d+\.(key|value)$/.test(n)) : [...s.outputNames]
      return async (): Promise<number> => {
        const t0 = performance.now()
        await s.run(feeds, fetches)
        return performance.now() - t0
      }
    })
    for (const run of runs) { await run(); await run() }
    const times: number[][] = runs.map(() => [])
    for (let r = 0; r < rounds; r++) {
      opts.signal?.throwIfAborted()
      for (const [i, run] of runs.entries()) times[i].push(await run())
    }
    const t: ProbeTimes = { first: median(times[0]), second: median(times[1]), middle: median(times[2]), last: median(times[3]) }
    const fit = costsFromProbes(bytes, t)
    if (fit == null) return null
    return { costs: fit.costs, bytes, times: t, msPerMB: fit.msPerByte * 1e6, overheadMs: fit.overheadMs, batch, past }
  } finally {
    for (const s of sessions) await s.release().catch(() => {})
  }
}
