/**
 * libp2p stream (TCP + Noise + Yamux) against raw TCP on loopback, in one run:
 * throughput with 1 MiB frames, and round-trip latency of a 4 KiB message.
 */
import net from 'node:net'
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { MeshNode } from '../mesh/node.ts'
import { SINK, ECHO } from './stream-server.ts'
import { median, percentile } from './stats.ts'

const MiB = 1024 * 1024

export interface StreamBenchOptions {
  totalMiB: number
  frameBytes: number
  rounds: number
  echoBytes: number
  echoCount: number
}

export interface StreamBenchResult {
  options: StreamBenchOptions
  tcp: { mibPerS: number[], rttUs: number[] }
  libp2p: { mibPerS: number[], rttUs: number[] }
}

async function tcpThroughput (port: number, o: StreamBenchOptions): Promise<number> {
  const frame = Buffer.alloc(o.frameBytes, 7)
  const frames = Math.round(o.totalMiB * MiB / o.frameBytes)
  const sock = net.connect(port, '127.0.0.1')
  await new Promise<void>(resolve => sock.once('connect', resolve))
  const reply: Buffer[] = []
  sock.on('data', d => reply.push(d))
  const ended = new Promise<void>(resolve => sock.once('end', resolve))
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < frames; i++) {
    if (!sock.write(frame)) await new Promise(resolve => sock.once('drain', resolve))
  }
  sock.end()
  await ended
  const s = Number(process.hrtime.bigint() - t0) / 1e9
  const n = Number(Buffer.concat(reply).readBigUInt64BE(0))
  if (n !== frames * o.frameBytes) throw new Error(`tcp sink counted ${n} bytes, sent ${frames * o.frameBytes}`)
  return n / MiB / s
}

async function tcpRtt (port: number, o: StreamBenchOptions): Promise<number[]> {
  const msg = Buffer.alloc(o.echoBytes, 3)
  const sock = net.connect(port, '127.0.0.1')
  sock.setNoDelay(true)
  await new Promise<void>(resolve => sock.once('connect', resolve))
  let got = 0
  let wake: (() => void) | undefined
  sock.on('data', d => { got += d.length; if (got >= o.echoBytes) wake?.() })
  const out: number[] = []
  for (let i = 0; i < o.echoCount; i++) {
    got = 0
    const done = new Promise<void>(resolve => { wake = resolve })
    const t0 = process.hrtime.bigint()
    sock.write(msg)
    await done
    out.push(Number(process.hrtime.bigint() - t0) / 1000)
  }
  sock.destroy()
  return out
}

async function p2pThroughput (node: MeshNode, addr: string, o: StreamBenchOptions): Promise<number> {
  const frame = new Uint8Array(o.frameBytes).fill(7)
  const frames = Math.round(o.totalMiB * MiB / o.frameBytes)
  const stream = await node.libp2p.dialProtocol(multiaddr(addr), SINK)
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < frames; i++) {
    if (!stream.send(frame)) await stream.onDrain()
  }
  await stream.close()
  const parts: Uint8Array[] = []
  for await (const chunk of stream) parts.push(chunk.subarray())
  const s = Number(process.hrtime.bigint() - t0) / 1e9
  const n = Number(Buffer.concat(parts).readBigUInt64BE(0))
  if (n !== frames * o.frameBytes) throw new Error(`libp2p sink counted ${n} bytes, sent ${frames * o.frameBytes}`)
  return n / MiB / s
}

async function p2pRtt (node: MeshNode, addr: string, o: StreamBenchOptions): Promise<number[]> {
  const msg = new Uint8Array(o.echoBytes).fill(3)
  const stream = await node.libp2p.dialProtocol(multiaddr(addr), ECHO)
  const it = stream[Symbol.asyncIterator]()
  const out: number[] = []
  for (let i = 0; i < o.echoCount; i++) {
    const t0 = process.hrtime.bigint()
    if (!stream.send(msg)) await stream.onDrain()
    let got = 0
    while (got < o.echoBytes) {
      const r = await it.next()
      if (r.done === true) throw new Error('echo stream ended early')
      got += r.value.byteLength
    }
    out.push(Number(process.hrtime.bigint() - t0) / 1000)
  }
  await stream.close()
  return out
}

export async function runStreamBench (o: StreamBenchOptions, log: (s: string) => void): Promise<StreamBenchResult> {
  const server = spawn(process.execPath, [fileURLToPath(new URL('./stream-server.ts', import.meta.url))], { stdio: ['ignore', 'pipe', 'inherit'] })
  try {
    const info = await new Promise<{ tcpSink: number, tcpEcho: number, multiaddr: string }>((resolve, reject) => {
      createInterface({ input: server.stdout! }).once('line', l => { resolve(JSON.parse(l)) })
      server.once('exit', code => { reject(new Error(`stream server exited (${code})`)) })
    })
    const node = await MeshNode.create({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    await node.start()
    const result: StreamBenchResult = { options: o, tcp: { mibPerS: [], rttUs: [] }, libp2p: { mibPerS: [], rttUs: [] } }
    // warm-up (JIT, connection, Noise handshake), not recorded
    await tcpThroughput(info.tcpSink, { ...o, totalMiB: 16 })
    await p2pThroughput(node, info.multiaddr, { ...o, totalMiB: 16 })
    // interleave the two transports so drift in machine load hits both alike
    for (let r = 0; r < o.rounds; r++) {
      result.tcp.mibPerS.push(await tcpThroughput(info.tcpSink, o))
      result.libp2p.mibPerS.push(await p2pThroughput(node, info.multiaddr, o))
      log(`  round ${r + 1}/${o.rounds}: tcp ${result.tcp.mibPerS.at(-1)?.toFixed(0)} MiB/s, libp2p ${result.libp2p.mibPerS.at(-1)?.toFixed(0)} MiB/s`)
    }
    await tcpRtt(info.tcpEcho, { ...o, echoCount: 200 })
    await p2pRtt(node, info.multiaddr, { ...o, echoCount: 200 })
    for (let r = 0; r < o.rounds; r++) {
      result.tcp.rttUs.push(...await tcpRtt(info.tcpEcho, { ...o, echoCount: Math.ceil(o.echoCount / o.rounds) }))
      result.libp2p.rttUs.push(...await p2pRtt(node, info.multiaddr, { ...o, echoCount: Math.ceil(o.echoCount / o.rounds) }))
    }
    log(`  rtt p50: tcp ${percentile(result.tcp.rttUs, 50).toFixed(0)} µs, libp2p ${percentile(result.libp2p.rttUs, 50).toFixed(0)} µs`)
    await node.stop()
    return result
  } finally {
    server.kill('SIGTERM')
  }
}

export function streamMarkdown (r: StreamBenchResult): string {
  const tTcp = median(r.tcp.mibPerS)
  const tP2p = median(r.libp2p.mibPerS)
  const row = (name: string, t: number, rtt: number[]): string =>
    `| ${name} | ${t.toFixed(0)} | ${percentile(rtt, 50).toFixed(0)} | ${percentile(rtt, 99).toFixed(0)} |`
  return [
    `Loopback, server in a second process. Throughput: ${r.options.totalMiB} MiB in ${r.options.frameBytes / MiB} MiB frames, median of ${r.options.rounds} rounds (transports interleaved). ` +
    `Round trip: ${r.options.echoBytes / 1024} KiB echoed, ${r.tcp.rttUs.length} round trips each.`,
    '',
    '| transport | throughput MiB/s | RTT p50 µs | RTT p99 µs |',
    '| --- | ---: | ---: | ---: |',
    row('raw TCP', tTcp, r.tcp.rttUs),
    row('libp2p stream (TCP + Noise + Yamux)', tP2p, r.libp2p.rttUs),
    '',
    `**Ratios (libp2p ÷ raw TCP):** throughput ${(tP2p / tTcp).toFixed(2)}×, ` +
    `RTT p50 ${(percentile(r.libp2p.rttUs, 50) / percentile(r.tcp.rttUs, 50)).toFixed(2)}×, ` +
    `RTT p99 ${(percentile(r.libp2p.rttUs, 99) / percentile(r.tcp.rttUs, 99)).toFixed(2)}×.`
  ].join('\n')
}
