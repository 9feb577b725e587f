/**
 * coalesceWrites (mesh/coalesce-writes.ts): what Noise hands the raw connection as a list of chunks leaves
 * as one buffer with the same bytes (one socket.write instead of one per chunk); big lists and plain
 * buffers go through as they are; the connection's own sendData still does the sending.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Uint8ArrayList } from 'uint8arraylist'
import type { MessageStream } from '@libp2p/interface'
import { coalesceWrites } from '../../mesh/coalesce-writes.ts'

function fakeConnection (): { conn: MessageStream, sent: Array<Uint8Array[]> } {
  const sent: Array<Uint8Array[]> = []
  const conn = {
    sendData (data: Uint8ArrayList) {
      sent.push([...data])
      return { sentBytes: data.byteLength, canSendMore: true }
    }
  }
  return { conn: conn as unknown as MessageStream, sent }
}

const bytes = (n: number, seed: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff)

test('a list of chunks is sent as one buffer holding the same bytes', () => {
  const { conn, sent } = fakeConnection()
  const c = coalesceWrites(conn) as unknown as { sendData: (d: Uint8ArrayList) => { sentBytes: number, canSendMore: boolean } }
  const chunks = [bytes(2, 1), bytes(12, 2), bytes(4096, 3), bytes(16, 4)]
  const r = c.sendData(new Uint8ArrayList(...chunks))
  assert.deepEqual(r, { sentBytes: 4126, canSendMore: true })
  assert.equal(sent.length, 1)
  assert.equal(sent[0].length, 1, 'one buffer')
  assert.deepEqual(sent[0][0], new Uint8ArrayList(...chunks).subarray())
})

test('a list over the limit, and a one-buffer list, go as they are', () => {
  const { conn, sent } = fakeConnection()
  const c = coalesceWrites(conn) as unknown as { sendData: (d: Uint8ArrayList) => unknown }
  const big = [bytes(200 * 1024, 5), bytes(100 * 1024, 6)]
  c.sendData(new Uint8ArrayList(...big))
  assert.equal(sent[0].length, 2, 'not copied')
  const one = bytes(64, 7)
  c.sendData(new Uint8ArrayList(one))
  assert.equal(sent[1].length, 1)
  assert.equal(sent[1][0], one, 'the same buffer, not a copy')
})

test('a connection without sendData is returned untouched', () => {
  const plain = { send: () => true } as unknown as MessageStream
  assert.equal(coalesceWrites(plain), plain)
  assert.equal((plain as any).sendData, undefined)
})
