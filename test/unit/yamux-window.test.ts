/**
 * The mesh's Yamux sends window updates once half a stream's receive window is used (mesh/yamux-window.ts),
 * and its Noise messages leave as one socket write each (mesh/coalesce-writes.ts): two real libp2p nodes in
 * this process over loopback TCP, one sending 200 messages of 4 KiB on one stream. Every byte arrives in
 * order; the receiver writes a handful of window updates (not one per message); the sender's socket writes
 * are about one per message (not one per Noise chunk). Counts, not times.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { MeshNode } from '../../mesh/node.ts'
import { HALF_WINDOW_UPDATES } from '../../mesh/yamux-window.ts'

const PROTOCOL = '/blockmesh/test/window/1.0.0'

test('window updates once half the window is used; one socket write per Noise message', async () => {
  const a = await MeshNode.create({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
  const b = await MeshNode.create({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
  await a.start()
  await b.start()
  const writes = net.Socket.prototype.write
  try {
    const bPort = Number.parseInt(b.multiaddrs()[0].split('/tcp/')[1], 10)
    let received = 0
    let inOrder = true
    let patched = false
    const all = new Promise<void>(resolve => {
      void b.libp2p.handle(PROTOCOL, (stream) => {
        patched = (stream as unknown as Record<symbol, unknown>)[HALF_WINDOW_UPDATES] === true
        stream.addEventListener('message', (evt) => {
          const data = evt.data instanceof Uint8Array ? evt.data : evt.data.subarray()
          for (const byte of data) { if (byte !== ((received++ >> 12) & 0xff)) inOrder = false }
          if (received === 200 * 4096) resolve()
        })
      })
    })
    await a.libp2p.dial(b.libp2p.getMultiaddrs()[0])
    const stream = await a.libp2p.dialProtocol(b.libp2p.peerId, PROTOCOL)
    // count socket writes from here on: the receiver's (its socket's local port is its listening port) and the sender's
    let byReceiver = 0
    let bySender = 0
    net.Socket.prototype.write = function (this: net.Socket, ...args: unknown[]) {
      if (this.localPort === bPort) byReceiver++
      else if (this.remotePort === bPort) bySender++
      return (writes as (...x: unknown[]) => boolean).apply(this, args)
    } as typeof writes
    for (let i = 0; i < 200; i++) {
      if (!stream.send(new Uint8Array(4096).fill(i & 0xff))) await stream.onDrain()
      await new Promise(resolve => setImmediate(resolve)) // one message per turn: no batching of sends
    }
    await all
    net.Socket.prototype.write = writes
    assert.equal(received, 200 * 4096)
    assert.ok(inOrder, 'every byte in order')
    assert.ok(patched, 'the inbound stream has half-window updates')
    // 800 KiB through a 256 KiB window updated at half: a few updates, not 200
    assert.ok(byReceiver >= 1 && byReceiver <= 20, `receiver wrote ${byReceiver} times`)
    // one write per message (Noise's [length, header, data, tag] as one buffer), a few more for the stream's opening
    assert.ok(bySender >= 200 && bySender <= 220, `sender wrote ${bySender} times`)
    await stream.close()
  } finally {
    net.Socket.prototype.write = writes
    await a.stop()
    await b.stop()
  }
})
