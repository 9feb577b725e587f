import { RecordEnvelope } from '@libp2p/peer-record'
import { peerIdFromPublicKey } from '@libp2p/peer-id'
import type { PrivateKey, Record as Libp2pRecord } from '@libp2p/interface'
import { MeshError } from './errors.ts'

export type EnvelopeRejectReason = 'bad-envelope' | 'wrong-domain' | 'bad-signature'

/** A frame that is not a valid libp2p signed envelope of the expected domain. */
export class EnvelopeError extends MeshError {
  readonly reason: EnvelopeRejectReason
  constructor (reason: EnvelopeRejectReason, message: string, options?: ErrorOptions) {
    super(message, 'ERR_ENVELOPE', options)
    this.name = 'EnvelopeError'
    this.reason = reason
  }
}

class Payload implements Libp2pRecord {
  readonly domain: string
  readonly codec: Uint8Array
  private readonly bytes: Uint8Array
  constructor (domain: string, codec: Uint8Array, bytes: Uint8Array) { this.domain = domain; this.codec = codec; this.bytes = bytes }
  marshal (): Uint8Array { return this.bytes }
  equals (other: Libp2pRecord): boolean {
    const o = other.marshal()
    return o.length === this.bytes.length && o.every((b, i) => b === this.bytes[i])
  }
}

/** Seals payload bytes in a libp2p signed envelope (domain-separated signature by `privateKey`). */
export async function sealPayload (domain: string, codec: Uint8Array, payload: Uint8Array, privateKey: PrivateKey): Promise<Uint8Array> {
  return (await RecordEnvelope.seal(new Payload(domain, codec, payload), privateKey)).marshal()
}

/** Opens a signed envelope: parse, payload type, signature. Returns the signer's peer ID and the payload; EnvelopeError otherwise. */
export async function openEnvelope (frame: Uint8Array, domain: string, codec: Uint8Array): Promise<{ signer: string, payload: Uint8Array }> {
  let envelope: RecordEnvelope
  try {
    envelope = RecordEnvelope.createFromProtobuf(frame)
  } catch (err) {
    throw new EnvelopeError('bad-envelope', 'frame is not a signed envelope', { cause: err })
  }
  if (envelope.payloadType.length !== codec.length || !envelope.payloadType.every((b, i) => b === codec[i])) {
    throw new EnvelopeError('wrong-domain', `envelope does not carry a ${domain} payload`)
  }
  let valid = false
  try {
    valid = await envelope.validate(domain)
  } catch (err) {
    throw new EnvelopeError('bad-signature', 'envelope signature could not be checked', { cause: err })
  }
  if (!valid) throw new EnvelopeError('bad-signature', 'envelope signature does not verify')
  return { signer: peerIdFromPublicKey(envelope.publicKey).toString(), payload: envelope.payload }
}

/** The payload of an envelope already checked once (e.g. read back from the agent's own store). */
export function envelopePayload (frame: Uint8Array): Uint8Array {
  return RecordEnvelope.createFromProtobuf(frame).payload
}
