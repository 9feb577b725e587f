/**
 * The mesh's two changes to Noise, in one wrapper around the encrypter: each encrypted message leaves the
 * raw connection as one socket write (./coalesce-writes.ts), and the secured connection cuts messages with
 * a decoder that does not throw (./noise-frames.ts). bench/activations.ts measures what each saves a hop.
 */
import type { ConnectionEncrypter } from '@libp2p/interface'
import { coalesceWrites } from './coalesce-writes.ts'
import { adoptNoiseFrameDecoder } from './noise-frames.ts'

/**
 * A connection encrypter (Noise) whose raw connection writes each send as one buffer (coalesceWrites),
 * and whose encrypted connection cuts messages without throwing (adoptNoiseFrameDecoder, mesh/noise-frames.ts):
 * `connectionEncrypters: [tunedNoise(noise())]`. Everything else is the encrypter's own.
 */
export function tunedNoise<C> (factory: (components: C) => ConnectionEncrypter): (components: C) => ConnectionEncrypter {
  return (components) => {
    const inner = factory(components)
    return {
      protocol: inner.protocol,
      secureOutbound: async (connection, options) => {
        const secured = await inner.secureOutbound(coalesceWrites(connection), options)
        adoptNoiseFrameDecoder(secured.connection)
        return secured
      },
      secureInbound: async (connection, options) => {
        const secured = await inner.secureInbound(coalesceWrites(connection), options)
        adoptNoiseFrameDecoder(secured.connection)
        return secured
      }
    }
  }
}
