/**
 * Server half of the stream benchmark, in its own process so client and
 * server each get a core. Serves the same two jobs over raw TCP and over a
 * libp2p stream (TCP + Noise + Yamux, as the mesh uses):
 *   sink: read everything until the writer closes, answer with the byte count (8 bytes)
 *   echo: write back whatever arrives
 *   tensors: activation messages (header, then payload) — "echo" answered with the same message,
 *     "sink" counted, "end" answered with the count: over /blockmesh/tensor/1.0.0 (TensorChannel, as
 *     stages use it) and over raw TCP with the same framing (tcp-frames.ts)
 * Prints one JSON line: { tcpSink, tcpEcho, tcpTensors, multiaddr }.
 */
import net from 'node:net'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { MeshNode } from '../mesh/node.ts'
import { TENSOR_PROTOCOL, TensorChannel } from '../mesh/tensor.ts'
import { TcpFrames, encodeTcpFrame } from './tcp-frames.ts'

export const SINK = '/blockmesh/bench/sink/1.0.0'
export const ECHO = '/blockmesh/bench/echo/1.0.0'

function u64 (n: number): Uint8Array {
  const b = new Uint8Array(8)
  new DataView(b.buffer).setBigUint64(0, BigInt(n))
  return b
}

async function listen (server: net.Server): Promise<number> {
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return (server.address() as net.AddressInfo).port
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

  const tcpTensors = await listen(net.createServer(sock => {
    sock.setNoDelay(true)
    let bytes = 0
    const frames = new TcpFrames(sock)
    frames.on((header, payload) => {
      const kind = (header as { kind: string }).kind
      if (kind === 'echo') sock.write(encodeTcpFrame(header, payload))
      else if (kind === 'sink') bytes += payload?.length ?? 0
      else if (kind === 'end') { sock.write(encodeTcpFrame({ kind: 'count', meta: { bytes } })); bytes = 0 }
    })
  }))

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

  await node.libp2p.handle(TENSOR_PROTOCOL, async (stream) => {
    const ch = new TensorChannel(stream)
    let bytes = 0
    try {
      for (;;) {
        const m = await ch.recv()
        if (m.header.kind === 'echo') await ch.send(m.header, m.payload ?? undefined)
        else if (m.header.kind === 'sink') bytes += m.payload?.length ?? 0
        else if (m.header.kind === 'end') { await ch.send({ kind: 'count', meta: { bytes } }); bytes = 0 }
      }
    } catch { /* the client closed */ }
  }, { maxInboundStreams: 16 })

  process.stdout.write(JSON.stringify({ tcpSink, tcpEcho, tcpTensors, multiaddr: node.multiaddrs()[0] }) + '\n')
  process.on('SIGTERM', () => { void node.stop().finally(() => process.exit(0)) })
}
