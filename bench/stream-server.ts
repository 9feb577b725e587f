/**
 * Server half of the stream and pipeline-hop benchmarks, in its own process so client and server
 * each get a core. Serves:
 *   sink (raw TCP and libp2p): read everything until the writer closes, answer with the byte count (8 bytes)
 *   echo (raw TCP and libp2p): write back whatever arrives
 *   pipeline hops (bench/activations.ts): every step frame is answered with a small result frame for
 *   its sequence, as a vDAG's last stage answers the driver —
 *     - over /blockmesh/pipeline/1.0.0 with the agent's own PeerLinks (TCP + Noise + Yamux): onFrame
 *       answers through links.send, on the link's stream back to the client;
 *     - over raw TCP ("tcpRaw"): [u32 length][frame], the answer built by hand (the step's sequence id and
 *       step copied into a fixed result header), nothing decoded or checked, one socket write per answer;
 *     - over raw TCP with the pipeline codec ("tcpCodec"): varint-prefixed frames cut by FrameDecoder,
 *       decoded by decodeFrame, answered with encodeFrame (the codec's cost without libp2p's);
 *     - over the old per-sequence /blockmesh/tensor/1.0.0 (TensorChannel: JSON header validated with
 *       zod, then the payload), for comparison: a 'step' answered with a 'result' header.
 * Prints one JSON line: { tcpSink, tcpEcho, tcpRaw, tcpCodec, multiaddr, peer }.
 */
import net from 'node:net'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { MeshNode, silentLogger } from '../mesh/node.ts'
import { TENSOR_PROTOCOL, TensorChannel } from './legacy-tensor.ts'
import { PeerLinks } from '../mesh/pipeline-link.ts'
import { FrameDecoder, HEADER_BYTES, encodeFrame } from '../mesh/pipeline-frame.ts'
import type { PipelineFrame } from '../mesh/pipeline-frame.ts'

export const SINK = '/blockmesh/bench/sink/1.0.0'
export const ECHO = '/blockmesh/bench/echo/1.0.0'

/** The token every benchmark result frame carries. */
export const BENCH_TOKEN = 42

/** The result frame answering a step (what a last stage sends the driver after sampling). */
export function resultFor (step: Pick<PipelineFrame, 'seq' | 'step'>): PipelineFrame {
  return { kind: 'result', seq: step.seq, step: step.step, pastLen: 0, rows: 0, token: BENCH_TOKEN, flags: 0, dtype: null, meta: null, payload: null }
}

function u64 (n: number): Uint8Array {
  const b = new Uint8Array(8)
  new DataView(b.buffer).setBigUint64(0, BigInt(n))
  return b
}

async function listen (server: net.Server): Promise<number> {
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return (server.address() as net.AddressInfo).port
}

/**
 * Calls `on` with the body of every [u32 BE length][body] message arriving on `sock`, in order (a body
 * is a view of the received bytes). A message split over many chunks is joined once, when complete.
 */
export function onU32Frames (sock: net.Socket, on: (body: Buffer) => void): void {
  let buf: Buffer = Buffer.alloc(0)
  let pending: Buffer[] = []
  let pendingBytes = 0
  let want = 0
  sock.on('data', (d: Buffer) => {
    if (want > 0) {
      pending.push(d)
      pendingBytes += d.length
      if (pendingBytes < want) return
      buf = Buffer.concat(pending, pendingBytes)
      pending = []
      want = 0
    } else {
      buf = buf.length === 0 ? d : Buffer.concat([buf, d])
    }
    while (buf.length >= 4) {
      const n = buf.readUInt32BE(0)
      if (buf.length < 4 + n) {
        want = 4 + n
        pending = [buf]
        pendingBytes = buf.length
        buf = Buffer.alloc(0)
        return
      }
      on(buf.subarray(4, 4 + n))
      buf = buf.subarray(4 + n)
    }
  })
}

/** Raw TCP: [u32 BE length][32-byte header][payload] in, [u32 BE 32][result header] out, one write each. */
function rawServer (sock: net.Socket): void {
  sock.setNoDelay(true)
  onU32Frames(sock, body => {
    const out = Buffer.alloc(4 + HEADER_BYTES)
    out.writeUInt32BE(HEADER_BYTES, 0)
    out[4] = 1 // version
    out[5] = 1 // kind: result
    body.copy(out, 4 + 4, 4, 16) // sequence id and step
    out.writeInt32LE(BENCH_TOKEN, 4 + 24)
    sock.write(out)
  })
}

/** Raw TCP carrying varint-prefixed pipeline frames, cut and decoded by the codec the agent uses. */
function codecServer (sock: net.Socket): void {
  sock.setNoDelay(true)
  const decoder = new FrameDecoder()
  sock.on('data', (d: Buffer) => {
    for (const f of decoder.push(d)) {
      if (f.kind !== 'step') continue
      sock.cork()
      for (const c of encodeFrame(resultFor(f))) sock.write(c)
      sock.uncork()
    }
  })
}

if (import.meta.main === true || process.argv[1]?.endsWith('stream-server.ts') === true) {
  const tcpSink = await listen(net.createServer(sock => {
    let n = 0
    sock.on('data', d => { n += d.length })
    sock.on('end', () => { sock.end(u64(n)) })
  }))
  const tcpEcho = await listen(net.createServer(sock => {
    sock.setNoDelay(true)
    sock.pipe(sock)
  }))
  const tcpRaw = await listen(net.createServer(rawServer))
  const tcpCodec = await listen(net.createServer(codecServer))

  const node = await MeshNode.create({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
  await node.start()
  await node.libp2p.handle(SINK, async (stream) => {
    let n = 0
    for await (const chunk of stream) n += chunk.byteLength
    stream.send(u64(n))
    await stream.close()
  }, { maxInboundStreams: 16 })
  await node.libp2p.handle(ECHO, async (stream) => {
    for await (const chunk of stream) {
      if (!stream.send(chunk)) await stream.onDrain()
    }
    await stream.close()
  }, { maxInboundStreams: 16 })

  const links: PeerLinks = new PeerLinks({ libp2p: node.libp2p, isBanned: () => false }, {
    onFrame: (peer, f) => { if (f.kind === 'step') void links.send(peer, resultFor(f)) },
    onInvalid: (peer, reason) => { process.stderr.write(`stream-server: invalid pipeline bytes from ${peer}: ${reason}\n`) },
    onSendFailed: () => {},
    onPeerLost: () => {},
    log: silentLogger
  })
  await links.start()

  await node.libp2p.handle(TENSOR_PROTOCOL, async (stream) => {
    const ch = new TensorChannel(stream)
    try {
      for (;;) {
        const m = await ch.recv()
        if (m.header.kind === 'step') await ch.send({ kind: 'result', seq: m.header.seq, step: m.header.step, meta: { token: BENCH_TOKEN } })
      }
    } catch { /* the client closed */ }
  }, { maxInboundStreams: 64, maxOutboundStreams: 64 })

  process.stdout.write(JSON.stringify({ tcpSink, tcpEcho, tcpRaw, tcpCodec, multiaddr: node.multiaddrs()[0], peer: node.peerId.toString() }) + '\n')
  process.on('SIGTERM', () => { void links.stop().then(async () => { await node.stop() }).finally(() => process.exit(0)) })
}
