/**
 * A pipeline stage's worker thread: one ONNX Runtime session for a stage of
 * a split model, the KV cache of every sequence passing through it, and a
 * queue of steps. Single-token steps of different sequences that are waiting
 * together run as one batched step (caches left-padded to a common length,
 * the attention mask hiding the padding); prompts run one at a time, before
 * the decoding batch (as much as prefill.ts's PromptBudget allows a turn).
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
import { appendStep, gather, keepsCache, stepFetches, stepMask, wholeFetches } from './kv-cache.ts'
import type { CacheLayout, CacheRows } from './kv-cache.ts'
import type { StageShape } from './stage-io.ts'
import { PromptBudget } from './prefill.ts'
import type { FromStageWorker, StageInfo, StageSampling, StageStepRequest, StageWorkerInit, ToStageWorker } from './stage-protocol.ts'

/**
 * A batched cache: one [B, heads, cap, headDim] tensor per cache input, row i holding members[i]'s
 * positions left-padded to end at `end` (kv-cache.ts; with room to grow when the stage's graph gives each
 * step's keys and values). Sequences that decode together step after step (a pipeline's micro-batch)
 * keep theirs here and feed it back as is; it is rebuilt only when the set changes.
 */
interface Group { members: string[], cache: CacheRows }

/**
 * A sequence's cache here: its own (kv, after a prompt or a lone step) or its row in a group. rng/sampler:
 * the last stage's, made on the sequence's first sampled step from the sampling settings of its first step.
 */
interface Cache {
  kv: Feeds | null
  group: Group | null
  length: number
  /** its micro-batch (StageStepRequest.group) */
  mb: number | null
  /** its last step was a prompt chunk with more to come (not sampled): its next step is not a decoding one */
  midPrompt: boolean
  rng: Rng | null
  sampler: SequenceSampler | null
  sampling: StageSampling | null
}

const port = parentPort
if (port == null) throw new Error('stage-worker.ts runs as a worker thread')
const init = workerData as StageWorkerInit
/** StageWorkerInit.handoff: set by the main thread once it has handed a run's results on (CPU sessions only: a GPU's runs leave the core to it) */
let handoff = init.handoff != null ? new Int32Array(init.handoff) : null
/** the longest a run's results hold the next run back (a main thread busy elsewhere) */
const HANDOFF_WAIT_MS = 2
/** the number of the last results message posted with a hand-off */
let handoffCount = 0
const send = (m: FromStageWorker, transfer: ArrayBuffer[] = []): void => { port.postMessage(m, transfer) }

/**
 * Results of one run, posted together when the run is done (flushResults): one message, so the main
 * thread hands the whole micro-batch on in one turn and its frames leave in one write, instead of
 * trickling out and reaching the next stage as batches of one or two.
 */
const outbox: Array<Extract<FromStageWorker, { type: 'result' }>> = []
const outboxTransfer: ArrayBuffer[] = []
const answer = (m: Extract<FromStageWorker, { type: 'result' }>, transfer: ArrayBuffer[] = []): void => { outbox.push(m); outboxTransfer.push(...transfer) }
function flushResults (): void {
  if (outbox.length === 0) return
  const items = outbox.splice(0)
  if (handoff == null) {
    send(items.length === 1 ? items[0] : { type: 'results', items }, outboxTransfer.splice(0))
    return
  }
  // where this thread and the main thread share a core, the main thread hands the results on before the
  // next run takes the core. Usually it has already (the scheduler switched to it at the post); measured on
  // two pinned agents, without the wait 9–12% of results reached the main thread over 1 ms late (p99 ~4.8
  // ms: it waited for a slice of a core this thread held), with it 2.5–4% (docs/decisions.md). Numbered, so
  // a late hand-off of earlier results (one whose wait timed out) does not end this wait.
  const n = handoffCount = (handoffCount + 1) | 0
  send({ type: 'results', items, handoff: n }, outboxTransfer.splice(0))
  const deadline = performance.now() + HANDOFF_WAIT_MS
  for (let seen = Atomics.load(handoff, 0); seen !== n; seen = Atomics.load(handoff, 0)) {
    const left = deadline - performance.now()
    if (left <= 0) break
    Atomics.wait(handoff, 0, seen, left)
  }
}

let session: ort.InferenceSession
let shape: StageShape
let layout: CacheLayout
/** the stage's graph gives each step's own keys and values (and reads the attention mask): batched caches are kept here, with room to grow */
let inPlace = false
let fetches: Record<string, null> = {}
/** every output but the step outputs: what a lone run (a prompt, a chunk) fetches */
let wholeOutputs: Record<string, null> = {}
let info: StageInfo
const caches = new Map<string, Cache>()
const queue: StageStepRequest[] = []
let closed = false
/** how long the last batched decode run took (bounds the wait for a micro-batch's stragglers) */
let lastRunMs = 0
/** how much prompt work a turn takes before its decoding batch (prefill.ts); the driver cuts the chunks */
const budget = new PromptBudget(undefined, init.promptMsFirst)
let wake: (() => void) | null = null

port.on('message', (m: ToStageWorker) => {
  if (m.type === 'step') queue.push(m)
  else if (m.type === 'drop') caches.delete(m.seq) // a group's rows of a dropped sequence go with the group
  else closed = true
  wake?.()
})

/** Resolves when the next message arrives, or after `ms` (a straggler's wait without polling). */
async function nextMessage (ms: number): Promise<void> {
  await new Promise<void>(resolve => {
    const timer = setTimeout(() => { wake = null; resolve() }, Math.max(0, ms))
    wake = () => { clearTimeout(timer); wake = null; resolve() }
  })
}

function cacheOf (seq: string): Cache {
  let c = caches.get(seq)
  if (c == null) { c = { kv: null, group: null, length: 0, mb: null, midPrompt: false, rng: null, sampler: null, sampling: null }; caches.set(seq, c) }
  return c
}

/** Where a sequence's positions are now: its own cache, or its row in its group. */
function sourceOf (seq: string, c: Cache): { from: CacheRows, row: number } {
  if (c.group != null) return { from: c.group.cache, row: c.group.members.indexOf(seq) }
  return { from: { past: c.kv as Feeds, end: c.length, cap: c.length }, row: 0 }
}

/** A sequence in a group takes its positions out into a cache of its own (to run alone: a prompt chunk, a lone step). */
function ownCache (seq: string, c: Cache): void {
  if (c.group == null) return
  c.kv = gather(layout, [sourceOf(seq, c)], [c.length], false).past
  c.group = null
}

/** Sends one sequence's output: the hidden state rows, or (last stage) the sampled token. */
function reply (req: StageStepRequest, cache: Cache, out: Record<string, Tensor>, row: number, rows: number): void {
  if (info.last) {
    if (req.sample === false) { answer({ type: 'result', id: req.id, seqLen: req.seqLen, token: -1 }); return }
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
    answer({ type: 'result', id: req.id, seqLen: req.seqLen, token, logits: copy, ...(logprob != null ? { logprob } : {}) }, copy != null ? [copy.buffer as ArrayBuffer] : [])
    return
  }
  const h = out[HIDDEN_OUT].data as Float32Array
  const S = out[HIDDEN_OUT].dims[1]
  const size = S * info.hiddenSize
  const part = rows === 1 && h.byteOffset === 0 && h.length === size ? h : h.slice(row * size, (row + 1) * size)
  answer({ type: 'result', id: req.id, hidden: part, seqLen: S }, [part.buffer as ArrayBuffer])
}

async function runOne (req: StageStepRequest): Promise<void> {
  const cache = cacheOf(req.seq)
  cache.mb = req.group ?? null
  cache.midPrompt = req.seqLen > 1 && req.sample === false
  ownCache(req.seq, cache)
  cache.sampling ??= req.sampling ?? null
  if (cache.length !== req.pastLen) throw new Error(`sequence ${req.seq}: ${cache.length} positions cached here, the request says ${req.pastLen}`)
  const x = info.first
    ? { tokens: req.tokens as number[] }
    : { hidden: new ort.Tensor('float32', req.hidden as Float32Array, [1, req.seqLen, info.hiddenSize]) }
  const t0 = performance.now()
  const out = await session.run(stageFeeds(shape, x, cache.length, cache.kv), wholeOutputs)
  const ms = performance.now() - t0
  if (req.seqLen > 1) budget.observe(req.seqLen, ms)
  send({ type: 'batch', size: 1, ms, rows: req.seqLen })
  cache.kv = stagePresent(shape, out)
  cache.length += req.seqLen
  reply(req, cache, out, 0, 1)
}

/**
 * One batched single-token step for several sequences. The same sequences as last time (a
 * micro-batch going round the ring) reuse their group's cache as is; otherwise a group is built from
 * the members' caches, left-padded to the longest.
 */
async function runBatch (reqs: StageStepRequest[]): Promise<void> {
  reqs.sort((a, b) => a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0)
  const B = reqs.length
  const cs = reqs.map(r => cacheOf(r.seq))
  cs.forEach((c, i) => { c.mb = reqs[i].group ?? null })
  cs.forEach((c, i) => { if (c.length !== reqs[i].pastLen) throw new Error(`sequence ${reqs[i].seq}: ${c.length} positions cached here, the request says ${reqs[i].pastLen}`) })
  const prev = cs[0].group
  let g: Group
  if (prev != null && prev.members.length === B && cs.every((c, i) => c.group === prev && prev.members[i] === reqs[i].seq)) {
    g = prev
  } else {
    g = { members: reqs.map(r => r.seq), cache: gather(layout, reqs.map((r, i) => sourceOf(r.seq, cs[i])), cs.map(c => c.length), inPlace) }
    for (const c of cs) { c.group = g; c.kv = null }
  }
  const { end: T, cap } = g.cache
  const lengths = cs.map(c => c.length)
  const feeds: Feeds = { ...g.cache.past }
  if (info.first) feeds[io.inputIds] = int64(reqs.map(r => (r.tokens as number[])[0]), [B, 1])
  else {
    const h = new Float32Array(B * info.hiddenSize)
    reqs.forEach((r, i) => { h.set(r.hidden as Float32Array, i * info.hiddenSize) })
    feeds[HIDDEN_IN] = new ort.Tensor('float32', h, [B, 1, info.hiddenSize])
  }
  if (inPlace) feeds[io.attentionMask] = stepMask(lengths, T, cap)
  else if (shape.inputs.includes(io.attentionMask)) {
    const mask = new Array<number>(B * (T + 1))
    lengths.forEach((len, i) => { for (let t = 0; t <= T; t++) mask[i * (T + 1) + t] = t >= T - len ? 1 : 0 })
    feeds[io.attentionMask] = int64(mask, [B, T + 1])
  }
  if (shape.inputs.includes(io.positionIds)) feeds[io.positionIds] = int64(lengths, [B, 1])
  const t0 = performance.now()
  const out = await session.run(feeds, inPlace ? fetches : wholeOutputs)
  lastRunMs = performance.now() - t0
  // the results leave first: the next stage (or the driver) waits for them, while the bookkeeping below
  // (the new position written into the cache, now and then its buffers made larger; the metrics) does not
  // hold anyone up, and the worker usually waits for its next micro-batch anyway
  cs.forEach((c, i) => { reply(reqs[i], c, out, i, B) })
  flushResults()
  try {
    if (inPlace) appendStep(layout, g.cache, out, B)
    else g.cache = { past: stagePresent(shape, out), end: T + 1, cap: T + 1 }
    for (const c of cs) c.length++
  } catch {
    // answered, but their caches here are not whole: their next steps fail (the positions do not match) and migrate
    for (const r of reqs) caches.delete(r.seq)
  }
  send({ type: 'batch', size: B, ms: lastRunMs, rows: 1 })
}

async function loop (): Promise<void> {
  while (!closed) {
    if (queue.length === 0) {
      await new Promise<void>(resolve => { wake = resolve })
      wake = null
      // the steps that come with this one (a batch's results fan out as several messages at once) are
      // let in before the batch is formed: the wake-up runs after the first message only
      await new Promise(resolve => setImmediate(resolve))
      continue
    }
    // single-token steps of distinct sequences that have a cache go together (of one micro-batch, when
    // their pipeline has several); anything else (a prompt, a chunk of one) runs alone
    const batchable = (r: StageStepRequest, taken: StageStepRequest[]): boolean => r.seqLen === 1 && (caches.get(r.seq)?.length ?? 0) > 0 && !taken.some(b => b.seq === r.seq)
    // prompts first, as the whole model's engine takes them:
    // a burst of requests then decodes in full micro-batches and ends together, instead of each prompt
    // waiting a decoding run behind the one before and the burst's last streams decoding in thin batches
    // at its end. As much as the budget allows a turn (two chunks; while decoding steps wait, what fits
    // PROMPT_MS_FIRST, at least one), so a crowd of long prompts' chunks holds the decoding sequences up
    // for a chunk or two at a time, not for all of them.
    // Whether streams decode is taken at the turn's start, as the whole model's engine does: sequences whose
    // prompt went through here (their decoding steps are as often at another stage of the ring as here).
    // A step is the driver's chunk (PREFILL_CHUNK), so while streams decode a turn runs one, or more if they fit.
    const t0 = performance.now()
    const decoding = [...caches.values()].some(c => c.length > 0 && !c.midPrompt)
    let promptRows = 0
    for (let i = queue.findIndex(r => !batchable(r, [])); i >= 0 && !closed; i = queue.findIndex(r => !batchable(r, []))) {
      if (!budget.more(promptRows, performance.now() - t0, queue[i].seqLen, decoding)) break
      const [one] = queue.splice(i, 1)
      promptRows += one.seqLen
      try { await runOne(one) } catch (err) { send({ type: 'error', id: one.id, error: (err as Error).message }) }
      flushResults()
      // the prompts that arrived during this one's run join the queue before the next is picked
      await new Promise(resolve => setImmediate(resolve))
    }
    if (closed) break
    const first = queue.find(r => batchable(r, []))
    const mb = first?.group ?? null
    if (mb != null && lastRunMs > 0) {
      // the rest of this micro-batch travels together and is usually a moment behind (or just posted):
      // wait for it, at most half a run, rather than run a part of the group and split it for good
      // (a sequence between the chunks of its prompt is not coming: its next step is the next chunk)
      const members = [...caches.values()].filter(c => c.mb === mb && c.length > 0 && !c.midPrompt).length
      const deadline = performance.now() + Math.min(10, lastRunMs / 2)
      while (!closed && queue.filter(r => r.group === mb && batchable(r, [])).length < members && performance.now() < deadline) {
        await nextMessage(deadline - performance.now())
      }
    }
    const batch: StageStepRequest[] = []
    const rest: StageStepRequest[] = []
    for (const r of queue.splice(0)) {
      const ok = batchable(r, batch) && batch.length < init.maxBatch && (r.group ?? null) === mb
      ;(ok ? batch : rest).push(r)
    }
    // the steps of other micro-batches (and prompts beyond this turn's share) wait for the next turn, in their order
    queue.unshift(...rest)
    try {
      // a lone decode step runs as a batch of one where the cache is kept here (no present.* to take back)
      if (batch.length === 1 && !inPlace) await runOne(batch[0])
      else if (batch.length > 0) await runBatch(batch)
    } catch (err) {
      outbox.length = 0
      outboxTransfer.length = 0
      for (const r of batch) send({ type: 'error', id: r.id, error: (err as Error).message })
    }
    flushResults()
    await new Promise(resolve => setImmediate(resolve))
  }
  await session.release().catch(() => {})
  send({ type: 'closed' })
}

try {
  const t0 = performance.now()
  const created = await createSession(init.modelPath, init.order, { intraOpThreads: init.intraOpThreads })
  session = created.session
  if (created.provider.name !== 'cpu') handoff = null
  shape = stageShape(session)
  layout = { names: shape.layers.flatMap(l => [io.pastKey(l), io.pastValue(l)]), heads: shape.heads, headDim: shape.headDim }
  inPlace = init.keepCache !== false && shape.inputs.includes(io.attentionMask) && keepsCache(session.outputNames, layout)
  fetches = stepFetches(session.outputNames)
  wholeOutputs = wholeFetches(session.outputNames)
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
  send({ type: 'ready', provider: created.provider, info, loadMs: performance.now() - t0, keepsCache: inPlace })
  await loop()
} catch (err) {
  send({ type: 'failed', error: (err as Error).message })
}
