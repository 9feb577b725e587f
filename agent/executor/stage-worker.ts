/**
 * A pipeline stage's worker thread: one ONNX Runtime session for a stage of
 * a split model, the KV cache of every sequence passing through it, and a
 * queue of steps. Single-token steps of different sequences that are waiting
 * together run as one batched step (caches left-padded to a common length,
 * the attention mask hiding the padding); prompts run one at a time.
 */
import { parentPort, workerData } from 'node:worker_threads'
import ort from 'onnxruntime-node'
import type { Tensor } from 'onnxruntime-node'
import { createSession } from './providers.ts'
import { int64 } from './feeds.ts'
import type { Feeds } from './feeds.ts'
import { SequenceSampler, skipDraws } from './sampling.ts'
import { Rng } from '../model/random.ts'
import { io } from '../model/graph.ts'
import { HIDDEN_IN, HIDDEN_OUT, stageFeeds, stagePresent, stageShape } from './stage-io.ts'
import type { StageShape } from './stage-io.ts'
import type { FromStageWorker, StageInfo, StageSampling, StageStepRequest, StageWorkerInit, ToStageWorker } from './stage-protocol.ts'

/** rng/sampler: the last stage's, made on the sequence's first sampled step from the sampling settings of its first step */
interface Cache { kv: Feeds | null, length: number, rng: Rng | null, sampler: SequenceSampler | null, sampling: StageSampling | null }

const port = parentPort
if (port == null) throw new Error('stage-worker.ts runs as a worker thread')
const init = workerData as StageWorkerInit
const send = (m: FromStageWorker, transfer: ArrayBuffer[] = []): void => { port.postMessage(m, transfer) }

let session: ort.InferenceSession
let shape: StageShape
let info: StageInfo
const caches = new Map<string, Cache>()
const queue: StageStepRequest[] = []
let closed = false
let wake: (() => void) | null = null

port.on('message', (m: ToStageWorker) => {
  if (m.type === 'step') queue.push(m)
  else if (m.type === 'drop') caches.delete(m.seq)
  else closed = true
  wake?.()
})

function cacheOf (seq: string): Cache {
  let c = caches.get(seq)
  if (c == null) { c = { kv: null, length: 0, rng: null, sampler: null, sampling: null }; caches.set(seq, c) }
  return c
}

/** Sends one sequence's output: the hidden state rows, or (last stage) the sampled token. */
function reply (req: StageStepRequest, cache: Cache, out: Record<string, Tensor>, row: number, rows: number): void {
  if (info.last) {
    if (req.sample === false) { send({ type: 'result', id: req.id, seqLen: req.seqLen, token: -1 }); return }
    const logits = out[io.logits].data as Float32Array
    const S = out[io.logits].dims[1]
    const start = (row * S + S - 1) * info.vocab
    const last = logits.subarray(start, start + info.vocab)
    const s = cache.sampling ?? req.sampling ?? { temperature: 0, topP: 1, seed: 0 }
    if (cache.sampler == null) {
      cache.rng = new Rng(s.seed)
      cache.sampler = new SequenceSampler(s, cache.rng, s.prompt)
      if (s.history != null && s.history.length > 0) {
        cache.sampler.resume(s.history)
        skipDraws(cache.rng, s, s.history.length)
      }
    }
    const copy = req.returnLogits === true ? Float32Array.from(last) : undefined
    const { token, logprob } = cache.sampler.next(last, req.mask ?? null)
    send({ type: 'result', id: req.id, seqLen: req.seqLen, token, logits: copy, ...(logprob != null ? { logprob } : {}) }, copy != null ? [copy.buffer as ArrayBuffer] : [])
    return
  }
  const h = out[HIDDEN_OUT].data as Float32Array
  const S = out[HIDDEN_OUT].dims[1]
  const size = S * info.hiddenSize
  const part = rows === 1 && h.byteOffset === 0 && h.length === size ? h : h.slice(row * size, (row + 1) * size)
  send({ type: 'result', id: req.id, hidden: part, seqLen: S }, [part.buffer as ArrayBuffer])
}

async function runOne (req: StageStepRequest): Promise<void> {
  const cache = cacheOf(req.seq)
  cache.sampling ??= req.sampling ?? null
  if (cache.length !== req.pastLen) throw new Error(`sequence ${req.seq}: ${cache.length} positions cached here, the request says ${req.pastLen}`)
  const x = info.first
    ? { tokens: req.tokens as number[] }
    : { hidden: new ort.Tensor('float32', req.hidden as Float32Array, [1, req.seqLen, info.hiddenSize]) }
  const out = await session.run(stageFeeds(shape, x, cache.length, cache.kv))
  cache.kv = stagePresent(shape, out)
  cache.length += req.seqLen
  reply(req, cache, out, 0, 1)
}

/** One batched single-token step for several sequences: caches left-padded to the longest. */
async function runBatch (reqs: StageStepRequest[]): Promise<void> {
  const B = reqs.length
  const cs = reqs.map(r => cacheOf(r.seq))
  cs.forEach((c, i) => { if (c.length !== reqs[i].pastLen) throw new Error(`sequence ${reqs[i].seq}: ${c.length} positions cached here, the request says ${reqs[i].pastLen}`) })
  const T = Math.max(...cs.map(c => c.length))
  const { heads: A, headDim: D } = shape
  const feeds: Feeds = {}
  if (info.first) feeds[io.inputIds] = int64(reqs.map(r => (r.tokens as number[])[0]), [B, 1])
  else {
    const h = new Float32Array(B * info.hiddenSize)
    reqs.forEach((r, i) => { h.set(r.hidden as Float32Array, i * info.hiddenSize) })
    feeds[HIDDEN_IN] = new ort.Tensor('float32', h, [B, 1, info.hiddenSize])
  }
  if (shape.inputs.includes(io.attentionMask)) {
    const mask = new Array<number>(B * (T + 1))
    cs.forEach((c, i) => { for (let t = 0; t <= T; t++) mask[i * (T + 1) + t] = t >= T - c.length ? 1 : 0 })
    feeds[io.attentionMask] = int64(mask, [B, T + 1])
  }
  if (shape.inputs.includes(io.positionIds)) feeds[io.positionIds] = int64(cs.map(c => c.length), [B, 1])
  for (const l of shape.layers) {
    for (const name of [io.pastKey(l), io.pastValue(l)]) {
      const dst = new Float32Array(B * A * T * D)
      cs.forEach((c, i) => {
        if (c.kv == null || c.length === 0) return
        const src = c.kv[name].data as Float32Array
        for (let a = 0; a < A; a++) dst.set(src.subarray(a * c.length * D, (a + 1) * c.length * D), ((i * A + a) * T + (T - c.length)) * D)
      })
      feeds[name] = new ort.Tensor('float32', dst, [B, A, T, D])
    }
  }
  const t0 = performance.now()
  const out = await session.run(feeds)
  send({ type: 'batch', size: B, ms: performance.now() - t0 })
  // each sequence takes its rows back out of the batched cache
  cs.forEach((c, i) => {
    const len = c.length + 1
    const kv: Feeds = {}
    for (const l of shape.layers) {
      for (const [pin, pout] of [[io.pastKey(l), io.presentKey(l)], [io.pastValue(l), io.presentValue(l)]]) {
        const src = out[pout].data as Float32Array
        const dst = new Float32Array(A * len * D)
        for (let a = 0; a < A; a++) {
          const from = ((i * A + a) * (T + 1) + (T + 1 - len)) * D
          dst.set(src.subarray(from, from + len * D), a * len * D)
        }
        kv[pin] = new ort.Tensor('float32', dst, [1, A, len, D])
      }
    }
    c.kv = kv
    c.length = len
    reply(reqs[i], c, out, i, B)
  })
}

async function loop (): Promise<void> {
  while (!closed) {
    if (queue.length === 0) {
      await new Promise<void>(resolve => { wake = resolve })
      wake = null
      continue
    }
    // single-token steps of distinct sequences that have a cache go together; anything else alone.
    // A pipeline's stage takes at most its share of the sequences it holds (see microBatches).
    const groups = Math.max(1, ...queue.map(r => r.microBatches ?? 1))
    const cap = Math.min(init.maxBatch, Math.max(1, Math.ceil(caches.size / groups)))
    const batch: StageStepRequest[] = []
    const rest: StageStepRequest[] = []
    for (const r of queue.splice(0)) {
      const batchable = r.seqLen === 1 && (caches.get(r.seq)?.length ?? 0) > 0 && !batch.some(b => b.seq === r.seq) && batch.length < cap
      ;(batchable ? batch : rest).push(r)
    }
    queue.unshift(...rest.slice(1))
    const single = rest[0]
    try {
      if (batch.length === 1) await runOne(batch[0])
      else if (batch.length > 1) await runBatch(batch)
    } catch (err) {
      for (const r of batch) send({ type: 'error', id: r.id, error: (err as Error).message })
    }
    if (single != null) {
      try { await runOne(single) } catch (err) { send({ type: 'error', id: single.id, error: (err as Error).message }) }
    }
    await new Promise(resolve => setImmediate(resolve))
  }
  await session.release().catch(() => {})
  send({ type: 'closed' })
}

try {
  const t0 = performance.now()
  const created = await createSession(init.modelPath, init.order, { intraOpThreads: init.intraOpThreads })
  session = created.session
  shape = stageShape(session)
  const hiddenMeta = (session.inputMetadata as unknown as Array<{ name: string, shape?: Array<number | string> }>).find(m => m.name === HIDDEN_IN)
  const logitsMeta = (session.outputMetadata as unknown as Array<{ name: string, shape?: Array<number | string> }>).find(m => m.name === io.logits)
  const hiddenOutMeta = (session.outputMetadata as unknown as Array<{ name: string, shape?: Array<number | string> }>).find(m => m.name === HIDDEN_OUT)
  const hiddenSize = shape.heads * shape.headDim
  info = {
    first: shape.first,
    last: shape.last,
    layers: shape.layers,
    hiddenSize: typeof hiddenMeta?.shape?.[2] === 'number' ? hiddenMeta.shape[2] : typeof hiddenOutMeta?.shape?.[2] === 'number' ? hiddenOutMeta.shape[2] : hiddenSize,
    vocab: typeof logitsMeta?.shape?.[2] === 'number' ? logitsMeta.shape[2] : 0
  }
  send({ type: 'ready', provider: created.provider, info, loadMs: performance.now() - t0 })
  await loop()
} catch (err) {
  send({ type: 'failed', error: (err as Error).message })
}
