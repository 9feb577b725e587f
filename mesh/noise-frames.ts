import { InvalidParametersError } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'

/** Noise's own limit on what one connection may hold of a message not yet complete. */
const MAX_BUFFER_BYTES = 16 * 1024 * 1024

/**
 * Cuts the bytes of a Noise connection into its messages: a 2-byte big-endian length, then that many bytes
 * of ciphertext. It stands in for the LengthPrefixedDecoder that @chainsafe/libp2p-noise 17 makes, which
 * learns that fewer than two bytes are left by catching a RangeError its length decoder throws: one
 * thrown and caught error, stack trace and all, for every chunk read, 18 µs of a decode hop's client CPU
 * in a profile (bench/activations.ts). Same messages and the same buffer limit; nothing is thrown unless
 * the limit is passed. A message that arrived in one chunk is handed on as a view of it, as before.
 */
export class NoiseFrameDecoder {
  readonly buffer = new Uint8ArrayList()
  private readonly maxBufferSize: number

  constructor (maxBufferSize = MAX_BUFFER_BYTES) {
    this.maxBufferSize = maxBufferSize
  }

  * decode (chunk: Uint8Array | Uint8ArrayList): Generator<Uint8Array, void, undefined> {
    this.buffer.append(chunk)
    if (this.buffer.byteLength > this.maxBufferSize) {
      throw new InvalidParametersError(`Buffer length limit exceeded - ${this.buffer.byteLength}/${this.maxBufferSize}`)
    }
    while (this.buffer.byteLength >= 2) {
      const length = (this.buffer.get(0) << 8) | this.buffer.get(1)
      if (this.buffer.byteLength < 2 + length) return
      const message = this.buffer.subarray(2, 2 + length)
      this.buffer.consume(2 + length)
      if (length > 0) yield message
    }
  }
}

/** What adoptNoiseFrameDecoder needs of Noise's decoder: its pending bytes. */
interface LengthPrefixed { buffer: Uint8ArrayList | { byteLength: number, subarray: () => Uint8Array }, decode: unknown }

/**
 * Gives a connection that Noise's secureInbound/secureOutbound returned a NoiseFrameDecoder, carrying
 * over any bytes its decoder holds. Noise's stream reads `this.decoder` for every chunk, so the swap
 * takes effect at once. A connection without such a decoder (another encrypter, a Noise that changed)
 * is left as it is; test/unit/noise-frames.test.ts checks that this Noise has one.
 */
export function adoptNoiseFrameDecoder (connection: unknown): boolean {
  const c = connection as { decoder?: Partial<LengthPrefixed> } | null
  const old = c?.decoder
  if (old == null || old instanceof NoiseFrameDecoder || typeof old.decode !== 'function' || old.buffer == null || typeof old.buffer.byteLength !== 'number') return false
  const next = new NoiseFrameDecoder()
  if (old.buffer.byteLength > 0) next.buffer.append(old.buffer.subarray())
  c!.decoder = next as unknown as LengthPrefixed
  return true
}
