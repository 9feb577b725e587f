import { createHash } from 'node:crypto'
import * as A from '@automerge/automerge'
import type { PrivateKey } from '@libp2p/interface'
import { EnvelopeError, openEnvelope, sealPayload } from '../../mesh/envelope.ts'

/**
 * Signed changes of the mesh's desired state. A change is one Automerge change (binary), sealed in a
 * libp2p signed envelope (domain-separated Ed25519 signature) by the agent that wrote it. The change's
 * Automerge actor is bound to its writer: the first 12 bytes of the actor are the SHA-256 of the
 * writer's peer ID, the last 4 the writer's boot epoch. So no peer can write in another's name, and a
 * relay (gossip or anti-entropy) cannot alter a change.
 */
export const STATE_DOMAIN = 'blockmesh-state'
export const STATE_CODEC = new TextEncoder().encode('/blockmesh/state/1')
/** Frames larger than this are refused before any decoding. */
export const MAX_STATE_FRAME_BYTES = 512 * 1024
/** One stored value (a component, block, vDAG or plan as JSON), at most. */
export const MAX_VALUE_BYTES = 256 * 1024
/** Operations in one change, at most (a write touches one key; a migration of old tables a few hundred). */
export const MAX_OPS = 4096

/** The collections of the desired state; a key is `<collection>/<id>`. */
export const COLLECTIONS = ['components', 'blocks', 'vdags', 'plans', 'templates', 'templateversions', 'mlservices'] as const
export type Collection = typeof COLLECTIONS[number]
const KEY = /^(components|blocks|vdags|plans|templates|templateversions|mlservices)\/[A-Za-z0-9][A-Za-z0-9._:@-]{0,159}$/

export type StateRejectReason = 'oversized' | 'bad-envelope' | 'wrong-domain' | 'bad-signature' | 'bad-change' | 'actor-mismatch' | 'bad-op'

export class StateFrameError extends Error {
  readonly code = 'ERR_STATE_FRAME'
  readonly reason: StateRejectReason
  constructor (reason: StateRejectReason, message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'StateFrameError'
    this.reason = reason
  }
}

/** The 12-byte actor prefix of a writer (hex). */
export function actorPrefix (peerId: string): string {
  return createHash('sha256').update(peerId).digest('hex').slice(0, 24)
}

/** The Automerge actor of a writer in one boot epoch (16 bytes, hex). */
export function actorFor (peerId: string, epoch: number): string {
  return actorPrefix(peerId) + (epoch >>> 0).toString(16).padStart(8, '0')
}

/** Seals a change (no checks: used by the writer, and by tests that forge frames). */
export async function sealChange (change: Uint8Array, privateKey: PrivateKey): Promise<Uint8Array> {
  return await sealPayload(STATE_DOMAIN, STATE_CODEC, change, privateKey)
}

export interface OpenedChange {
  /** the writer's peer ID (the envelope's signer) */
  writer: string
  change: Uint8Array
  hash: string
  actor: string
  seq: number
  deps: string[]
  /** the keys the change sets or deletes */
  keys: string[]
}

/**
 * Opens a frame: size bound, envelope, domain, signature, Automerge decoding, actor bound to the signer,
 * and every operation a set (a string no larger than MAX_VALUE_BYTES) or delete of a `<collection>/<id>`
 * key of the root map. Throws StateFrameError with the reason otherwise.
 */
export async function openChange (frame: Uint8Array): Promise<OpenedChange> {
  if (frame.length > MAX_STATE_FRAME_BYTES) throw new StateFrameError('oversized', `frame of ${frame.length} bytes exceeds ${MAX_STATE_FRAME_BYTES}`)
  let opened: { signer: string, payload: Uint8Array }
  try {
    opened = await openEnvelope(frame, STATE_DOMAIN, STATE_CODEC)
  } catch (err) {
    if (err instanceof EnvelopeError) throw new StateFrameError(err.reason, err.message, { cause: err })
    throw err
  }
  const writer = opened.signer
  const change = opened.payload
  let decoded: ReturnType<typeof A.decodeChange>
  try {
    decoded = A.decodeChange(change)
  } catch (err) {
    throw new StateFrameError('bad-change', 'payload is not an Automerge change', { cause: err })
  }
  if (typeof decoded.actor !== 'string' || decoded.actor.length !== 32 || !decoded.actor.startsWith(actorPrefix(writer))) {
    throw new StateFrameError('actor-mismatch', `change of actor ${String(decoded.actor).slice(0, 40)} is signed by ${writer}, whose actors start ${actorPrefix(writer)}`)
  }
  if (!Array.isArray(decoded.ops) || decoded.ops.length === 0 || decoded.ops.length > MAX_OPS) throw new StateFrameError('bad-op', `a change carries 1..${MAX_OPS} operations`)
  const keys: string[] = []
  for (const op of decoded.ops) {
    if (op.obj !== '_root' || typeof op.key !== 'string' || !KEY.test(op.key) || (op as { insert?: boolean }).insert === true) {
      throw new StateFrameError('bad-op', 'operations may only set or delete <collection>/<id> keys of the root map')
    }
    if (op.action === 'set') {
      if (typeof op.value !== 'string' || op.value.length > MAX_VALUE_BYTES) throw new StateFrameError('bad-op', `a value is a string of at most ${MAX_VALUE_BYTES} characters`)
    } else if (op.action !== 'del') {
      throw new StateFrameError('bad-op', `operation ${String(op.action).slice(0, 20)} is not allowed`)
    }
    keys.push(op.key)
  }
  return { writer, change, hash: decoded.hash as string, actor: decoded.actor, seq: decoded.seq, deps: decoded.deps, keys }
}
