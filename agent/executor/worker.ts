/**
 * The executor's worker thread: owns one ONNX Runtime session (its run()
 * would otherwise block the agent's event loop), the KV cache of every
 * sequence, and the decode loop. Each turn of the loop runs waiting prompts
 * first, one at a time and in chunks (as much as prefill.ts's PromptBudget
 * allows a turn), then one step of the running sequences, decoded together
 * in one batched run, their
 * caches left-padded to a common length (the attention mask hides the
 * padding). The batched cache is reused step to step and only rebuilt when
 * the set of running sequences changes; when the graph gives each step's own
 * keys and values, the worker keeps that cache itself with room to grow
 * instead of taking the whole present.* back from every run (kv-cache.ts).
 */
import { parentPort, workerData } from 'node:worker_threads'
import ort from 'onnxruntime-node'
import type { Tensor } from 'onnxruntime-node'
import { createSession } from './providers.ts'
import { decoderShape, emptyPast, int64, presentAsPast, sequenceFeeds } from './feeds.ts'
import type { DecoderShape, Feeds } from './feeds.ts'
import { SequenceSampler, sampleToken, skipDraws } from './sampling.ts'
import type { TokenLogprob } from './sampling.ts'
import { JsonConstraint, grammarFor, maskCount, vocabFor } from './json-constraint.ts'
import { Rng } from '../model/random.ts'
import { io } from '../model/graph.ts'
import { appendStep, gather, keepsCache, stepFetches, stepMask, wholeFetches } from './kv-cache.ts'
import type { CacheLayout, CacheRows } from './kv-cache.ts'
import type { FinishReason, FromWorker, GenerateRequest, ToWorker, WorkerInit } from './protocol.ts'
import { PromptBudget } from './prefill.ts'

interface Seq {
  req: GenerateRequest
  rng: Rng
  /** penalties, logprobs, the constraint's mask (null: sample the raw row, as always) */
  sampler: SequenceSampler | null
  constraint: JsonConstraint | null
  stop: Set<number>
  generated: number
  /** tokens in the cache (while its prompt goes through in chunks: the prompt's tokens so far) */
  length: number
  /** the token to feed next */
  last: number
  /** own cache ([1, heads, length, headDim] per layer) while not in the batch group */
  kv: Feeds | null
  cancelled: boolean
}

/** The running sequences' batched cache: row i is members[i]'s. */
interface Group { members: Seq[], cache: CacheRows }

const port = parentPort
if (port == null) throw new Error('worker.ts runs as a worker thread')
const init = workerData as WorkerInit
const send = (m: FromWorker): void => { port.postMessage(m) }

let session: ort.InferenceSession
let shape: DecoderShape
let layout: CacheLayout
/** the graph gives each step's own keys and values: the batched cache is kept here, with room to grow */
let inPlace = false
let fetches: Record<string, null> = {}
/** every output but the step outputs: what a prefill (and a step without a kept cache) fetches */
let wholeOutputs: Record<string, null> = {}
/** sequences whose prompt has not started */
const pending: Seq[] = []
/** the sequence whose prompt has started and not finished (chunks to go): it goes on before a new one starts */
let inPrompt: Seq | null = null
let running: Seq[] = []
let group: Group | null = null
const byId = new Map<number, Seq>()
let closed = false
const budget = new PromptBudget(init.prefillChunk, init.promptMsFirst)
let wake: (() => void) | null = null
/** token texts of the vocabularies constrained sequences use, by key */
const vocabTexts = new Map<string, { size: number, texts: ReadonlyArray<string | null> }>()

port.on('message', (m: ToWorker) => {
  if (m.type === 'generate') {
    const rng = new Rng(m.seed)
    const seq: Seq = {
      req: m, rng, sampler: null, constraint: null, stop: new Set(m.stopTokens), generated: 0, length: 0, last: -1, kv: null, cancelled: false
    }
    byId.set(m.id, seq)
    try {
      const sampler = new SequenceSampler(m, rng, m.prompt)
      if (!sampler.plain || m.constraint != null) seq.sampler = sampler
      if (m.constraint != null) {
        const c = m.constraint
        const v = vocabTexts.get(c.vocab.key)
        if (v == null) throw new Error(`unknown vocabulary ${c.vocab.key}`)
        seq.constraint = new JsonConstraint(grammarFor(c.vocab.key, c.grammarKey, c.grammar), vocabFor(c.vocab.key, () => v.texts, v.size), m.stopTokens)
      }
      const resumed = m.resumed ?? 0
      if (resumed > 0) {
        // a migrated sequence: its prompt ends with the output generated so far elsewhere
        if (!Number.isInteger(resumed) || resumed > m.prompt.length) throw new Error(`resumed (${resumed}) must be a count of the prompt's last tokens`)
        const generated = m.prompt.slice(m.prompt.length - resumed)
        sampler.resume(generated)
        skipDraws(rng, m, resumed)
        for (const t of generated) {
          if (seq.constraint != null && !seq.constraint.accept(t)) throw new Error(`constrained decoding: resumed token ${t} does not continue the JSON`)
        }
      }
    } catch (err) {
      finish(seq, 'error', (err as Error).message)
      flushDone()
      return
    }
    pending.push(seq)
  } else if (m.type === 'vocab') {
    vocabTexts.set(m.key, { size: m.size, texts: m.texts })
  } else if (m.type === 'cancel') {
    const s = byId.get(m.id)
    if (s != null) s.cancelled = true
  } else if (m.type === 'close') {
    closed = true
  }
  wake?.()
})

/** 'done' messages wait until the step message with the sequence's last tokens has gone out. */
const doneQueue: FromWorker[] = []

function finish (s: Seq, reason: FinishReason, error?: string): void {
  byId.delete(s.req.id)
  s.kv = null
  doneQueue.push({ type: 'done', id: s.req.id, reason, error, promptTokens: s.req.prompt.length, completionTokens: s.generated })
}

function flushDone (): void {
  for (const m of doneQueue.splice(0)) send(m)
}

/** The step's output: tokens by sequence, and the logprobs of those that asked. */
interface StepOut { tokens: Array<[number, number]>, logprobs: Array<[number, TokenLogprob]> }
const stepOut = (): StepOut => ({ tokens: [], logprobs: [] })

/** Picks a sequence's next token from its logits row: the plain sampler, or penalties/mask/logprobs. */
function pick (s: Seq, row: Float32Array): { token: number, logprob?: TokenLogprob } | null {
  if (s.sampler == null) return { token: sampleToken(row, s.req, s.rng) }
  let mask: Uint8Array | null = null
  if (s.constraint != null) {
    mask = s.constraint.allowed(s.req.maxTokens - s.generated)
    if (maskCount(mask) === 0) { finish(s, 'error', 'constrained decoding: no token of this vocabulary can continue the JSON'); return null }
  }
  return s.sampler.next(row, mask)
}

/** Records a sampled token; returns false when the sequence is over. */
function accept (s: Seq, picked: { token: number, logprob?: TokenLogprob } | null, out: StepOut): boolean {
  if (picked == null) return false
  const token = picked.token
  if (s.stop.has(token)) { finish(s, 'stop'); return false }
  if (s.constraint != null && !s.constraint.accept(token)) { finish(s, 'error', `constrained decoding: token ${token} does not continue the JSON`); return false }
  out.tokens.push([s.req.id, token])
  if (picked.logprob != null) out.logprobs.push([s.req.id, picked.logprob])
  s.generated++
  s.last = token
  if (s.constraint?.done === true) { finish(s, 'stop'); return false }
  if (s.generated >= s.req.maxTokens || s.length + 1 > init.contextLength) { finish(s, 'length'); return false }
  return true
}

function sendStep (out: StepOut, batch: number, kind: 'prefill' | 'decode', ms: number): void {
  send(out.logprobs.length > 0
    ? { type: 'step', tokens: out.tokens, batch, kind, ms, logprobs: out.logprobs }
    : { type: 'step', tokens: out.tokens, batch, kind, ms })
}

/** The logits of the last position of batch row `index`. */
function lastRow (logits: Tensor, index: number): Float32Array {
  const data = logits.data as Float32Array
  const V = shape.vocab
  const S = logits.dims[1]
  const start = (index * S + S - 1) * V
  return data.subarray(start, start + V)
}

/**
 * Runs the next `rows` tokens of a sequence's prompt (a chunk, or the rest) on its own cache; after the
 * last chunk, samples its first token and moves it to the running sequences.
 */
async function prefillChunk (s: Seq, rows: number): Promise<void> {
  const from = s.length
  const to = Math.min(s.req.prompt.length, from + rows)
  const t0 = performance.now()
  const out = await session.run(sequenceFeeds(s.req.prompt.slice(from, to), from, s.kv ?? emptyPast(shape, 1)), wholeOutputs)
  const ms = performance.now() - t0
  budget.observe(to - from, ms)
  s.kv = presentAsPast(shape, out)
  s.length = to
  const tokens = stepOut()
  if (to < s.req.prompt.length) {
    // more to come: no token yet (the converted graphs' logits are the chunk's last position's, unused)
    sendStep(tokens, 1, 'prefill', ms)
    return
  }
  inPrompt = null
  const alive = !s.cancelled && accept(s, pick(s, lastRow(out.logits, 0)), tokens)
  sendStep(tokens, 1, 'prefill', ms)
  if (s.cancelled && byId.has(s.req.id)) finish(s, 'cancelled')
  else if (alive) running.push(s)
  flushDone()
}

/**
 * The prompt to run next, left where it is: the one under way, else a new one, which waits while the batch
 * is full. Cancelled ones on the way are finished.
 */
function nextPrompt (): Seq | null {
  for (;;) {
    const s = inPrompt ?? (running.length < init.maxBatch ? pending[0] : undefined)
    if (s == null) return null
    if (!s.cancelled) return s
    if (s === inPrompt) inPrompt = null
    else pending.shift()
    finish(s, 'cancelled')
  }
}

/** Copies each member's cache into one [B, heads, T, headDim] tensor per input, left-padded (with room to grow when kept here). */
function rebuildGroup (members: Seq[]): Group {
  members = [...members] // the group keeps its own list: `running` changes as sequences come and go
  if (members.length === 1 && members[0].kv != null && !inPlace) {
    const m = members[0]
    const g = { members, cache: { past: m.kv as Feeds, end: m.length, cap: m.length } }
    m.kv = null
    return g
  }
  const old = group
  const sources = members.map(m => {
    if (m.kv != null) return { from: { past: m.kv, end: m.length, cap: m.length }, row: 0 }
    if (old == null) throw new Error('sequence has no cache')
    return { from: old.cache, row: old.members.indexOf(m) }
  })
  const cache = gather(layout, sources, members.map(m => m.length), inPlace)
  for (const m of members) m.kv = null
  return { members, cache }
}

async function decodeStep (): Promise<void> {
  running = running.filter(s => {
    if (s.cancelled && byId.has(s.req.id)) finish(s, 'cancelled')
    return byId.has(s.req.id)
  })
  if (running.length === 0) { group = null; return }
  const same = group != null && group.members.length === running.length && group.members.every((m, i) => m === running[i])
  if (!same) group = rebuildGroup(running)
  const g = group as Group
  const B = g.members.length
  const { end: T, cap } = g.cache
  const lengths = g.members.map(m => m.length)
  const feeds: Feeds = {
    [io.inputIds]: int64(g.members.map(m => m.last), [B, 1]),
    [io.positionIds]: int64(lengths, [B, 1]),
    ...g.cache.past
  }
  if (inPlace) {
    feeds[io.attentionMask] = stepMask(lengths, T, cap)
  } else {
    const mask = new Array<number>(B * (T + 1))
    lengths.forEach((len, i) => { for (let t = 0; t <= T; t++) mask[i * (T + 1) + t] = t >= T - len ? 1 : 0 })
    feeds[io.attentionMask] = int64(mask, [B, T + 1])
  }
  const t0 = performance.now()
  const out = await session.run(feeds, inPlace ? fetches : wholeOutputs)
  if (inPlace) appendStep(layout, g.cache, out, B)
  else g.cache = { past: presentAsPast(shape, out), end: T + 1, cap: T + 1 }
  const tokens = stepOut()
  g.members.forEach((m, i) => {
    m.length++
    if (m.cancelled) return
    accept(m, pick(m, lastRow(out.logits, i)), tokens)
  })
  sendStep(tokens, B, 'decode', performance.now() - t0)
  flushDone()
}

const yieldToMessages = async (): Promise<void> => { await new Promise(resolve => setImmediate(resolve)) }

async function loop (): Promise<void> {
  while (!closed) {
    if (pending.length === 0 && inPrompt == null && running.length === 0) {
      await new Promise<void>(resolve => { wake = resolve })
      wake = null
      continue
    }
    // prompts first, as much as the budget allows while others decode (prefill.ts); a prompt whose run fails
    // ends alone. Whether others decode is taken at the turn's start: the sequences whose prompts this turn
    // finishes have their first token and wait like the rest of a burst, so a burst is prefilled up to the
    // row bound before its first decoding step (cut short by the time bound, it decoded in thin batches:
    // 4–12% fewer tokens/s for 8 short prompts on SmolLM2, docs/decisions.md)
    const t0 = performance.now()
    const decoding = running.some(s => byId.has(s.req.id) && !s.cancelled)
    let rows = 0
    for (let s = nextPrompt(); s != null && !closed; s = nextPrompt()) {
      const n = Math.min(budget.chunkRows(decoding), s.req.prompt.length - s.length)
      if (!budget.more(rows, performance.now() - t0, n, decoding)) break
      if (s !== inPrompt) inPrompt = pending.shift() as Seq
      rows += Math.max(1, n)
      try {
        await prefillChunk(s, n)
      } catch (err) {
        inPrompt = null
        finish(s, 'error', (err as Error).message)
      }
      flushDone()
      await yieldToMessages()
    }
    if (closed) break
    try {
      await decodeStep()
    } catch (err) {
      const msg = (err as Error).message
      for (const s of [...running, ...(group?.members ?? [])]) if (byId.has(s.req.id)) finish(s, 'error', msg)
      running = []
      group = null
    }
    flushDone()
    await yieldToMessages()
  }
  for (const s of [...byId.values()]) finish(s, 'cancelled')
  flushDone()
  await session.release().catch(() => {})
  send({ type: 'closed' })
}

try {
  const t0 = performance.now()
  const created = await createSession(init.modelPath, init.order, { intraOpThreads: init.intraOpThreads })
  session = created.session
  shape = decoderShape(session)
  layout = { names: Array.from({ length: shape.layers }, (_, l) => [io.pastKey(l), io.pastValue(l)]).flat(), heads: shape.heads, headDim: shape.headDim }
  inPlace = init.keepCache !== false && keepsCache(session.outputNames, layout)
  fetches = stepFetches(session.outputNames)
  wholeOutputs = wholeFetches(session.outputNames)
  send({ type: 'ready', provider: created.provider, shape, loadMs: performance.now() - t0, keepsCache: inPlace })
  await loop()
} catch (err) {
  send({ type: 'failed', error: (err as Error).message })
}
