/**
 * NoiseFrameDecoder (mesh/noise-frames.ts) cuts a Noise connection's bytes into the same messages as the
 * LengthPrefixedDecoder that @chainsafe/libp2p-noise makes (used here as the reference), however the bytes
 * are chunked, without throwing; and the encrypter the mesh uses (tunedNoise(noise())) really gives both
 * ends of a real Noise handshake the new decoder, over which messages still go both ways.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { Uint8ArrayList } from 'uint8arraylist'
import { LengthPrefixedDecoder, multiaddrConnectionPair } from '@libp2p/utils'
import { noise } from '@chainsafe/libp2p-noise'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { defaultLogger } from '@libp2p/logger'
import { NoiseFrameDecoder, adoptNoiseFrameDecoder } from '../../mesh/noise-frames.ts'
import { tunedNoise } from '../../mesh/noise-tuning.ts'

/** Noise's own length decoder: a RangeError when fewer than two bytes are left */
const uint16BE = (data: Uint8ArrayList | Uint8Array): number => {
  if (data.length < 2) throw new RangeError('Could not decode int16BE')
  return data instanceof Uint8Array ? (data[0] << 8) | data[1] : data.getUint16(0)
}

function framed (messages: Uint8Array[]): Uint8Array {
  const out = new Uint8ArrayList()
  for (const m of messages) out.append(Uint8Array.of(m.length >> 8, m.length & 0xff), m)
  return out.subarray()
}

/** `bytes` cut at the given points */
function chunked (bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const at = [...new Set(cuts.map(c => c % (bytes.length + 1)))].sort((a, b) => a - b)
  const out: Uint8Array[] = []
  let from = 0
  for (const c of at) { out.push(bytes.subarray(from, c)); from = c }
  out.push(bytes.subarray(from))
  return out
}

test('the same messages as Noise\'s LengthPrefixedDecoder, however the bytes are chunked', () => {
  fc.assert(fc.property(
    fc.array(fc.uint8Array({ minLength: 0, maxLength: 3000 }), { maxLength: 12 }),
    fc.array(fc.nat(), { maxLength: 20 }),
    (messages, cuts) => {
      const reference = new LengthPrefixedDecoder({ lengthDecoder: uint16BE, encodingLength: () => 2, maxBufferSize: 16 * 1024 * 1024 })
      const ours = new NoiseFrameDecoder()
      const want: Uint8Array[] = []
      const got: Uint8Array[] = []
      for (const chunk of chunked(framed(messages), cuts)) {
        for (const m of reference.decode(chunk)) want.push(m.subarray())
        for (const m of ours.decode(chunk)) got.push(Uint8Array.from(m))
      }
      assert.deepEqual(got, want)
      assert.deepEqual(got, messages.filter(m => m.length > 0), 'every non-empty message, in order')
      assert.equal(ours.buffer.byteLength, 0)
    }), { numRuns: 300 })
})

test('a partial message stays buffered until the rest arrives; over the buffer limit is an error', () => {
  const d = new NoiseFrameDecoder(1024)
  const msg = Uint8Array.from({ length: 600 }, (_, i) => i & 0xff)
  const bytes = framed([msg])
  assert.deepEqual([...d.decode(bytes.subarray(0, 1))], [])
  assert.deepEqual([...d.decode(bytes.subarray(1, 300))], [])
  assert.equal(d.buffer.byteLength, 300)
  assert.deepEqual([...d.decode(bytes.subarray(300))].map(m => Uint8Array.from(m)), [msg])
  assert.throws(() => [...d.decode(new Uint8Array(1025))], (err: Error) => err.name === 'InvalidParametersError')
})

test('adopting carries over the bytes the old decoder held; other connections are left alone', () => {
  const old = new LengthPrefixedDecoder({ lengthDecoder: uint16BE, encodingLength: () => 2 })
  const msg = Uint8Array.of(1, 2, 3, 4, 5)
  const bytes = framed([msg])
  assert.deepEqual([...old.decode(bytes.subarray(0, 3))], [])
  const conn = { decoder: old as unknown }
  assert.equal(adoptNoiseFrameDecoder(conn), true)
  assert.ok(conn.decoder instanceof NoiseFrameDecoder)
  assert.deepEqual([...(conn.decoder as NoiseFrameDecoder).decode(bytes.subarray(3))].map(m => Uint8Array.from(m)), [msg])
  assert.equal(adoptNoiseFrameDecoder(conn), false, 'already adopted')
  assert.equal(adoptNoiseFrameDecoder({ send: () => true }), false)
  assert.equal(adoptNoiseFrameDecoder(null), false)
})

test('a real Noise handshake through tunedNoise(noise()): both ends get the decoder, and messages still flow', async () => {
  const upgrader = { getStreamMuxers: () => new Map() }
  const encrypter = async () => {
    const privateKey = await generateKeyPair('Ed25519')
    return tunedNoise(noise())({ privateKey, peerId: peerIdFromPrivateKey(privateKey), logger: defaultLogger(), upgrader } as never)
  }
  const [a, b] = [await encrypter(), await encrypter()]
  const [outbound, inbound] = multiaddrConnectionPair()
  const [sa, sb] = await Promise.all([
    a.secureOutbound(outbound, { skipStreamMuxerNegotiation: true } as never),
    b.secureInbound(inbound, { skipStreamMuxerNegotiation: true } as never)
  ])
  for (const s of [sa, sb]) assert.ok((s.connection as unknown as { decoder: unknown }).decoder instanceof NoiseFrameDecoder, 'the decoder was swapped')
  const received: Uint8Array[] = []
  const all = new Promise<void>(resolve => {
    sb.connection.addEventListener('message', (evt) => {
      received.push((evt.data as Uint8Array | Uint8ArrayList).subarray())
      if (received.reduce((n, m) => n + m.length, 0) === 4096 + 70_000) resolve()
    })
  })
  const small = Uint8Array.from({ length: 4096 }, (_, i) => i % 251)
  const large = Uint8Array.from({ length: 70_000 }, (_, i) => i % 241) // over one Noise message
  sa.connection.send(small)
  sa.connection.send(large)
  await all
  assert.deepEqual(new Uint8ArrayList(...received).subarray(), new Uint8ArrayList(small, large).subarray())
  await Promise.all([sa.connection.close(), sb.connection.close()])
})
