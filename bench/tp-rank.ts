/**
 * One process of bench/tensor-parallel.ts, pinned to its own core by the parent (taskset). Given one JSON
 * argument, it either times the whole generated ~100M model's decode step (mode "whole"), or acts as rank
 * r of a tensor-parallel pair (mode "rank", agent/model/tp-graph.ts): it times its segments alone (compute),
 * then with a real all-reduce after every segment — its partial sent to the other rank over
 * /blockmesh/pipeline/1.0.0 (PeerLinks: TCP + Noise + Yamux, the agent's own link class) and the other's
 * added. Steps decode one position per sequence over a past of `past` positions; the KV caches are inputs
 * of that length and only the run's own keys and values are fetched, as an engine that keeps its cache does.
 * Prints JSON lines: {"ready", multiaddr, peer} once listening, then {"result": ...}.
 */
import { z } from 'zod'
import ort from 'onnxruntime-node'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { PRESETS } from '../agent/model/spec.ts'
import type { ModelSpec } from '../agent/model/spec.ts'
import { modelWeights } from '../agent/model/weights.ts'
import type { NamedTensor } from '../agent/model/weights.ts'
import { buildGraph, io } from '../agent/model/graph.ts'
import { encodeModel } from '../agent/model/onnx.ts'
import { splitDecoder } from '../agent/splitter/onnx-split.ts'
import { attentionSegment, headSegment, mlpSegment, tpIo, tpShare } from '../agent/model/tp-graph.ts'
import { MeshNode, silentLogger } from '../mesh/node.ts'
import { PeerLinks } from '../mesh/pipeline-link.ts'
import type { PipelineFrame } from '../mesh/pipeline-frame.ts'
import { median } from './stats.ts'

const Args = z.object({
  mode: z.enum(['whole', 'rank']),
  rank: z.number().int().min(0).default(0),
  ranks: z.number().int().min(1).default(1),
  batches: z.array(z.number().int().min(1).max(64)),
  past: z.number().int().min(1).max(1024),
  steps: z.number().int().min(3).max(1000),
  /** the other rank's address, for rank 0 (rank 1 listens) */
  dial: z.object({ multiaddr: z.string(), peer: z.string() }).optional()
})
const args = Args.parse(JSON.parse(process.argv[2] ?? '{}'))

export interface RankTimes {
  /** per batch size: median ms per decode step */
  computeMs: Record<number, number>
  /** mode whole, per batch size b: the 2 pipeline stages' ms per step at batch b/2 (a micro-batch) */
  stageMs?: Record<number, [number, number]>
  /** with the all-reduces (mode rank, 2+ ranks) */
  stepMs?: Record<number, number>
  /** with the all-reduces, the batch as two micro-batches taking turns (batches of 2 and more) */
  overlappedMs?: Record<number, number>
  /** per batch, in step: how long an all-reduce waited for the other rank's partial, ms (p50, p90, p99) */
  waitMs?: Record<number, [number, number, number]>
  /** all-reduces per step and payload bytes of each, per batch */
  exchanges?: number
}

const spec: ModelSpec = { ...PRESETS['100m'], seed: 1 }
const W = new Map<string, NamedTensor>([...modelWeights(spec)].map(t => [t.name, t]))
const D = spec.hidden / spec.heads
const opts: ort.InferenceSession.SessionOptions = { intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: 'all' }
const f32 = (data: Float32Array, dims: number[]): ort.Tensor => new ort.Tensor('float32', data, dims)
const i64 = (n: number, v: number, dims: number[]): ort.Tensor => new ort.Tensor('int64', new BigInt64Array(n).fill(BigInt(v)), dims)

async function time (steps: number, run: () => Promise<void>): Promise<number> {
  for (let i = 0; i < 3; i++) await run()
  const ms: number[] = []
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now()
    await run()
    ms.push(performance.now() - t0)
  }
  return median(ms)
}

/** Feeds for any of the model's graphs (whole or a pipeline stage) at batch `b` over a past of `P`, by input name. */
function feedsFor (session: ort.InferenceSession, b: number, P: number): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {}
  const past = f32(new Float32Array(b * spec.heads * P * D).fill(0.01), [b, spec.heads, P, D])
  for (const name of session.inputNames) {
    if (name === io.inputIds) feeds[name] = i64(b, 65, [b, 1])
    else if (name === io.attentionMask) feeds[name] = i64(b * (P + 1), 1, [b, P + 1])
    else if (name === io.positionIds) feeds[name] = i64(b, P, [b, 1])
    else if (name.startsWith('past_key_values.')) feeds[name] = past
    else feeds[name] = f32(new Float32Array(b * spec.hidden).fill(0.1), [b, 1, spec.hidden]) // a stage's hidden state in
  }
  return feeds
}

/** Everything but the whole present.* cache: what an engine that keeps its cache fetches. */
const keptFetches = (session: ort.InferenceSession): string[] => session.outputNames.filter(n => !/^present\.\d+\.(key|value)$/.test(n))

async function whole (): Promise<RankTimes> {
  const bytes = encodeModel(buildGraph(spec, W.values()))
  const session = await ort.InferenceSession.create(bytes, opts)
  // the same model cut into the 2 stages of the ring pipeline (agent/splitter), on the same core
  const stages = await Promise.all(splitDecoder(bytes, 2).stages.map(async st => await ort.InferenceSession.create(st.bytes, opts)))
  const out: RankTimes = { computeMs: {}, stageMs: {} }
  for (const b of args.batches) {
    const feeds = feedsFor(session, b, args.past)
    out.computeMs[b] = await time(args.steps, async () => { await session.run(feeds, keptFetches(session)) })
    if (b >= 2) {
      // a micro-batch: half the streams
      const ms: number[] = []
      for (const st of stages) {
        const f = feedsFor(st, b >> 1, args.past)
        ms.push(await time(args.steps, async () => { await st.run(f, keptFetches(st)) }))
      }
      out.stageMs![b] = [ms[0], ms[1]]
    }
  }
  return out
}

/** Frames from the other rank by exchange number, and who waits for which. */
class Exchange {
  private readonly got = new Map<number, Float32Array>()
  private readonly waiting = new Map<number, (p: Float32Array) => void>()
  private n = 0
  /** ms each all-reduce waited for the other rank's partial (0: it had arrived) */
  waits: number[] = []
  private readonly links: PeerLinks
  private readonly peer: string
  private readonly seq: string
  constructor (links: PeerLinks, peer: string, seq: string) {
    this.links = links
    this.peer = peer
    this.seq = seq
  }

  onFrame (f: PipelineFrame): void {
    const p = new Float32Array(f.payload!.buffer.slice(f.payload!.byteOffset, f.payload!.byteOffset + f.payload!.byteLength))
    const w = this.waiting.get(f.step)
    if (w != null) { this.waiting.delete(f.step); w(p) } else this.got.set(f.step, p)
  }

  /** Sends this rank's partial and resolves with the other's, for the same exchange. */
  async allReduce (partial: Float32Array): Promise<Float32Array> {
    const step = this.n++
    void this.links.send(this.peer, { kind: 'step', seq: this.seq, step, pastLen: 0, rows: 1, token: 0, flags: 0, dtype: 'float32', meta: null, payload: new Uint8Array(partial.buffer, partial.byteOffset, partial.byteLength) })
    const have = this.got.get(step)
    if (have != null) { this.got.delete(step); this.waits.push(0); return have }
    const t0 = performance.now()
    const r = await new Promise<Float32Array>(resolve => { this.waiting.set(step, resolve) })
    this.waits.push(performance.now() - t0)
    return r
  }
}

async function rank (): Promise<RankTimes> {
  const share = tpShare(spec, args.rank, args.ranks)
  const attn = await Promise.all(Array.from({ length: spec.layers }, async (_, i) => await ort.InferenceSession.create(encodeModel(attentionSegment(spec, W, i, share)), opts)))
  const mlp = await Promise.all(Array.from({ length: spec.layers }, async (_, i) => await ort.InferenceSession.create(encodeModel(mlpSegment(spec, W, i, share)), opts)))
  const head = share.rank === 0 ? await ort.InferenceSession.create(encodeModel(headSegment(spec, W)), opts) : null

  let exchange: Exchange | null = null
  let stop = async (): Promise<void> => {}
  if (args.ranks > 1) {
    const node = await MeshNode.create({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    await node.start()
    let onFrame = (_f: PipelineFrame): void => {}
    const links = new PeerLinks({ libp2p: node.libp2p, isBanned: () => false }, {
      onFrame: (_p, f) => { onFrame(f) },
      onInvalid: (p, reason) => { throw new Error(`invalid frame from ${p}: ${reason}`) },
      onSendFailed: (_p, _f, err) => { throw err },
      onPeerLost: () => {},
      log: silentLogger
    })
    await links.start()
    process.stdout.write(JSON.stringify({ ready: true, multiaddr: node.multiaddrs()[0], peer: node.peerId.toString() }) + '\n')
    const other = args.dial ?? await new Promise<{ peer: string }>(resolve => { onFrame = f => { resolve({ peer: (f.meta as { peer: string }).peer }) } })
    if (args.dial != null) {
      await node.libp2p.dial(multiaddr(args.dial.multiaddr))
      await links.send(args.dial.peer, { kind: 'drop', seq: '0000000000000000', step: 0, pastLen: 0, rows: 0, token: 0, flags: 0, dtype: null, meta: { peer: node.peerId.toString() }, payload: null })
    }
    const ex = new Exchange(links, other.peer, `00000000000000${args.rank.toString(16).padStart(2, '0')}`)
    onFrame = f => { if (f.kind === 'step') ex.onFrame(f) }
    exchange = ex
    stop = async () => { await links.stop(); await node.stop() }
  } else {
    process.stdout.write(JSON.stringify({ ready: true }) + '\n')
  }

  const out: RankTimes = { computeMs: {}, stepMs: args.ranks > 1 ? {} : undefined, overlappedMs: args.ranks > 1 ? {} : undefined, waitMs: args.ranks > 1 ? {} : undefined, exchanges: 2 * spec.layers }
  for (const b of args.batches) {
    const P = args.past
    const H = spec.hidden
    /** One micro-batch of `rows` sequences: its hidden state, attention bias and (constant) past. */
    const batch = (rows: number): { rows: number, h: Float32Array, bias: ort.Tensor, past: ort.Tensor } => ({
      rows,
      h: new Float32Array(rows * H).fill(0.1),
      bias: f32(new Float32Array(rows * (P + 1)), [rows, 1, 1, P + 1]),
      past: f32(new Float32Array(rows * share.heads * P * D).fill(0.01), [rows, share.heads, P, D])
    })
    /** Segment s (even: layer s/2's attention, odd: its MLP) on micro-batch m: this rank's partial. */
    const segment = async (s: number, m: ReturnType<typeof batch>): Promise<Float32Array> => {
      const layer = s >> 1
      const hidden = f32(m.h, [m.rows, 1, H])
      const r = s % 2 === 0
        ? await attn[layer].run({ [tpIo.hidden]: hidden, [tpIo.bias]: m.bias, [tpIo.pastKey]: m.past, [tpIo.pastValue]: m.past }, [tpIo.partial, tpIo.stepKey, tpIo.stepValue])
        : await mlp[layer].run({ [tpIo.hidden]: hidden }, [tpIo.partial])
      return r[tpIo.partial].data as Float32Array
    }
    const addTo = (m: ReturnType<typeof batch>, own: Float32Array, other: Float32Array | null): void => {
      for (let k = 0; k < m.h.length; k++) m.h[k] += own[k] + (other?.[k] ?? 0)
    }
    const segments = 2 * spec.layers
    /** The whole batch, segment after segment, an all-reduce after each (when `reduce`). */
    const step = async (reduce: boolean): Promise<void> => {
      const m = batch(b)
      for (let s = 0; s < segments; s++) {
        const own = await segment(s, m)
        addTo(m, own, reduce && exchange != null ? await exchange.allReduce(own) : null)
      }
      if (head != null) await head.run({ [tpIo.hidden]: f32(m.h, [b, 1, H]) })
    }
    /**
     * Two micro-batches taking turns, so that one's all-reduce travels while the other computes: segment s
     * of the first, then the second's s, each sent as soon as it is computed and its sum awaited only
     * before that micro-batch's next segment.
     */
    const overlapped = async (): Promise<void> => {
      const ms = [batch(b >> 1), batch(b - (b >> 1))]
      const pending: Array<{ own: Float32Array, other: Promise<Float32Array> } | null> = [null, null]
      for (let s = 0; s < segments; s++) {
        for (let j = 0; j < 2; j++) {
          const before = pending[j]
          if (before != null) addTo(ms[j], before.own, await before.other)
          const own = await segment(s, ms[j])
          pending[j] = { own, other: exchange!.allReduce(own) }
        }
      }
      for (let j = 0; j < 2; j++) {
        const last = pending[j]!
        addTo(ms[j], last.own, await last.other)
        if (head != null) await head.run({ [tpIo.hidden]: f32(ms[j].h, [ms[j].rows, 1, H]) })
      }
    }
    // compute alone: the ranks are not in step here, each times its own segments
    out.computeMs[b] = await time(args.steps, async () => { await step(false) })
    if (exchange != null) {
      exchange.waits = []
      out.stepMs![b] = await time(args.steps, async () => { await step(true) })
      const w = exchange.waits.slice(3 * segments).sort((x, y) => x - y) // not the warm-up steps
      out.waitMs![b] = [50, 90, 99].map(q => w[Math.min(w.length - 1, Math.floor(w.length * q / 100))]) as [number, number, number]
    }
    if (exchange != null && b >= 2) out.overlappedMs![b] = await time(args.steps, overlapped)
  }
  await stop()
  return out
}

const result = args.mode === 'whole' ? await whole() : await rank()
process.stdout.write(JSON.stringify({ result }) + '\n')
process.exit(0)
