/**
 * Pipeline hop cost (issue 14: "decode hop (4 KiB activation) p50/p99 over the tensor protocol ÷ raw
 * TCP, loopback; goal p50 ≤ 0.3 ms and ≤ 3× raw TCP"). Client here, server in a second process
 * (bench/stream-server.ts), so each gets a core. One hop is a round trip as a vDAG decode step makes
 * it: a step frame carrying a [1, 1, hidden] float32 activation (hidden 1024: 4 KiB) goes out, the
 * server answers with a small result frame for that sequence (what the last stage sends the driver).
 * Transports, measured in interleaved rounds so drifting machine load hits them alike:
 *  - raw TCP: [u32 length][the same 32-byte header and payload], answers built by hand, nothing checked;
 *  - raw TCP + the pipeline codec: varint-prefixed frames from encodeFrame, cut by FrameDecoder and
 *    decodeFrame on both sides (what our code adds, without libp2p);
 *  - PeerLinks on /blockmesh/pipeline/1.0.0 (TCP + Noise + Yamux, the class the agent uses on both ends);
 *  - TensorChannel on /blockmesh/tensor/1.0.0, the protocol it replaced (a stream per sequence, zod-checked
 *    JSON headers), for the record.
 * Each transport: sequential hops of one sequence (p50/p99), 8 sequences in flight at once (round trips
 * per second and p50: PeerLinks coalesces what the 8 send in one tick into one write), and a prefill
 * chunk (128 rows) round trip.
 */
import net from 'node:net'
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { MeshNode, silentLogger } from '../mesh/node.ts'
import { TENSOR_PROTOCOL, TensorChannel } from './legacy-tensor.ts'
import { PeerLinks } from '../mesh/pipeline-link.ts'
import { FrameDecoder, HEADER_BYTES, PIPELINE_PROTOCOL, encodeFrame } from '../mesh/pipeline-frame.ts'
import type { PipelineFrame } from '../mesh/pipeline-frame.ts'
import { median, percentile } from './stats.ts'
import { onU32Frames } from './stream-server.ts'

const MiB = 1024 * 1024

export const TRANSPORTS = ['tcp', 'codec', 'links', 'tensor'] as const
export type TransportName = typeof TRANSPORTS[number]
const LABEL: Record<TransportName, string> = {
  tcp: 'raw TCP',
  codec: 'raw TCP + pipeline frame codec',
  links: `PeerLinks, ${PIPELINE_PROTOCOL}`,
  tensor: 'TensorChannel, /blockmesh/tensor/1.0.0 (old)'
}

export interface TransportFigures {
  /** sequential hops of one sequence, µs each */
  hopUs: number[]
  /** hops with `concurrency` sequences in flight, µs each */
  concurrentUs: number[]
  /** round trips per second with `concurrency` sequences in flight, one figure per round */
  concurrentPerS: number[]
  /** prefill chunk round trips, µs each */
  prefillUs: number[]
}

export interface ActivationResult {
  hidden: number
  hops: number
  concurrency: number
  prefillRows: number
  transports: Partial<Record<TransportName, TransportFigures>>
}

/** One side of a transport: a hop sends sequence `k`'s step and resolves when its result is back. */
interface Transport {
  hop: (k: number, step: number, rows: number, payload: Uint8Array) => Promise<void>
  close: () => Promise<void>
}

/** Sequence ids: 16 hex digits, the last byte the sequence's index. */
const seqId = (k: number): string => k.toString(16).padStart(16, '0')

function stepFrame (k: number, step: number, rows: number, payload: Uint8Array): PipelineFrame {
  return { kind: 'step', seq: seqId(k), step, pastLen: step, rows, token: 1, flags: 0, dtype: 'float32', meta: null, payload }
}

/** Resolvers of the hops in flight, by sequence index; a result resolves its sequence's. */
class Waiters {
  private readonly w = new Map<number, () => void>()
  wait (k: number): Promise<void> {
    return new Promise<void>(resolve => { this.w.set(k, resolve) })
  }

  wake (k: number): void {
    const r = this.w.get(k)
    if (r == null) throw new Error(`a result for sequence ${k}, which has no step in flight`)
    this.w.delete(k)
    r()
  }
}

async function connectTcp (port: number): Promise<net.Socket> {
  const sock = net.connect(port, '127.0.0.1')
  sock.setNoDelay(true)
  await new Promise<void>((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject) })
  return sock
}

async function rawTcp (port: number): Promise<Transport> {
  const sock = await connectTcp(port)
  const waiters = new Waiters()
  onU32Frames(sock, body => { waiters.wake(body[11]) }) // the sequence id's last byte
  return {
    hop: async (k, step, rows, payload) => {
      const out = Buffer.allocUnsafe(4 + HEADER_BYTES + payload.length)
      out.writeUInt32BE(HEADER_BYTES + payload.length, 0)
      out.fill(0, 4, 4 + HEADER_BYTES)
      out[4] = 1; out[5] = 0; out[6] = 2 // version, step, float32
      out[4 + 11] = k
      out.writeUInt32LE(step, 4 + 12)
      out.writeUInt32LE(step, 4 + 16)
      out.writeUInt32LE(rows, 4 + 20)
      out.set(payload, 4 + HEADER_BYTES)
      const r = waiters.wait(k)
      sock.write(out)
      await r
    },
    close: async () => { sock.destroy() }
  }
}

async function codecTcp (port: number): Promise<Transport> {
  const sock = await connectTcp(port)
  const waiters = new Waiters()
  const decoder = new FrameDecoder()
  sock.on('data', (d: Buffer) => { for (const f of decoder.push(d)) waiters.wake(parseInt(f.seq, 16)) })
  return {
    hop: async (k, step, rows, payload) => {
      const r = waiters.wait(k)
      sock.cork()
      for (const c of encodeFrame(stepFrame(k, step, rows, payload))) sock.write(c)
      sock.uncork()
      await r
    },
    close: async () => { sock.destroy() }
  }
}

async function peerLinks (node: MeshNode, addr: string, peer: string): Promise<Transport> {
  await node.libp2p.dial(multiaddr(addr))
  const waiters = new Waiters()
  const links = new PeerLinks({ libp2p: node.libp2p, isBanned: () => false }, {
    onFrame: (_peer, f) => { waiters.wake(parseInt(f.seq, 16)) },
    onInvalid: (p, reason) => { throw new Error(`invalid pipeline bytes from ${p}: ${reason}`) },
    onSendFailed: (_p, _frames, err) => { throw err },
    onPeerLost: () => {},
    log: silentLogger
  })
  await links.start()
  return {
    hop: async (k, step, rows, payload) => {
      const r = waiters.wait(k)
      await links.send(peer, stepFrame(k, step, rows, payload))
      await r
    },
    close: async () => { await links.stop() }
  }
}

/** The old protocol: a stream per sequence (opened on its first hop), a JSON header then the payload. */
async function tensorChannels (node: MeshNode, addr: string, hidden: number): Promise<Transport> {
  const channels = new Map<number, TensorChannel>()
  const ma = multiaddr(addr)
  return {
    hop: async (k, step, rows, payload) => {
      let ch = channels.get(k)
      if (ch == null) {
        ch = new TensorChannel(await node.libp2p.dialProtocol(ma, TENSOR_PROTOCOL))
        channels.set(k, ch)
      }
      await ch.send({ kind: 'step', seq: seqId(k), step, dtype: 'float32', shape: [1, rows, hidden] }, payload)
      const m = await ch.recv()
      if (m.header.kind !== 'result') throw new Error(`expected a result, got ${m.header.kind}`)
    },
    close: async () => { for (const ch of channels.values()) await ch.close() }
  }
}

const us = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1000

async function sequential (t: Transport, n: number, rows: number, payload: Uint8Array, from: number): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint()
    await t.hop(0, from + i, rows, payload)
    out.push(us(t0))
  }
  return out
}

/** `concurrency` sequences, each hopping `per` times back to back; every hop's time, and round trips per second overall. */
async function concurrent (t: Transport, concurrency: number, per: number, payload: Uint8Array, from: number): Promise<{ us: number[], perS: number }> {
  const out: number[] = []
  const t0 = process.hrtime.bigint()
  await Promise.all(Array.from({ length: concurrency }, async (_, k) => {
    for (let i = 0; i < per; i++) {
      const h0 = process.hrtime.bigint()
      await t.hop(k, from + i, 1, payload)
      out.push(us(h0))
    }
  }))
  return { us: out, perS: concurrency * per / (us(t0) / 1e6) }
}

export interface ActivationBenchOptions {
  quick: boolean
  /** floats per position (1024: a 4 KiB decode activation) */
  hidden: number
  log: (s: string) => void
  /** the transports to measure (default all) */
  only?: TransportName[]
  /** node flags for the server process (e.g. --cpu-prof) */
  serverArgs?: string[]
  /** sequential hops per transport, overriding the quick/full default */
  hops?: number
}

export async function runActivationBench (opts: ActivationBenchOptions): Promise<ActivationResult> {
  const names = opts.only ?? [...TRANSPORTS]
  const hops = opts.hops ?? (opts.quick ? 1000 : 5000)
  const rounds = opts.quick ? 2 : 5
  const concurrency = 8
  const perSeq = opts.quick ? 100 : 400 // hops per sequence and round, 8 in flight
  const prefillRows = 128
  const prefills = opts.quick ? 40 : 100
  const payload = new Uint8Array(new Float32Array(opts.hidden).fill(0.5).buffer)
  const prefill = new Uint8Array(new Float32Array(prefillRows * opts.hidden).fill(0.25).buffer)

  const server = spawn(process.execPath, [...(opts.serverArgs ?? []), fileURLToPath(new URL('./stream-server.ts', import.meta.url))], { stdio: ['ignore', 'pipe', 'inherit'] })
  const exited = new Promise<void>(resolve => server.once('exit', () => { resolve() }))
  let node: MeshNode | undefined
  const open: Partial<Record<TransportName, Transport>> = {}
  try {
    const info = await new Promise<{ tcpRaw: number, tcpCodec: number, multiaddr: string, peer: string }>((resolve, reject) => {
      createInterface({ input: server.stdout! }).once('line', l => { resolve(JSON.parse(l)) })
      server.once('exit', code => { reject(new Error(`stream server exited (${code})`)) })
    })
    node = await MeshNode.create({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    await node.start()
    for (const name of names) {
      open[name] = name === 'tcp'
        ? await rawTcp(info.tcpRaw)
        : name === 'codec'
          ? await codecTcp(info.tcpCodec)
          : name === 'links'
            ? await peerLinks(node, info.multiaddr, info.peer)
            : await tensorChannels(node, info.multiaddr, opts.hidden)
    }
    const r: ActivationResult = { hidden: opts.hidden, hops, concurrency, prefillRows, transports: {} }
    let step = 0
    // warm-up (JIT, streams opened, Yamux windows grown), not recorded
    for (const name of names) {
      const t = open[name]!
      await sequential(t, 300, 1, payload, step)
      await concurrent(t, concurrency, 30, payload, step)
      await sequential(t, 5, prefillRows, prefill, step)
      r.transports[name] = { hopUs: [], concurrentUs: [], concurrentPerS: [], prefillUs: [] }
    }
    for (let i = 0; i < rounds; i++) {
      for (const name of names) {
        const t = open[name]!
        const f = r.transports[name]!
        step += 1000
        f.hopUs.push(...await sequential(t, Math.ceil(hops / rounds), 1, payload, step))
        const c = await concurrent(t, concurrency, perSeq, payload, step)
        f.concurrentUs.push(...c.us)
        f.concurrentPerS.push(c.perS)
        f.prefillUs.push(...await sequential(t, Math.ceil(prefills / rounds), prefillRows, prefill, step))
      }
      opts.log(`  pipeline hop round ${i + 1}/${rounds}: ` + names.map(n => {
        const f = r.transports[n]!
        return `${n} p50 ${percentile(f.hopUs, 50).toFixed(0)} µs, ×${concurrency} ${f.concurrentPerS.at(-1)!.toFixed(0)}/s`
      }).join('; '))
    }
    return r
  } finally {
    for (const t of Object.values(open)) await t.close().catch(() => {})
    await node?.stop().catch(() => {})
    server.kill('SIGTERM')
    await Promise.race([exited, new Promise(resolve => setTimeout(resolve, 10_000).unref())])
  }
}

export function activationMarkdown (r: ActivationResult): string {
  const tcp = r.transports.tcp
  const tcpP50 = tcp != null ? percentile(tcp.hopUs, 50) : NaN
  const tcpRate = tcp != null ? median(tcp.concurrentPerS) : NaN
  const prefillBytes = r.prefillRows * r.hidden * 4
  const ratio = (x: number, base: number): string => Number.isFinite(base) ? `${(x / base).toFixed(2)}×` : '—'
  const rows = TRANSPORTS.filter(n => r.transports[n] != null).map(n => {
    const f = r.transports[n]!
    const p50 = percentile(f.hopUs, 50)
    const pre = percentile(f.prefillUs, 50)
    return `| ${LABEL[n]} | ${p50.toFixed(0)} | ${percentile(f.hopUs, 99).toFixed(0)} | ${ratio(p50, tcpP50)} | ` +
      `${median(f.concurrentPerS).toFixed(0)} | ${ratio(median(f.concurrentPerS), tcpRate)} | ${percentile(f.concurrentUs, 50).toFixed(0)} | ${percentile(f.concurrentUs, 99).toFixed(0)} | ` +
      `${pre.toFixed(0)} | ${(prefillBytes / MiB / (pre / 1e6)).toFixed(0)} |`
  })
  const links = r.transports.links
  const goal = links != null && tcp != null
    ? (() => {
        const p50 = percentile(links.hopUs, 50)
        const ratio = p50 / tcpP50
        const met = p50 <= 300 && ratio <= 3
        return `**Issue 14 goal (decode hop p50 ≤ 300 µs and ≤ 3× raw TCP):** ${met ? 'met' : 'not met'} — PeerLinks p50 ${p50.toFixed(0)} µs, ${ratio.toFixed(2)}× raw TCP` +
          (r.transports.tensor != null ? `; the old TensorChannel: ${percentile(r.transports.tensor.hopUs, 50).toFixed(0)} µs, ${(percentile(r.transports.tensor.hopUs, 50) / tcpP50).toFixed(2)}×.` : '.')
      })()
    : ''
  return [
    `A decode hop between two processes on loopback: a step frame (32-byte header, then a [1, 1, ${r.hidden}] float32 activation, ${r.hidden * 4 / 1024} KiB) ` +
    'out, a result frame for its sequence (32 bytes, no payload) back, as a vDAG\'s last stage answers the driver. ' +
    `Sequential: one sequence, ${r.transports.tcp?.hopUs.length ?? r.hops} hops per transport. ` +
    `${r.concurrency} in flight: ${r.concurrency} sequences each sending its next step as soon as its result is back, over the one connection (PeerLinks: one stream, frames of a tick in one write; TensorChannel: a stream per sequence). ` +
    `Prefill chunk: a [1, ${r.prefillRows}, ${r.hidden}] step (${prefillBytes / 1024} KiB) and its result, MiB/s = chunk ÷ round-trip p50. ` +
    'Raw TCP: the same header and payload bytes behind a 4-byte length, answered by hand, nothing decoded or checked; raw TCP + codec: varint-prefixed frames through encodeFrame/FrameDecoder/decodeFrame on both ends; ' +
    'PeerLinks: mesh/pipeline-link.ts on both ends over TCP + Noise + Yamux (the server\'s onFrame answers with links.send); TensorChannel: the protocol the pipeline replaced.',
    '',
    `| transport | hop p50 µs | hop p99 µs | p50 ÷ raw TCP | ${r.concurrency} in flight: round trips/s | ÷ raw TCP | p50 µs | p99 µs | prefill chunk RTT p50 µs | MiB/s |`,
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
    '',
    goal
  ].join('\n')
}
