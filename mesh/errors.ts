/**
 * Typed errors of the mesh layer. Each class has a stable `name` and a `code`
 * so callers (and the HTTP API above) can map them without string matching.
 */
export class MeshError extends Error {
  readonly code: string
  constructor (message: string, code: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'MeshError'
    this.code = code
  }
}

export class InvalidSwarmKeyError extends MeshError {
  constructor (message: string, options?: ErrorOptions) {
    super(message, 'ERR_INVALID_SWARM_KEY', options)
    this.name = 'InvalidSwarmKeyError'
  }
}

export class InvalidMultiaddrError extends MeshError {
  constructor (message: string, options?: ErrorOptions) {
    super(message, 'ERR_INVALID_MULTIADDR', options)
    this.name = 'InvalidMultiaddrError'
  }
}

export class InvalidPeerIdError extends MeshError {
  constructor (message: string, options?: ErrorOptions) {
    super(message, 'ERR_INVALID_PEER_ID', options)
    this.name = 'InvalidPeerIdError'
  }
}

/** Why an inbound capacity frame was refused; used as a metric label. */
export type RejectReason =
  | 'oversized'
  | 'bad-envelope'
  | 'bad-signature'
  | 'wrong-domain'
  | 'bad-json'
  | 'bad-schema'
  | 'peer-mismatch'
  | 'unsigned'

export class CapacityFrameError extends MeshError {
  readonly reason: RejectReason
  constructor (reason: RejectReason, message: string, options?: ErrorOptions) {
    super(message, 'ERR_CAPACITY_FRAME', options)
    this.name = 'CapacityFrameError'
    this.reason = reason
  }
}
