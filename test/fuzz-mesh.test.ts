/**
 * Property-based fuzzing of every mesh protocol (issue 13).
 *
 * Part 1, in process: a real libp2p node (MeshNode) serves each protocol with its real handler,
 * wired as agent/daemon.ts wires it (same schema, limits, onInvalid → the real Penalties), and is fed
 * FRAMES generated and mutated frames per protocol: through real Yamux streams of an in-memory
 * connection into the handler the node registered (capacity gossip: through the topic validator
 * gossipsub calls). A sender is a fresh peer ID, replaced once banned, so every frame reaches a
 * handler that still listens. Each frame is judged against the protocol's rules (written here from
 * the docs, using the exported schemas): a bad frame is refused and costs its sender exactly one
 * strike, three strikes ban it; a good frame is served and costs nothing. No handler throws, no
 * exception escapes, nothing hangs, and the heap after GC grows by a bounded amount.
 *
 * Part 2, over the wire: one agent process; per protocol a few batches of bad frames, each batch
 * from a new in-process libp2p node with a fresh identity: the agent stays up and answers, and each
 * rogue is disconnected, banned (blockmesh_peers_banned_total) and cannot reconnect.
 *
 * Adding a protocol (the replication protocol, or any other): add one entry to STREAM_TARGETS
 * (a stream protocol; `jsonRpcTarget` covers anything served with serveJson) or TOPIC_TARGETS (a
 * gossipsub topic validator), and one entry to WIRE_TARGETS — see "EXTENSION POINT" below.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import type { z } from 'zod'
import { generateKeyPair, generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { RecordEnvelope } from '@libp2p/peer-record'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import type { Message } from '@libp2p/gossipsub'
import type { Connection, PeerId, PrivateKey, Record as Libp2pRecord, StreamHandler } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { MeshNode } from '../mesh/node.ts'
import { Penalties } from '../mesh/penalties.ts'
import { serveJson } from '../mesh/rpc.ts'
import { serveTunnel, TunnelRequestSchema } from '../mesh/tunnel.ts'
import { MAX_FRAME_BYTES, PIPELINE_PROTOCOL, decodeFrame } from '../mesh/pipeline-frame.ts'
import { CapacityGossip } from '../mesh/capacity/gossip.ts'
import { CAPACITY_TOPIC, CapacityRecordSchema, MAX_CAPACITY_FRAME_BYTES, compareRecords, sealCapacityPayload } from '../mesh/capacity/record.ts'
import type { CapacityRecord } from '../mesh/capacity/record.ts'
import { ASSIGN_PROTOCOL, AssignRequestSchema } from '../agent/blocks/assign.ts'
import { INFER_PROTOCOL, TUNNELLED_PATHS } from '../agent/openai/infer-protocol.ts'
import { DropMetaSchema, ErrorMetaSchema, MAX_HOP, ResultMetaSchema, StepMetaSchema, pipelineService } from '../agent/vdag/pipeline.ts'
import type { LocalStages } from '../agent/vdag/pipeline.ts'
import type { StageEngine } from '../agent/executor/stage-engine.ts'
import { AgentProcess, stopAll, tempDir, until } from './helpers/agents.ts'
import * as Automerge from '@automerge/automerge'
import { join } from 'node:path'
import { createHash } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { SqliteContentStore } from '../agent/content/store.ts'
import { contentService } from '../agent/content/service.ts'
import type { ContentService } from '../agent/content/service.ts'
import { ContentRequestSchema, MAX_REQUEST_BYTES } from '../agent/content/protocol.ts'
import { CONTENT_PROTOCOL } from '../agent/content/types.ts'
import type { ContentStore } from '../agent/content/types.ts'
import { openDatabase } from '../agent/db/database.ts'
import { DesiredState } from '../agent/state/replica.ts'
import { STATE_SYNC_PROTOCOL, STATE_TOPIC, StateSync, SyncRequestSchema } from '../agent/state/sync.ts'
import { MAX_STATE_FRAME_BYTES, actorFor, sealChange } from '../agent/state/frame.ts'
import {
  CrashWatch, MemoryLink, Senders, Tally, badFraming, brokenJsonText, captureHandlers, concat, exchange, frame, fuzzParams,
  mutatedBytes, mutatedJson, notUtf8, readFrames, refusedAtOnce, settledHeap, utf8, within
} from './helpers/fuzz.ts'
import type { Exchange, Framing } from './helpers/fuzz.ts'

/** Frames per protocol in process (the issue: 10,000); FUZZ_FRAMES=n to change. */
const FRAMES = Number(process.env.FUZZ_FRAMES ?? 10_000)
/** Bound on heap growth (after GC) over one protocol's frames: generous, a leak of even a few KiB per frame breaks it. */
const HEAP_BOUND = 48 * 1024 * 1024
/** One exchange must end by then (servers refuse a frame that cannot be valid without waiting for more bytes). */
const HANG_MS = 10_000

const MiB = 1024 * 1024
const dec = new TextDecoder('utf-8', { fatal: true })

async function newPeerId (): Promise<PeerId> {
  return peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
}

/** Who judges: the serving node's peer ID and the pipeline stages it runs. */
interface VerdictContext { self: string, stages: string[] }

/** What a frame (or a stream of frames) should cost under the protocol's rules. */
type Verdict = { strike: true } | { strike: false, check?: (ex: Exchange) => void }

interface StreamCase { bytes: Uint8Array, keepOpen: boolean, label: string }

/** A stream protocol under fuzz: how the daemon serves it, what to send, and what the rules say. */
interface StreamTarget<C extends StreamCase> {
  name: string
  protocol: string
  /** registers the protocol's real handler on `node`, exactly as agent/daemon.ts does */
  serve: (ctx: { node: MeshNode, penalties: Penalties, strike: (peer: string, reason: string) => void }) => Promise<void>
  cases: fc.Arbitrary<C>
  verdict: (c: C, ctx: VerdictContext) => Verdict
}

/** The JSON in a frame, if its bytes are UTF-8 JSON. */
function parseJson (bytes: Uint8Array): { ok: true, value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(dec.decode(bytes)) }
  } catch {
    return { ok: false }
  }
}

function parsesAs (schema: z.ZodType, bytes: Uint8Array): boolean {
  const j = parseJson(bytes)
  return j.ok && schema.safeParse(j.value).success
}

/** A frame's payload: mutated JSON of a valid sample, mutated bytes of it, broken JSON text, not UTF-8, or the sample itself. */
function payloadFrom (samples: unknown[]): fc.Arbitrary<{ bytes: Uint8Array, how: string }> {
  const sample = fc.constantFrom(...samples)
  return fc.oneof(
    { weight: 8, arbitrary: sample.chain(s => mutatedJson(s)).map(m => ({ bytes: utf8(JSON.stringify(m.value) ?? 'null'), how: `json:${m.how}` })) },
    { weight: 3, arbitrary: sample.chain(s => mutatedBytes(utf8(JSON.stringify(s)))).map(m => ({ bytes: m.bytes, how: `bytes:${m.how}` })) },
    { weight: 2, arbitrary: brokenJsonText.map(t => ({ bytes: utf8(t), how: 'broken-json' })) },
    { weight: 1, arbitrary: notUtf8.map(b => ({ bytes: b, how: 'not-utf8' })) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 256 }).map(b => ({ bytes: b, how: 'random-bytes' })) },
    { weight: 1, arbitrary: sample.map(s => ({ bytes: utf8(JSON.stringify(s)), how: 'valid' })) }
  )
}

/** A frame's length prefix: mostly right, else one of the bad framings. */
function framingFor (maxFrame: number): fc.Arbitrary<Framing> {
  return fc.oneof({ weight: 6, arbitrary: fc.constant({ kind: 'ok' as const }) }, { weight: 2, arbitrary: badFraming(maxFrame) })
}

// ------------------------------------------------------------------ request/response JSON (serveJson)

interface JsonCase extends StreamCase { payload: Uint8Array, framing: Framing }

/**
 * Any protocol served with serveJson (mesh/rpc.ts): one length-prefixed JSON request, one JSON answer.
 * Rules: a request that is not one complete frame within `maxFrame`, not UTF-8 JSON, or fails `schema`
 * is answered bad_request and is a strike; a valid one reaches the handler.
 */
function jsonRpcTarget (init: { name: string, protocol: string, schema: z.ZodType, samples: unknown[], maxFrame: number, serve: StreamTarget<JsonCase>['serve'], reached: () => number }): StreamTarget<JsonCase> {
  for (const s of init.samples) assert.ok(init.schema.safeParse(s).success, `${init.name}: a sample request no longer fits the schema: ${JSON.stringify(s)}`)
  return {
    name: init.name,
    protocol: init.protocol,
    serve: init.serve,
    cases: fc.tuple(payloadFrom(init.samples), framingFor(init.maxFrame)).map(([p, framing]) => ({
      bytes: frame(p.bytes, framing), payload: p.bytes, framing, keepOpen: refusedAtOnce(framing), label: `${framing.kind}/${p.how.split(/[:+]/).slice(0, 2).join(':')}`
    })),
    verdict: (c) => {
      const good = (c.framing.kind === 'ok' && c.payload.length <= init.maxFrame && parsesAs(init.schema, c.payload))
      if (!good) {
        return { strike: true }
      }
      const before = init.reached()
      return {
        strike: false,
        check: (ex) => {
          const answer = readFrames(ex.received).map(f => parseJson(f))
          assert.ok(answer[0]?.ok === true && (answer[0].value as { ok?: boolean }).ok === true, `a valid request is answered ok (got ${new TextDecoder().decode(ex.received).slice(0, 200)})`)
          assert.equal(init.reached(), before + 1, 'a valid request reaches the handler')
        }
      }
    }
  }
}

// the assign protocol (agent/blocks/assign.ts, served by agent/blocks/assign-service.ts)
let assignReached = 0
const assignTarget = jsonRpcTarget({
  name: 'assign RPC',
  protocol: ASSIGN_PROTOCOL,
  schema: AssignRequestSchema,
  maxFrame: 256 * 1024,
  samples: [
    { op: 'stop', block: 'blk-1', instance: 'blk-1-i0' },
    { op: 'start', block: 'blk-1', instance: 'blk-1-i0', spec: { component: 'demo:1' }, component: { name: 'demo', version: '1', runtime: 'onnx', model: { url: 'file:///models/demo.onnx', md5: '0123456789abcdef0123456789abcdef' }, contextLength: 128 } }
  ],
  // the daemon's handler decides placement from the host's state; here it only counts what reaches it
  serve: async ({ node, strike }) => {
    await serveJson(node, ASSIGN_PROTOCOL, AssignRequestSchema, async () => { assignReached++; return { accepted: false, reason: 'fuzz target' } }, { onInvalid: strike, maxFrameBytes: 256 * 1024 })
  },
  reached: () => assignReached
})

// ------------------------------------------------------------------ inference tunnel

interface TunnelCase extends StreamCase { head: Uint8Array, headFraming: Framing, body: Uint8Array | null, bodyFraming: Framing }

const TUNNEL_MAX_BODY = MiB // as agent/daemon.ts serves it
let tunnelReached = 0
const tunnelTarget: StreamTarget<TunnelCase> = {
  name: 'inference tunnel',
  protocol: INFER_PROTOCOL,
  serve: async ({ node, strike }) => {
    // as agent/daemon.ts: paths other than the tunnelled ones get 404; the others are answered (here without an engine)
    await serveTunnel(node, INFER_PROTOCOL, async (req) => {
      tunnelReached++
      const status = TUNNELLED_PATHS.has(req.target) ? 200 : 404
      return { status, headers: { 'content-type': 'application/json' }, body: (async function * () { yield utf8(JSON.stringify({ bytes: req.body.length })) })() }
    }, { onInvalid: strike, maxBodyBytes: TUNNEL_MAX_BODY })
  },
  cases: fc.record({
    head: payloadFrom([{ target: '/v1/chat/completions', headers: { 'x-session-id': 'abc', 'content-type': 'application/json' } }, { target: '/v1/completions', headers: {} }]),
    headFraming: framingFor(TUNNEL_MAX_BODY),
    body: fc.option(fc.oneof(fc.uint8Array({ maxLength: 2048 }), fc.constant(utf8('{"model":"m","prompt":"hi"}'))), { freq: 8 }),
    bodyFraming: framingFor(TUNNEL_MAX_BODY)
  }).map(({ head, headFraming, body, bodyFraming }) => {
    // a frame whose length cannot be right ends what is sent (the rest would be read as its bytes)
    const parts = [frame(head.bytes, headFraming)]
    if (headFraming.kind === 'ok' || headFraming.kind === 'zero') { if (body != null) parts.push(frame(body, bodyFraming)) }
    const last = parts.length === 2 ? bodyFraming : headFraming
    return {
      // a length prefix that never ends is refused at once too (the test of it below), so the stream stays open
      bytes: concat(parts), head: head.bytes, headFraming, body, bodyFraming, keepOpen: refusedAtOnce(last),
      label: `head:${headFraming.kind}/${head.how.split(/[:+]/).slice(0, 2).join(':')} body:${body == null ? 'none' : bodyFraming.kind}`
    }
  }),
  verdict: (c) => {
    const headBytes = c.headFraming.kind === 'zero' ? new Uint8Array(0) : c.head
    const headOk = (c.headFraming.kind === 'ok' || c.headFraming.kind === 'zero') && parsesAs(TunnelRequestSchema, headBytes)
    const bodyLen = c.body == null ? -1 : c.bodyFraming.kind === 'zero' ? 0 : c.bodyFraming.kind === 'ok' ? c.body.length : -1
    if (!headOk || bodyLen < 0 || bodyLen > TUNNEL_MAX_BODY) return { strike: true }
    const target = (JSON.parse(dec.decode(headBytes)) as { target: string }).target
    const before = tunnelReached
    return {
      strike: false,
      check: (ex) => {
        const frames = readFrames(ex.received)
        const head = parseJson(frames[0] ?? new Uint8Array(0))
        assert.ok(head.ok, 'a valid request gets a response head')
        assert.equal((head.value as { status: number }).status, TUNNELLED_PATHS.has(target) ? 200 : 404)
        assert.deepEqual(JSON.parse(dec.decode(frames[1])), { bytes: bodyLen })
        assert.equal(tunnelReached, before + 1)
      }
    }
  }
}

// ------------------------------------------------------------------ pipeline stream

const HIDDEN = 8
const HEADER = 32

/**
 * Stage engines of two ready blocks: 'stage-first' takes token ids, 'stage-last' activations. A step
 * stays under way until its sequence is dropped (so "a second step while one is under way" is a
 * violation whatever the timing), and every step that reaches an engine is counted.
 */
const STAGES = ['stage-first', 'stage-last']
let stepsReached = 0
const underWay = new Map<string, () => void>()
const stageEngines: LocalStages = (block: string) => {
  const info = block === STAGES[0] ? { first: true, last: false } : block === STAGES[1] ? { first: false, last: true } : null
  if (info == null) throw new Error(`block ${block} is not a ready stage here`)
  return {
    info: { ...info, layers: [0], hiddenSize: HIDDEN, vocab: 16 },
    step: async (seq: string) => {
      stepsReached++
      return await new Promise((_resolve, reject) => { underWay.set(`${block}/${seq}`, () => { reject(new Error('dropped')) }) })
    },
    drop (seq: string) { const r = underWay.get(`${block}/${seq}`); underWay.delete(`${block}/${seq}`); r?.() }
  } as unknown as StageEngine
}

interface PipeFrame { bytes: Uint8Array, framing: Framing }
interface PipeCase extends StreamCase { frames: PipeFrame[] }

const KIND_CODE: Record<string, number> = { step: 0, result: 1, error: 2, drop: 3 }
const DTYPE_CODE: Record<string, number> = { none: 0, int32: 1, float32: 2 }

/** A frame's bytes (without its length prefix) built field by field, so the fuzzer can put anything in any field. */
function rawFrame (f: { kind: number, dtype: number, flags?: number, seq: number, step?: number, pastLen?: number, rows?: number, token?: number, meta?: Uint8Array, payload?: Uint8Array }): Uint8Array {
  const meta = f.meta ?? new Uint8Array(0)
  const payload = f.payload ?? new Uint8Array(0)
  const b = new Uint8Array(HEADER + meta.length + payload.length)
  const v = new DataView(b.buffer)
  v.setUint8(0, 1); v.setUint8(1, f.kind); v.setUint8(2, f.dtype); v.setUint8(3, f.flags ?? 0)
  v.setBigUint64(4, BigInt(f.seq))
  v.setUint32(12, f.step ?? 0, true); v.setUint32(16, f.pastLen ?? 0, true); v.setUint32(20, f.rows ?? 0, true)
  v.setInt32(24, f.token ?? 0, true); v.setUint32(28, meta.length, true)
  b.set(meta, HEADER); b.set(payload, HEADER + meta.length)
  return b
}

const sampling = { temperature: 0, topP: 1, seed: 0 }

/** Valid frames: steps that open sequences at a stage here (or a block that is not), steps of unknown sequences, results, errors, drops. */
function pipeConversation (self: () => string): fc.Arbitrary<PipeFrame[]> {
  // a few sequence ids recur (a second step while one is under way, drops of open sequences), most are fresh
  const step = fc.record({
    seq: fc.oneof({ weight: 1, arbitrary: fc.integer({ min: 1, max: 6 }) }, { weight: 3, arbitrary: fc.integer({ min: 7, max: 1_000_000 }) }),
    hop: fc.integer({ min: 0, max: 2 }),
    block: fc.constantFrom('stage-first', 'stage-last', 'stage-first', 'stage-last', 'no-such-block'),
    open: fc.boolean(),
    rows: fc.integer({ min: 1, max: 6 }),
    pastLen: fc.nat(4096),
    mask: fc.option(fc.base64String({ maxLength: 16 }), { freq: 4 }),
    returnLogits: fc.boolean(),
    noSample: fc.boolean()
  }).map(x => {
    const first = x.block !== 'stage-last'
    const meta: Record<string, unknown> = {}
    if (x.open) meta.open = { block: x.block, route: x.block === 'stage-first' ? [{ peer: self(), block: 'stage-last' }] : [], origin: self(), sampling, returnLogits: x.returnLogits, stages: 2 }
    if (x.mask != null) meta.mask = x.mask
    const payload = first ? new Uint8Array(4 * x.rows) : new Uint8Array(4 * x.rows * HIDDEN)
    return rawFrame({ kind: 0, dtype: first ? DTYPE_CODE.int32 : DTYPE_CODE.float32, flags: x.noSample ? 1 : 0, seq: x.seq, step: 0, pastLen: x.pastLen, rows: x.rows, token: x.hop, meta: Object.keys(meta).length > 0 ? utf8(JSON.stringify(meta)) : undefined, payload })
  })
  const other = fc.oneof(
    fc.record({ seq: fc.nat(100), token: fc.integer({ min: -1, max: 15 }), logprob: fc.boolean() }).map(x => rawFrame({ kind: 1, dtype: 0, seq: x.seq, token: x.token, meta: x.logprob ? utf8(JSON.stringify({ logprob: { logprob: -0.5, top: [[1, -0.5]] } })) : undefined })),
    fc.record({ seq: fc.nat(100), message: fc.string({ maxLength: 40 }) }).map(x => rawFrame({ kind: 2, dtype: 0, seq: x.seq, meta: utf8(JSON.stringify({ message: x.message, code: 'x' })) })),
    fc.record({ seq: fc.integer({ min: 1, max: 6 }), hop: fc.integer({ min: 0, max: 2 }) }).map(x => rawFrame({ kind: 3, dtype: 0, seq: x.seq, token: x.hop }))
  )
  return fc.array(fc.oneof({ weight: 3, arbitrary: step }, { weight: 1, arbitrary: other }), { minLength: 1, maxLength: 4 }).map(list => list.map(bytes => ({ bytes, framing: { kind: 'ok' as const } })))
}

/** A conversation with 1–2 frames mutated (bytes, meta JSON, payload length, framing), cut short, or garbage. */
function pipeCases (self: () => string): fc.Arbitrary<PipeCase> {
  const mutation = fc.record({ at: fc.nat(16), how: fc.constantFrom('bytes', 'bytes', 'meta', 'meta', 'payload-length', 'framing', 'cut', 'drop-frame') })
  const mutated = fc.tuple(pipeConversation(self), fc.array(mutation, { minLength: 1, maxLength: 2 })).chain(([frames, ms]) => {
    const steps = ms.map(m => {
      const i = m.at % frames.length
      const f = frames[i].bytes
      const metaLen = new DataView(f.buffer, f.byteOffset).getUint32(28, true)
      switch (m.how) {
        case 'bytes': return mutatedBytes(f).map(x => ({ i, f: { bytes: x.bytes, framing: { kind: 'ok' as const } } as PipeFrame | null | undefined, how: `bytes:${x.how}` }))
        case 'meta': {
          const meta = metaLen > 0 ? JSON.parse(dec.decode(f.subarray(HEADER, HEADER + metaLen))) : {}
          return fc.oneof(mutatedJson(meta).map(x => utf8(JSON.stringify(x.value) ?? 'null')), brokenJsonText.map(utf8), notUtf8).map(mb => {
            const b = new Uint8Array(HEADER + mb.length + f.length - HEADER - metaLen)
            b.set(f.subarray(0, HEADER)); new DataView(b.buffer).setUint32(28, mb.length, true); b.set(mb, HEADER); b.set(f.subarray(HEADER + metaLen), HEADER + mb.length)
            return { i, f: { bytes: b, framing: { kind: 'ok' as const } } as PipeFrame | null | undefined, how: 'meta' }
          })
        }
        case 'payload-length': return fc.integer({ min: -64, max: 64 }).filter(d => d !== 0).map(d => {
          const b = new Uint8Array(Math.max(HEADER + metaLen, f.length + d))
          b.set(f.subarray(0, Math.min(f.length, b.length)))
          return { i, f: { bytes: b, framing: { kind: 'ok' as const } } as PipeFrame | null | undefined, how: 'payload-length' }
        })
        case 'framing': return badFraming(PIPE_MAX_FRAME).map(framing => ({ i, f: { bytes: f, framing } as PipeFrame | null | undefined, how: `framing:${framing.kind}` }))
        case 'cut': return fc.constant({ i, f: null as PipeFrame | null | undefined, how: 'cut' })
        default: return fc.constant({ i, f: undefined as PipeFrame | null | undefined, how: 'drop-frame' })
      }
    })
    return fc.tuple(...steps).map(list => {
      let out = [...frames]
      const hows: string[] = []
      for (const m of list.sort((a, b) => b.i - a.i)) {
        hows.push(m.how)
        if (m.f === null) out = out.slice(0, m.i)
        else if (m.f === undefined) out.splice(m.i, 1)
        else if (m.i < out.length) out[m.i] = m.f
      }
      const bad = out.findIndex(f => f.framing.kind !== 'ok' && f.framing.kind !== 'zero')
      if (bad >= 0) out = out.slice(0, bad + 1)
      return { frames: out, hows }
    })
  })
  const garbage = fc.oneof(fc.uint8Array({ maxLength: 512 }), notUtf8).map(b => ({ frames: [{ bytes: b, framing: { kind: 'ok' as const } }], hows: ['garbage-frame'] }))
  return fc.oneof(
    { weight: 22, arbitrary: mutated },
    { weight: 1, arbitrary: garbage },
    { weight: 3, arbitrary: pipeConversation(self).map(frames => ({ frames, hows: ['valid'] })) },
    { weight: 1, arbitrary: fc.constant({ frames: [] as PipeFrame[], hows: ['empty-stream'] }) }
  ).map(({ frames, hows }): PipeCase => {
    const last = frames[frames.length - 1]
    return { frames, bytes: concat(frames.map(f => frame(f.bytes, f.framing))), keepOpen: last != null && refusedAtOnce(last.framing), label: hows.map(h => h.split(/[:+]/).slice(0, 2).join(':')).join('+') }
  })
}

const PIPE_MAX_FRAME = MAX_FRAME_BYTES
/** Sequences (block/seq) opened at a stage by earlier cases and not dropped: their steps are still under way. */
const pipeOpen = new Map<string, string>()

/**
 * The pipeline protocol's rules (mesh/pipeline-frame.ts, agent/vdag/pipeline.ts): every frame has a
 * length prefix within 64 MiB and decodes (decodeFrame: version, kind, dtype, meta a JSON object,
 * payload whole values, present exactly with a dtype). Per kind: a step's meta fits StepMetaSchema, it
 * has a tensor, its hop is ≤ MAX_HOP and its token ids are ≥ 0; a step of a sequence whose step is
 * under way at that hop is a violation; a step that opens a sequence at a stage here must carry the
 * stage's input (int32 ids, one per row, for a first stage; float32 rows × hidden otherwise); a step
 * of an unknown sequence without an open, or for a block not here, is answered with an error frame
 * without fault. Results, errors and drops must fit their meta schemas. The first violation is one
 * strike and ends the stream; the stream ending is never one.
 */
function pipeVerdict (c: PipeCase, ctx: VerdictContext, sender: () => string): Verdict {
  // judged for an agent without stages (the over-the-wire sample): nothing is ever open there
  const open = ctx.stages.length > 0 ? pipeOpen : new Map<string, string>()
  let reached = 0
  const done = (strike: boolean): Verdict => {
    if (strike) return { strike: true }
    const before = stepsReached
    return { strike: false, check: () => { assert.equal(stepsReached, before + reached, 'every valid step of an open sequence reaches its stage') } }
  }
  for (const f of c.frames) {
    if (f.framing.kind === 'short') return done(false)
    if (f.framing.kind === 'over' || f.framing.kind === 'overlong') return done(true)
    let d
    try { d = decodeFrame(f.framing.kind === 'zero' ? new Uint8Array(0) : f.bytes) } catch { return done(true) }
    if (d.kind === 'step') {
      const meta = StepMetaSchema.safeParse(d.meta ?? {})
      if (!meta.success || d.payload == null || d.dtype == null || d.token < 0 || d.token > MAX_HOP) return done(true)
      const ids = d.dtype === 'int32' ? new Int32Array(new Uint8Array(d.payload).buffer) : null
      if (ids != null && ids.some(t => t < 0)) return done(true)
      const key = `${d.seq}/${d.token}`
      if (open.has(key)) return done(true)
      const o = meta.data.open
      if (o == null || !ctx.stages.includes(o.block)) continue
      const first = o.block === STAGES[0]
      const ok = first ? d.dtype === 'int32' && d.rows > 0 && d.payload.length === 4 * d.rows : d.dtype === 'float32' && d.rows > 0 && d.payload.length === 4 * d.rows * HIDDEN
      if (!ok) return done(true)
      open.set(key, sender())
      reached++
    } else if (d.kind === 'result') {
      if (!ResultMetaSchema.safeParse(d.meta ?? {}).success || (d.dtype != null && d.dtype !== 'float32')) return done(true)
    } else if (d.kind === 'error') {
      if (!ErrorMetaSchema.safeParse(d.meta ?? {}).success || d.payload != null) return done(true)
    } else {
      if (!DropMetaSchema.safeParse(d.meta ?? {}).success || d.payload != null) return done(true)
      const key = `${d.seq}/${d.token}`
      if (open.get(key) === sender()) open.delete(key)
    }
  }
  return done(false)
}

let selfId = ''
let currentSender = ''
const pipelineTarget: StreamTarget<PipeCase> = {
  name: 'pipeline stream',
  protocol: PIPELINE_PROTOCOL,
  serve: async ({ node, penalties }) => {
    const service = pipelineService({ local: stageEngines, offences: penalties, log: { debug () {}, info () {}, warn () {} } })({ self: node.peerId.toString(), libp2p: node.libp2p, isBanned: peer => node.gate.isBanned(peer), ping: async () => {} })
    await service.start()
  },
  cases: pipeCases(() => selfId),
  verdict: (c, ctx) => pipeVerdict(c, ctx, () => currentSender)
}

// ------------------------------------------------------------------ EXTENSION POINT (stream protocols)
// The replication protocol's pull side (anti-entropy requests, agent/state/sync.ts) is served with serveJson:
// add `jsonRpcTarget({ name: 'state sync', protocol: STATE_SYNC_PROTOCOL, schema: SyncRequestSchema, samples:
// [<a valid request>], maxFrame: <its maxFrameBytes>, serve: <serveJson as the daemon wires it>, reached })` here.
// Any other stream protocol: a StreamTarget (what to send, how it is served, what its rules say).
// the replication protocol's pull side: the real StateSync service over a real DesiredState (its own SQLite file)
let stateReached = 0
let stateSyncUnderTest: { sync: StateSync, state: DesiredState } | null = null
async function startStateSync (node: MeshNode, penalties: Penalties): Promise<{ sync: StateSync, state: DesiredState }> {
  const state = new DesiredState({ db: openDatabase(join(tempDir('bm-fuzz-state-'), 'agent.db')), peerId: node.peerId.toString(), epoch: 1, privateKey: node.privateKey })
  await state.put('components', 'fuzz:1', { name: 'fuzz', version: '1' })
  const missingFor = state.missingFor.bind(state)
  state.missingFor = (...args) => { stateReached++; return missingFor(...args) }
  const gossip = new CapacityGossip(node, { identity: { name: 'fuzz-state', cluster: 'fuzz', vendor: '' }, epoch: 1, heartbeatMs: 60_000, readings: () => capacityRecord(node.peerId.toString(), 0).readings })
  const log = { debug () {}, info () {}, warn () {} } as unknown as ConstructorParameters<typeof StateSync>[0]['log']
  const sync = new StateSync({ node, state, gossip, penalties, log })
  await sync.start()
  return { sync, state }
}
const stateSyncTarget = jsonRpcTarget({
  name: 'state sync',
  protocol: STATE_SYNC_PROTOCOL,
  schema: SyncRequestSchema,
  maxFrame: 2 * 1024 * 1024,
  samples: [{ have: {} }, { have: { '0123456789abcdef0123456789abcdef': 3 } }],
  serve: async ({ node, penalties }) => {
    if (stateSyncUnderTest != null) await stateSyncUnderTest.sync.stop()
    stateSyncUnderTest = await startStateSync(node, penalties)
  },
  reached: () => stateReached
})

// the content protocol (agent/content/service.ts): the real ContentService over a real store (its own SQLite
// file and folder) holding one file of 4 chunks of 64 KiB, written here so every run generates the same requests
const CONTENT_CHUNK = 64 * 1024
const contentBytes = new Uint8Array(3 * CONTENT_CHUNK + 1000).map((_, i) => (i * 31 + 7) & 0xff)
const contentMd5 = createHash('md5').update(contentBytes).digest('hex')
const CONTENT_CHUNKS = Math.ceil(contentBytes.length / CONTENT_CHUNK)
let contentUnderTest: ContentService | null = null
let contentAnswered = 0

/**
 * The content protocol's rules (agent/content/protocol.ts): one request frame within MAX_REQUEST_BYTES that is
 * UTF-8 JSON and fits ContentRequestSchema, else bad_request and a strike. A valid request is answered
 * without fault: ok for the file held (a chunk in range, of the chunk size held), not_found otherwise.
 */
const contentTarget: StreamTarget<JsonCase> = {
  name: 'content',
  protocol: CONTENT_PROTOCOL,
  serve: async ({ node, strike }) => {
    await contentUnderTest?.stop()
    const dir = tempDir('bm-fuzz-content-')
    const file = join(dir, 'file.bin')
    writeFileSync(file, contentBytes)
    const store = new SqliteContentStore({ db: openDatabase(join(dir, 'agent.db')), dir: join(dir, 'content'), capBytes: 1 << 30, privateKey: node.privateKey, peerId: node.peerId.toString() })
    await store.importFile(file, { chunkSize: CONTENT_CHUNK })
    // the real store, counting the look-ups a request makes
    const counting: ContentStore = {
      importFile: async (...a) => await store.importFile(...a),
      get: (md5) => { contentAnswered++; return store.get(md5) },
      list: () => store.list(),
      pathOf: (md5) => store.pathOf(md5),
      manifest: (md5) => { contentAnswered++; return store.manifest(md5) },
      bitmap: (md5) => store.bitmap(md5),
      readChunk: async (...a) => await store.readChunk(...a),
      begin: (signed) => store.begin(signed),
      writeChunk: async (...a) => { await store.writeChunk(...a) },
      complete: async (...a) => await store.complete(...a),
      acquire: (md5) => store.acquire(md5),
      remove: (md5) => { store.remove(md5) },
      evict: () => store.evict(),
      usage: () => store.usage()
    }
    contentUnderTest = contentService({ store: counting, onInvalid: strike })({ registrar: node.libp2p })
    await contentUnderTest.start()
  },
  cases: fc.tuple(payloadFrom([
    { op: 'manifest', md5: contentMd5 },
    { op: 'have', md5: contentMd5 },
    { op: 'chunk', md5: contentMd5, index: 0 },
    { op: 'chunk', md5: contentMd5, index: CONTENT_CHUNKS - 1, chunkSize: CONTENT_CHUNK },
    { op: 'have', md5: '0123456789abcdef0123456789abcdef' }
  ]), framingFor(MAX_REQUEST_BYTES)).map(([p, framing]) => ({
    bytes: frame(p.bytes, framing), payload: p.bytes, framing, keepOpen: refusedAtOnce(framing), label: `${framing.kind}/${p.how.split(/[:+]/).slice(0, 2).join(':')}`
  })),
  verdict: (c) => {
    const j = parseJson(c.payload)
    const req = j.ok ? ContentRequestSchema.safeParse(j.value) : null
    if (c.framing.kind !== 'ok' || c.payload.length > MAX_REQUEST_BYTES || req == null || !req.success) return { strike: true }
    const r = req.data
    const held = r.md5 === contentMd5 && (r.op !== 'chunk' || (r.index < CONTENT_CHUNKS && (r.chunkSize == null || r.chunkSize === CONTENT_CHUNK)))
    const before = contentAnswered
    return {
      strike: false,
      check: (ex) => {
        const head = parseJson(readFrames(ex.received)[0] ?? new Uint8Array(0))
        assert.ok(head.ok, `a valid request is answered with a JSON header (got ${ex.received.length} bytes)`)
        const answer = head.value as { ok?: boolean, error?: { code?: string } }
        if (held) assert.equal(answer.ok, true, `${r.op} of the file held is answered ok: ${JSON.stringify(answer)}`)
        else assert.equal(answer.error?.code, 'not_found', `${JSON.stringify(r)} is answered not_found: ${JSON.stringify(answer)}`)
        assert.ok(contentAnswered > before, 'a valid request reaches the store')
      }
    }
  }
}

const STREAM_TARGETS: Array<StreamTarget<any>> = [assignTarget, tunnelTarget, pipelineTarget, stateSyncTarget, contentTarget]

// ------------------------------------------------------------------ capacity gossip (a topic validator)

interface TopicCase {
  data: Uint8Array
  /** index into the authors, or 'self' (the node under test) */
  author: number | 'self'
  /** gossipsub author the message claims, when not the signer */
  claimed?: number
  unsigned?: boolean
  label: string
  /** the envelope (and payload) the frame was made from, for judging byte mutations */
  sealedFrom?: { bytes: Uint8Array, payload: Uint8Array }
  payload?: Uint8Array
}

interface Author { key: PrivateKey, id: PeerId }

function capacityRecord (peerId: string, seq: number): CapacityRecord {
  return {
    v: 1, peerId, name: 'fuzz', cluster: 'fuzz', vendor: '', addrs: [], epoch: 1, seq, ts: 1_700_000_000_000, heartbeatMs: 1000,
    readings: { cpu: { count: 2, model: 'cpu', load1: 0.1, load5: 0.1, load15: 0.1, utilisation: 3 }, memory: { totalBytes: 8e9, freeBytes: 4e9, availableBytes: 5e9 }, gpus: [{ index: 0, vendor: 'NVIDIA', model: 'L4', memoryTotalBytes: 24e9, memoryFreeBytes: null, utilisation: null, simulated: true }] },
    instances: [{ block: 'b', instance: 'b-0', owner: peerId, status: 'ready', error: null, provider: 'cpu', component: 'demo:1', active: 0, queued: 0, tokensPerSecond: 1, affinity: true, sessionTtl: 600 }],
    vdags: [],
    links: [],
    providers: [{ name: 'cpu', available: true }]
  }
}

class OtherRecord implements Libp2pRecord {
  readonly domain = 'blockmesh-other'
  readonly codec = utf8('/blockmesh/other/1')
  private readonly bytes: Uint8Array
  constructor (bytes: Uint8Array) { this.bytes = bytes }
  marshal (): Uint8Array { return this.bytes }
  equals (): boolean { return false }
}

/** Capacity frames: mutated records correctly signed, envelopes with flipped bits, other domains, garbage, oversize, unsigned, impersonation. */
function gossipCases (authors: Author[], nextSeq: () => number): fc.Arbitrary<() => Promise<TopicCase>> {
  const who = fc.nat(authors.length - 1)
  const record = (a: number): CapacityRecord => capacityRecord(authors[a].id.toString(), nextSeq())
  return fc.oneof(
    { weight: 8, arbitrary: fc.tuple(who, fc.nat()).chain(([a]) => mutatedJson(record(a)).map(m => async () => {
      const payload = utf8(JSON.stringify(m.value) ?? 'null')
      return { data: await sealCapacityPayload(payload, authors[a].key), author: a, payload, label: `record:${m.how.split('+')[0]}` }
    })) },
    { weight: 3, arbitrary: who.chain(a => { const r = record(a); return mutatedBytes(utf8(JSON.stringify(r))).map(m => async () => ({ data: await sealCapacityPayload(m.bytes, authors[a].key), author: a, payload: m.bytes, label: `payload-bytes:${m.how}` })) }) },
    { weight: 3, arbitrary: fc.tuple(who, fc.nat()).chain(([a, s]) => {
      // the envelope itself mutated: its bytes are chosen below, from the sealed frame
      return fc.constant(async () => {
        const payload = utf8(JSON.stringify(record(a)))
        const sealed = await sealCapacityPayload(payload, authors[a].key)
        const m = fc.sample(mutatedBytes(sealed), { seed: s, numRuns: 1 })[0]
        return { data: m.bytes, author: a, sealedFrom: { bytes: sealed, payload }, label: `envelope:${m.how}` }
      })
    }) },
    { weight: 1, arbitrary: who.map(a => async () => ({ data: (await RecordEnvelope.seal(new OtherRecord(utf8(JSON.stringify(record(a)))), authors[a].key)).marshal(), author: a, label: 'other-domain' })) },
    { weight: 1, arbitrary: fc.tuple(who, fc.uint8Array({ maxLength: 512 })).map(([a, b]) => async () => ({ data: b, author: a, label: 'garbage' })) },
    { weight: 1, arbitrary: fc.tuple(who, fc.integer({ min: 1, max: 4 })).map(([a, k]) => async () => {
      const padded = { ...record(a), pad: 'x'.repeat(MAX_CAPACITY_FRAME_BYTES * k) }
      return { data: await sealCapacityPayload(utf8(JSON.stringify(padded)), authors[a].key), author: a, label: 'oversized' }
    }) },
    { weight: 1, arbitrary: fc.tuple(who, who, fc.boolean()).filter(([a, b]) => a !== b).map(([a, b, signedByA]) => async () => {
      // a record naming b, signed by a (impersonation), or b's own record relayed as if a wrote it
      const payload = utf8(JSON.stringify(record(b)))
      return signedByA
        ? { data: await sealCapacityPayload(payload, authors[a].key), author: a, payload, label: 'impersonation' }
        : { data: await sealCapacityPayload(payload, authors[b].key), author: b, claimed: a, payload, label: 'author-mismatch' }
    }) },
    { weight: 1, arbitrary: who.map(a => async () => { const payload = utf8(JSON.stringify(record(a))); return { data: await sealCapacityPayload(payload, authors[a].key), author: a, payload, unsigned: true, label: 'unsigned' } }) },
    { weight: 2, arbitrary: who.map(a => async () => { const payload = utf8(JSON.stringify(record(a))); return { data: await sealCapacityPayload(payload, authors[a].key), author: a, payload, label: 'valid' } }) },
    { weight: 1, arbitrary: fc.constant(async () => ({ data: new Uint8Array(0), author: 'self' as const, label: 'self-placeholder' })) }
  )
}

describe(`mesh protocols in process: ${FRAMES} generated and mutated frames each, real handlers, real Penalties`, () => {
  let node: MeshNode
  let handlers: Map<string, StreamHandler>
  const crashes = new CrashWatch()

  before(async () => {
    // a fixed identity: generated frames that name this node are then the same on every run
    node = await MeshNode.create({ privateKey: await generateKeyPairFromSeed('Ed25519', new Uint8Array(32).fill(13)), listen: ['/ip4/127.0.0.1/tcp/0'] })
    handlers = captureHandlers(node)
    await node.start()
    selfId = node.peerId.toString()
    crashes.arm()
  })
  after(async () => {
    crashes.disarm()
    await node.stop()
  })

  for (const target of STREAM_TARGETS) {
    test(`${target.name} (${target.protocol}): every bad frame refused and struck, senders banned at 3, no crash, bounded heap`, async () => {
      const strikes = new Map<string, string[]>()
      const banned = new Set<string>()
      const penalties = new Penalties(node, {
        onStrike: (peer, reason) => { strikes.set(peer, [...(strikes.get(peer) ?? []), reason]) },
        onBan: (peer) => { banned.add(peer) }
      })
      const strike = (peer: string, reason: string): void => { penalties.strike(peer, reason) }
      await target.serve({ node, penalties, strike })
      const handler = handlers.get(target.protocol)
      assert.ok(handler != null, `${target.protocol} is served`)

      const senders = await new Senders(newPeerId).start()
      let link = new MemoryLink()
      const tally = new Tally()
      let bad = 0
      const heapBefore = await settledHeap()
      await fc.assert(fc.asyncProperty(target.cases, async (c: StreamCase) => {
        const peer = senders.current
        const id = peer.toString()
        currentSender = id
        const before = strikes.get(id)?.length ?? 0
        const verdict = target.verdict(c, { self: selfId, stages: STAGES })
        const { client, server } = await link.open()
        let handlerError: unknown
        const served = Promise.resolve(handler(server, { remotePeer: peer } as unknown as Connection)).catch((err: unknown) => { handlerError = err })
        const ex = await within(exchange(client, c.bytes, c.keepOpen), HANG_MS, `${target.name}: exchange (${c.label}, keepOpen ${String(c.keepOpen)})`)
        await within(served, HANG_MS, `${target.name}: handler`)
        assert.equal(handlerError, undefined, `the handler threw: ${String(handlerError)}`)
        const got = (strikes.get(id)?.length ?? 0) - before
        if (verdict.strike) {
          assert.equal(got, 1, `a bad frame (${c.label}) costs its sender one strike; got ${got}`)
          bad++
        } else {
          assert.equal(got, 0, `a good frame (${c.label}) costs nothing; got ${got}: ${strikes.get(id)?.at(-1) ?? ''}`)
          assert.equal(ex.reset, false, `a good frame (${c.label}) is not answered with a reset`)
          verdict.check?.(ex)
        }
        tally.add(`${verdict.strike ? 'bad' : 'good'}:${process.env.FUZZ_FULL_LABELS != null ? c.label : c.label.split('/')[0]}`)
        if (node.gate.isBanned(id)) {
          assert.equal(strikes.get(id)?.length, 3, 'banned at the third strike')
          link.close()
          link = new MemoryLink()
          await senders.rotate()
        }
      }), fuzzParams(FRAMES))
      link.close()
      const heapAfter = await settledHeap()
      const growth = heapAfter - heapBefore
      console.log(`${target.name}: ${tally.total} frames, ${bad} bad (${senders.retired.length} senders banned), heap ${(heapBefore / MiB).toFixed(1)} → ${(heapAfter / MiB).toFixed(1)} MiB; ${tally.toString()}`)
      assert.ok(bad >= FRAMES * 0.6, `most generated frames are bad (${bad} of ${FRAMES})`)
      assert.equal(senders.retired.length, Math.floor(bad / 3), 'every third strike of a sender banned it')
      for (const p of senders.retired) assert.ok(banned.has(p.toString()) && node.gate.isBanned(p.toString()), 'retired senders are banned')
      assert.ok(growth < HEAP_BOUND, `heap grew ${(growth / MiB).toFixed(1)} MiB over ${FRAMES} frames`)
      assert.deepEqual(crashes.errors, [])
    })
  }

  test('inference tunnel: a length prefix that never ends is refused without waiting for the end of the stream', async () => {
    const handler = handlers.get(INFER_PROTOCOL)
    assert.ok(handler != null, 'the tunnel test above registered the protocol')
    const link = new MemoryLink()
    try {
      const { client, server } = await link.open()
      const served = Promise.resolve(handler(server, { remotePeer: await newPeerId() } as unknown as Connection))
      const ex = await within(exchange(client, new Uint8Array(9).fill(0xff), true), 3000, 'a never-ending length prefix')
      assert.ok(ex.reset, 'refused')
      await served
    } finally {
      link.close()
    }
  })

  test('capacity gossip (topic validator): bad frames rejected and struck against the forwarder, stale/self ignored, valid accepted', async () => {
    const authors: Author[] = await Promise.all(Array.from({ length: 6 }, async (_, i) => { const key = await generateKeyPairFromSeed('Ed25519', new Uint8Array(32).fill(100 + i)); return { key, id: peerIdFromPrivateKey(key) } }))
    const rejected = new Map<string, number>()
    const banned = new Set<string>()
    const gossip = new CapacityGossip(node, {
      identity: { name: 'fuzz-target', cluster: 'fuzz', vendor: '' },
      epoch: 1,
      heartbeatMs: 60_000,
      readings: () => capacityRecord(selfId, 0).readings,
      observer: {
        rejected: (_reason, source) => { rejected.set(source, (rejected.get(source) ?? 0) + 1) },
        banned: (peer) => { banned.add(peer) }
      }
    })
    await gossip.start()
    try {
      const validate = node.libp2p.services.pubsub.topicValidators.get(CAPACITY_TOPIC)
      assert.ok(validate != null, 'the capacity topic has a validator')
      const newest = new Map<string, Pick<CapacityRecord, 'epoch' | 'seq'>>()
      let seq = 1_000
      const forwarders = await new Senders(newPeerId).start()
      const tally = new Tally()
      let bad = 0
      let gossipSeq = 0n
      const heapBefore = await settledHeap()
      await fc.assert(fc.asyncProperty(gossipCases(authors, () => seq++), async (make) => {
        const c = await make()
        const selfCase = c.author === 'self'
        const signer = selfCase ? node.peerId : authors[c.author as number].id
        const data = selfCase ? await sealCapacityPayload(utf8(JSON.stringify(capacityRecord(selfId, seq++))), node.privateKey) : c.data
        const from = c.claimed != null ? authors[c.claimed].id : signer
        const source = forwarders.current
        const msg = (c.unsigned === true
          ? { type: 'unsigned', topic: CAPACITY_TOPIC, data }
          : { type: 'signed', from, topic: CAPACITY_TOPIC, data, sequenceNumber: gossipSeq++, signature: new Uint8Array(64), key: (selfCase ? node.privateKey : authors[c.author as number].key).publicKey }) as unknown as Message

        // the rules (docs/decisions.md, mesh and capacity gossip): a signed envelope of the capacity domain within
        // 64 KiB, signed by the peer its record names, which is the gossip author; stale or own records are ignored
        let expected: TopicValidatorResult = TopicValidatorResult.Reject
        let payload = c.payload
        if (c.sealedFrom != null) {
          // an envelope with mutated bytes is judged as the original if every signed field came through unchanged
          let same = false
          try {
            const e = RecordEnvelope.createFromProtobuf(c.data)
            const o = RecordEnvelope.createFromProtobuf(c.sealedFrom.bytes)
            const eq = (x: Uint8Array, y: Uint8Array): boolean => x.length === y.length && x.every((b, i) => b === y[i])
            same = eq(e.payload, o.payload) && eq(e.payloadType, o.payloadType) && eq(e.signature, o.signature) && eq(e.publicKey.raw, o.publicKey.raw)
          } catch { /* not an envelope */ }
          payload = same ? c.sealedFrom.payload : undefined
        }
        if (selfCase && c.unsigned !== true) expected = TopicValidatorResult.Ignore
        else if (c.unsigned !== true && payload != null && data.length <= MAX_CAPACITY_FRAME_BYTES) {
          const j = parseJson(payload)
          const r = j.ok ? CapacityRecordSchema.safeParse(j.value) : null
          if (r?.success === true && r.data.peerId === signer.toString() && signer.equals(from)) {
            const known = newest.get(r.data.peerId)
            if (known != null && compareRecords(r.data, known) <= 0) expected = TopicValidatorResult.Ignore
            else { expected = TopicValidatorResult.Accept; newest.set(r.data.peerId, r.data) }
          }
        }
        const before = rejected.get(source.toString()) ?? 0
        const result = await validate(source, msg)
        assert.equal(result, expected, `${c.label}: expected ${expected}, got ${result}`)
        assert.equal((rejected.get(source.toString()) ?? 0) - before, expected === TopicValidatorResult.Reject ? 1 : 0)
        if (expected === TopicValidatorResult.Reject) bad++
        tally.add(`${expected}:${c.label.split(':')[0]}`)
        if (node.gate.isBanned(source.toString())) {
          assert.equal(rejected.get(source.toString()), 3, 'banned at the third rejected frame')
          await forwarders.rotate()
        }
      }), fuzzParams(FRAMES))
      const heapAfter = await settledHeap()
      console.log(`capacity gossip: ${tally.total} frames, ${bad} rejected (${forwarders.retired.length} forwarders banned), heap ${(heapBefore / MiB).toFixed(1)} → ${(heapAfter / MiB).toFixed(1)} MiB; ${tally.toString()}`)
      assert.ok(bad >= FRAMES * 0.6, `most generated frames are bad (${bad} of ${FRAMES})`)
      assert.equal(forwarders.retired.length, Math.floor(bad / 3))
      for (const p of forwarders.retired) assert.ok(banned.has(p.toString()) && node.gate.isBanned(p.toString()))
      // accepted records: only the honest authors' own, never an impersonated one
      assert.ok(gossip.peers().every(p => authors.some(a => a.id.toString() === p.record.peerId)))
      assert.ok(heapAfter - heapBefore < HEAP_BOUND, `heap grew ${((heapAfter - heapBefore) / MiB).toFixed(1)} MiB`)
      assert.deepEqual(crashes.errors, [])
    } finally {
      gossip.stop()
    }
  })
  test('desired-state changes (topic validator): forged, foreign, tampered and oversized changes rejected and struck; in-order changes applied; replays and gaps ignored', async () => {
    // the real StateSync over a real DesiredState; its strikes go to a real Penalties table
    const strikes = new Map<string, number>()
    const banned = new Set<string>()
    const penalties = new Penalties(node, { onStrike: (peer) => { strikes.set(peer, (strikes.get(peer) ?? 0) + 1) }, onBan: (peer) => { banned.add(peer) } })
    if (stateSyncUnderTest != null) await stateSyncUnderTest.sync.stop()
    const { sync, state } = await startStateSync(node, penalties)
    stateSyncUnderTest = null
    try {
      const validate = node.libp2p.services.pubsub.topicValidators.get(STATE_TOPIC)
      assert.ok(validate != null, 'the state topic has a validator')
      const writers: Author[] = await Promise.all(Array.from({ length: 3 }, async (_, i) => { const key = await generateKeyPairFromSeed('Ed25519', new Uint8Array(32).fill(150 + i)); return { key, id: peerIdFromPrivateKey(key) } }))
      // each writer's own document, so its changes form a real causal chain
      const docs = writers.map(w => Automerge.init<any>({ actor: actorFor(w.id.toString(), 1) }))
      const sent: Uint8Array[] = []
      const change = (w: number, edit: (d: any) => void): Uint8Array => {
        docs[w] = Automerge.change(docs[w], edit)
        return Automerge.getLastLocalChange(docs[w]) as Uint8Array
      }
      type Case = { label: string, expected: TopicValidatorResult, make: () => Promise<Uint8Array> }
      const w = fc.nat(writers.length - 1)
      const key = fc.stringMatching(/^[a-z0-9][a-z0-9.-]{0,20}$/)
      const cases: fc.Arbitrary<Case> = fc.oneof(
        { weight: 2, arbitrary: fc.tuple(w, key, fc.jsonValue()).map(([i, k, v]) => ({ label: 'valid', expected: TopicValidatorResult.Accept, make: async () => {
          // a serial in the value: writing a key's current value again is no change at all in Automerge
          const f = await sealChange(change(i, d => { d[`blocks/${k}`] = new Automerge.ImmutableString(JSON.stringify({ v, n: sent.length }) ?? 'null') }), writers[i].key)
          sent.push(f)
          return f
        } })) },
        { weight: 1, arbitrary: fc.constant(0).map(() => ({ label: 'replay', expected: TopicValidatorResult.Ignore, make: async () => sent.length > 0 ? sent[0] : new Uint8Array(0) })) },
        { weight: 1, arbitrary: fc.tuple(w, key).map(([i, k]) => ({ label: 'gap', expected: TopicValidatorResult.Ignore, make: async () => {
          // a change whose predecessor never reached the node: nothing kept, a pull asked for instead
          const ahead = Automerge.change(Automerge.clone(docs[i], { actor: actorFor(writers[i].id.toString(), 7) }), (d: any) => { d[`vdags/${k}`] = new Automerge.ImmutableString('1') })
          const skipped = Automerge.change(ahead, (d: any) => { d[`vdags/${k}`] = new Automerge.ImmutableString('2') })
          return await sealChange(Automerge.getLastLocalChange(skipped) as Uint8Array, writers[i].key)
        } })) },
        { weight: 2, arbitrary: fc.tuple(w, fc.constantFrom<Array<(d: any) => void>>(
          d => { d.blocks = { x: 1 } }, d => { d['blocks/t'] = 'a text object' }, d => { d['secrets/x'] = new Automerge.ImmutableString('1') },
          d => { d['blocks/n'] = 5 }, d => { d['blocks/big'] = new Automerge.ImmutableString('x'.repeat(300 * 1024)) }, d => { d.list = [1, 2] })).map(([i, edit]) => ({
          label: 'bad-op', expected: TopicValidatorResult.Reject,
          make: async () => await sealChange(Automerge.getLastLocalChange(Automerge.change(Automerge.init<any>({ actor: actorFor(writers[i].id.toString(), 99) }), edit)) as Uint8Array, writers[i].key)
        })) },
        { weight: 2, arbitrary: fc.tuple(w, fc.nat(writers.length - 1)).filter(([a, b]) => a !== b).map(([a, b]) => ({
          label: 'forged-writer', expected: TopicValidatorResult.Reject,
          make: async () => await sealChange(Automerge.getLastLocalChange(Automerge.change(Automerge.init<any>({ actor: actorFor(writers[b].id.toString(), 5) }), (d: any) => { d['blocks/evil'] = new Automerge.ImmutableString('{}') })) as Uint8Array, writers[a].key)
        })) },
        { weight: 2, arbitrary: fc.tuple(w, fc.nat(), fc.nat(7)).map(([i, at, bit]) => ({
          label: 'tampered', expected: TopicValidatorResult.Reject,
          make: async () => {
            const c = Automerge.getLastLocalChange(Automerge.change(Automerge.init<any>({ actor: actorFor(writers[i].id.toString(), 42) }), (d: any) => { d['blocks/x'] = new Automerge.ImmutableString('{"a":1}') })) as Uint8Array
            const f = await sealChange(c, writers[i].key)
            // a bit flipped inside the signed payload
            const start = Buffer.from(f).indexOf(Buffer.from(c))
            const out = new Uint8Array(f)
            out[start + (at % c.length)] ^= 1 << bit
            return out
          }
        })) },
        { weight: 1, arbitrary: fc.uint8Array({ maxLength: 2048 }).map(b => ({ label: 'garbage', expected: TopicValidatorResult.Reject, make: async () => b })) },
        { weight: 1, arbitrary: fc.constant(0).map(() => ({ label: 'oversized', expected: TopicValidatorResult.Reject, make: async () => new Uint8Array(MAX_STATE_FRAME_BYTES + 1) })) }
      )
      const forwarders = await new Senders(newPeerId).start()
      const tally = new Tally()
      let bad = 0
      const heapBefore = await settledHeap()
      await fc.assert(fc.asyncProperty(cases, async (c) => {
        const data = await c.make()
        // a replay before anything was sent is garbage (empty frame)
        const expected = c.label === 'replay' && data.length === 0 ? TopicValidatorResult.Reject : c.expected
        const source = forwarders.current
        const msg = { type: 'signed', from: source, topic: STATE_TOPIC, data, sequenceNumber: 0n, signature: new Uint8Array(64), key: node.privateKey.publicKey } as unknown as Message
        const before = strikes.get(source.toString()) ?? 0
        const result = await validate(source, msg)
        assert.equal(result, expected, `${c.label}: expected ${expected}, got ${result}`)
        assert.equal((strikes.get(source.toString()) ?? 0) - before, expected === TopicValidatorResult.Reject ? 1 : 0, `${c.label}: strikes`)
        if (expected === TopicValidatorResult.Reject) bad++
        tally.add(`${expected}:${c.label}`)
        if (node.gate.isBanned(source.toString())) await forwarders.rotate()
      }), fuzzParams(FRAMES))
      const heapAfter = await settledHeap()
      console.log(`state changes: ${tally.total} frames, ${bad} rejected (${forwarders.retired.length} forwarders banned), heap ${(heapBefore / MiB).toFixed(1)} → ${(heapAfter / MiB).toFixed(1)} MiB; ${tally.toString()}`)
      assert.equal(forwarders.retired.length, Math.floor(bad / 3), 'every third strike of a forwarder banned it')
      for (const p of forwarders.retired) assert.ok(banned.has(p.toString()) && node.gate.isBanned(p.toString()))
      // only the valid changes made it in; no forged or foreign object exists
      const valid = tally.count(`${TopicValidatorResult.Accept}:valid`)
      assert.equal(state.changes(), valid + 1, 'the node\'s own change plus every valid one')
      assert.equal(state.get('blocks', 'evil'), undefined)
      assert.ok(heapAfter - heapBefore < HEAP_BOUND, `heap grew ${((heapAfter - heapBefore) / MiB).toFixed(1)} MiB`)
      assert.deepEqual(crashes.errors, [])
    } finally {
      await sync.stop()
    }
  })
})

// ====================================================================== over the wire

/**
 * Dials to the agent, at most one every 350 ms: libp2p refuses more than 5 inbound connections a
 * second from one host (inboundConnectionThreshold), which would make a refused redial prove nothing.
 */
let lastDial = 0
async function paced<T> (dial: () => Promise<T>): Promise<T> {
  const wait = lastDial + 350 - Date.now()
  if (wait > 0) await new Promise(resolve => setTimeout(resolve, wait))
  lastDial = Date.now()
  return await dial()
}

/** A rogue: a real libp2p node with a fresh identity, connected to the agent. */
async function rogueNode (agent: AgentProcess): Promise<{ node: MeshNode, disconnected: Promise<void> }> {
  const node = await MeshNode.create({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
  await node.start()
  const agentPeer = agent.peerId
  const disconnected = new Promise<void>(resolve => {
    node.libp2p.addEventListener('peer:disconnect', (e) => { if (e.detail.toString() === agentPeer) resolve() })
  })
  await until(async () => await paced(async () => await node.libp2p.dial(multiaddr(agent.addr), { signal: AbortSignal.timeout(5000) }).then(() => true, () => false)), 'a fresh rogue to connect', 30_000)
  return { node, disconnected }
}

interface WireTarget {
  name: string
  /** sends one batch of bad frames from `rogue`; resolves once they are sent */
  send: (rogue: MeshNode, agent: AgentProcess, frames: Uint8Array[]) => Promise<void>
  /** bad frames of this protocol (each one a strike) */
  frames: fc.Arbitrary<Uint8Array>
}

function sendOnStreams (protocol: string): WireTarget['send'] {
  return async (rogue: MeshNode, agent: AgentProcess, frames: Uint8Array[]): Promise<void> => {
    for (const bytes of frames) {
      let stream
      try {
        stream = await rogue.libp2p.dialProtocol(multiaddr(agent.addr), protocol, { signal: AbortSignal.timeout(10_000) })
      } catch { return } // already disconnected and banned
      await within(exchange(stream, bytes), HANG_MS, `${protocol} over the wire`)
    }
  }
}

/** Cases of a stream target that are strikes and end with the stream closed (the wire sample). */
function wireFrames<C extends StreamCase> (t: StreamTarget<C>): fc.Arbitrary<Uint8Array> {
  // the agent runs no pipeline stage: every open it is sent is refused (without fault) or malformed
  return t.cases.filter(c => !c.keepOpen && t.verdict(c, { self: '', stages: [] }).strike).map(c => c.bytes)
}

const WIRE_BATCHES = 3
const WIRE_FRAMES_PER_BATCH = 3

// EXTENSION POINT (over the wire): one entry per protocol the agent serves; the replication protocol's pull
// side: { name: 'state sync', send: sendOnStreams(STATE_SYNC_PROTOCOL), frames: wireFrames(<its target>) }.
const WIRE_TARGETS: WireTarget[] = [
  { name: 'assign RPC', send: sendOnStreams(ASSIGN_PROTOCOL), frames: wireFrames(assignTarget) },
  { name: 'inference tunnel', send: sendOnStreams(INFER_PROTOCOL), frames: wireFrames(tunnelTarget) },
  { name: 'pipeline stream', send: sendOnStreams(PIPELINE_PROTOCOL), frames: wireFrames(pipelineTarget) },
  { name: 'state sync', send: sendOnStreams(STATE_SYNC_PROTOCOL), frames: wireFrames(stateSyncTarget) },
  { name: 'content', send: sendOnStreams(CONTENT_PROTOCOL), frames: wireFrames(contentTarget) },
  {
    name: 'capacity gossip',
    frames: fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 512 }),
      brokenJsonText.map(utf8),
      fc.constant(new Uint8Array(MAX_CAPACITY_FRAME_BYTES + 1).fill(7))
    ),
    send: async (rogue, agent, frames) => {
      const pubsub = rogue.libp2p.services.pubsub
      pubsub.subscribe(CAPACITY_TOPIC)
      await until(() => pubsub.getSubscribers(CAPACITY_TOPIC).some(p => p.toString() === agent.peerId), 'the agent on the capacity topic', 15_000)
      for (const data of frames) {
        // garbage, or a record of the rogue that is not one, signed by it (so only the content is wrong)
        const payload = data.length > 0 && data[0] % 2 === 0 ? await sealCapacityPayload(data, rogue.privateKey) : data
        await pubsub.publish(CAPACITY_TOPIC, payload).catch(() => {})
      }
    }
  }
]

describe('mesh protocols over the wire: bad frames from fresh identities against one agent process', () => {
  let agent: AgentProcess
  const rogues: MeshNode[] = []
  before(async () => { agent = await AgentProcess.start({ name: 'fuzz-wire' }) })
  after(async () => {
    await Promise.all(rogues.map(async r => await r.stop().catch(() => {})))
    await stopAll([agent])
  })

  for (const [k, target] of WIRE_TARGETS.entries()) {
    test(`${target.name}: ${WIRE_BATCHES} rogues × ${WIRE_FRAMES_PER_BATCH} bad frames: each rogue disconnected and banned, the agent keeps serving`, async () => {
      const batches = fc.sample(fc.array(target.frames, { minLength: WIRE_FRAMES_PER_BATCH, maxLength: WIRE_FRAMES_PER_BATCH }), { seed: fuzzParams(1).seed! + k, numRuns: WIRE_BATCHES })
      for (const frames of batches) {
        const bannedBefore = await agent.metric('blockmesh_peers_banned_total')
        const { node: rogue, disconnected } = await rogueNode(agent)
        rogues.push(rogue)
        await target.send(rogue, agent, frames)
        await within(disconnected, 30_000, `${target.name}: the agent to disconnect the rogue`)
        await until(async () => await agent.metric('blockmesh_peers_banned_total') === bannedBefore + 1, `${target.name}: the rogue counted as banned`)
        // a banned peer gets no working connection again
        const again = await paced(async () => await rogue.libp2p.dial(multiaddr(agent.addr), { signal: AbortSignal.timeout(5000) })).then(async conn => {
          await new Promise(resolve => setTimeout(resolve, 300))
          return conn.status === 'open' && rogue.isConnected(agent.peerId)
        }, () => false)
        assert.equal(again, false, 'a banned rogue cannot reconnect')
        await rogue.stop()
      }
      assert.equal((await agent.api('/api/health')).body.status, 'ok')
      assert.ok(agent.child.exitCode == null && agent.child.signalCode == null, 'the agent process is up')
      const listed = (await agent.peers('all')).map(p => p.peerId)
      assert.ok(rogues.every(r => !listed.includes(r.peerId.toString())), 'no rogue is listed as a peer')
    })
  }

  test('the agent counted every strike and ban, and still answers', async () => {
    const strikes = await agent.metric('blockmesh_peer_strikes_total')
    const rejected = await agent.metric('blockmesh_gossip_messages_rejected_total')
    const banned = await agent.metric('blockmesh_peers_banned_total')
    console.log(`over the wire: ${strikes} strikes on the agent's protocols, ${rejected} gossip frames rejected, ${banned} peers banned`)
    assert.equal(banned, WIRE_TARGETS.length * WIRE_BATCHES)
    assert.ok(strikes >= (WIRE_TARGETS.length - 1) * WIRE_BATCHES * 3, `strikes counted: ${strikes}`)
    assert.ok(rejected >= WIRE_BATCHES * 3)
    assert.equal((await agent.api('/api/node')).status, 200)
  })
})
