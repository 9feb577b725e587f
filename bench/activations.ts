/**
 * Activation stream over libp2p ÷ the same bytes over raw TCP, on loopback, server in a second
 * process (bench/stream-server.ts): the tensor protocol as pipeline stages use it (TensorChannel
 * on /blockmesh/tensor/1.0.0: JSON header validated with zod, then the payload) against the same
 * framing on a bare socket.
 *  - decode hop: one [1, 1, hidden] float32 activation echoed back (what each decode step sends
 *    between two stages), round-trip time;
 *  - prefill: [1, 128, hidden] float32 activations streamed one way, throughput.
 */
import net from 'node:net'
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { MeshNode } from '../mesh/node.ts'
import { TENSOR_PROTOCOL, TensorChannel } from '../mesh/tensor.ts'
import { TcpFrames, encodeTcpFrame } from './tcp-frames.ts'
import { median, percentile } from './stats.ts'

const MiB = 1024 * 1024

export interface ActivationResult {
  hidden: number
  hops: number
  prefillMiB: number
  tcp: { rttUs: number[], mibPerS: number[] }
  libp2p: { rttUs: number[], mibPerS: number[] }
}

interface Side {
  /** sends one message and resolves with the first message back */
  echo: (header: Record<string, unknown>, payload: Uint8Array) => Promise<void>
  sink: (header: Record<string, unknown>, payload: Uint8Array) => Promise<void>
  /** sends "end", resolves with the byte count the server saw */
  end: () => Promise<number>
  close: () => Promise<void>
}

async function tcpSide (port: number): Promise<Side> {
  const sock = net.connect(port, '127.0.0.1')
  sock.setNoDelay(true)
  await new Promise<void>(resolve => sock.once('connect', resolve))
  const frames = new TcpFrames(sock)
  let wake: ((h: any) => void) | undefined
  frames.on(h => { wake?.(h) })
  const next = async (): Promise<any> => await new Promise(resolve => { wake = resolve })
  const write = async (buf: Buffer): Promise<void> => { if (!sock.write(buf)) await new Promise(resolve => sock.once('drain', resolve)) }
  return {
    echo: async (h, p) => { const r = next(); await write(encodeTcpFrame(h, p)); await r },
    sink: async (h, p) => { await write(encodeTcpFrame(h, p)) },
    end: async () => { const r = next(); await write(encodeTcpFrame({ kind: 'end' })); return (await r).meta.bytes },
    close: async () => { sock.destroy() }
  }
}

async function p2pSide (node: MeshNode, addr: string): Promise<Side> {
  const ch = new TensorChannel(await node.libp2p.dialProtocol(multiaddr(addr), TENSOR_PROTOCOL))
  return {
    echo: async (h, p) => { await ch.send(h as any, p); await ch.recv() },
    sink: async (h, p) => { await ch.send(h as any, p) },
    end: async () => { await ch.send({ kind: 'end' }); return Number((await ch.recv()).header.meta?.bytes) },
    close: async () => { await ch.close() }
  }
}

async function rtt (side: Side, hidden: number, n: number): Promise<number[]> {
  const payload = new Uint8Array(new Float32Array(hidden).fill(0.5).buffer)
  const out: number[] = []
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint()
    await side.echo({ kind: 'echo', seq: 'bench-seq-1', step: i, dtype: 'float32', shape: [1, 1, hidden] }, payload)
    out.push(Number(process.hrtime.bigint() - t0) / 1000)
  }
  return out
}

async function throughput (side: Side, hidden: number, totalMiB: number): Promise<number> {
  const tokens = 128
  const payload = new Uint8Array(new Float32Array(tokens * hidden).fill(0.25).buffer)
  const frames = Math.max(1, Math.round(totalMiB * MiB / payload.length))
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < frames; i++) await side.sink({ kind: 'sink', seq: 'bench-seq-1', step: i, dtype: 'float32', shape: [1, tokens, hidden] }, payload)
  const n = await side.end()
  const s = Number(process.hrtime.bigint() - t0) / 1e9
  if (n !== frames * payload.length) throw new Error(`server counted ${n} bytes, sent ${frames * payload.length}`)
  return n / MiB / s
}

export async function runActivationBench (opts: { quick: boolean, hidden: number, log: (s: string) => void }): Promise<ActivationResult> {
  const server = spawn(process.execPath, [fileURLToPath(new URL('./stream-server.ts', import.meta.url))], { stdio: ['ignore', 'pipe', 'inherit'] })
  const hops = opts.quick ? 600 : 3000
  const prefillMiB = opts.quick ? 32 : 128
  const rounds = opts.quick ? 2 : 4
  try {
    const info = await new Promise<{ tcpTensors: number, multiaddr: string }>((resolve, reject) => {
      createInterface({ input: server.stdout! }).once('line', l => { resolve(JSON.parse(l)) })
      server.once('exit', code => { reject(new Error(`stream server exited (${code})`)) })
    })
    const node = await MeshNode.create({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    await node.start()
    const tcp = await tcpSide(info.tcpTensors)
    const p2p = await p2pSide(node, info.multiaddr)
    const r: ActivationResult = { hidden: opts.hidden, hops, prefillMiB, tcp: { rttUs: [], mibPerS: [] }, libp2p: { rttUs: [], mibPerS: [] } }
    // warm-up, not recorded
    await rtt(tcp, opts.hidden, 200); await rtt(p2p, opts.hidden, 200)
    await throughput(tcp, opts.hidden, 8); await throughput(p2p, opts.hidden, 8)
    // interleaved rounds, so drift in machine load hits both alike
    for (let i = 0; i < rounds; i++) {
      r.tcp.rttUs.push(...await rtt(tcp, opts.hidden, Math.ceil(hops / rounds)))
      r.libp2p.rttUs.push(...await rtt(p2p, opts.hidden, Math.ceil(hops / rounds)))
      r.tcp.mibPerS.push(await throughput(tcp, opts.hidden, prefillMiB))
      r.libp2p.mibPerS.push(await throughput(p2p, opts.hidden, prefillMiB))
      opts.log(`  activations round ${i + 1}/${rounds}: hop p50 tcp ${percentile(r.tcp.rttUs, 50).toFixed(0)} µs, libp2p ${percentile(r.libp2p.rttUs, 50).toFixed(0)} µs; prefill tcp ${r.tcp.mibPerS.at(-1)?.toFixed(0)} MiB/s, libp2p ${r.libp2p.mibPerS.at(-1)?.toFixed(0)} MiB/s`)
    }
    await tcp.close()
    await p2p.close()
    await node.stop()
    return r
  } finally {
    server.kill('SIGTERM')
  }
}

export function activationMarkdown (r: ActivationResult): string {
  const row = (name: string, s: { rttUs: number[], mibPerS: number[] }): string =>
    `| ${name} | ${percentile(s.rttUs, 50).toFixed(0)} | ${percentile(s.rttUs, 99).toFixed(0)} | ${median(s.mibPerS).toFixed(0)} |`
  return [
    `Activation messages between two processes on loopback: a JSON header (kind, seq, step, dtype, shape) then the float32 payload. ` +
    `Decode hop: one [1, 1, ${r.hidden}] activation (${r.hidden * 4 / 1024} KiB) echoed, ${r.tcp.rttUs.length} round trips each. ` +
    `Prefill: [1, 128, ${r.hidden}] activations (${128 * r.hidden * 4 / 1024} KiB each), ${r.prefillMiB} MiB one way per round, median of rounds. ` +
    'libp2p: TensorChannel on /blockmesh/tensor/1.0.0 (TCP + Noise + Yamux, varint length prefixes, zod-validated header, size checks); raw TCP: the same header and payload bytes with 4-byte lengths, nothing checked.',
    '',
    '| transport | decode hop RTT p50 µs | p99 µs | prefill MiB/s |',
    '| --- | ---: | ---: | ---: |',
    row('raw TCP', r.tcp),
    row('libp2p tensor protocol', r.libp2p),
    '',
    `**Ratios (libp2p ÷ raw TCP):** decode hop RTT p50 ${(percentile(r.libp2p.rttUs, 50) / percentile(r.tcp.rttUs, 50)).toFixed(2)}×, ` +
    `prefill throughput ${(median(r.libp2p.mibPerS) / median(r.tcp.mibPerS)).toFixed(2)}×.`
  ].join('\n')
}
