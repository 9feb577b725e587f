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


/**
 * How bad a peer's offence is, for the one peer score (mesh/peer-score.ts):
 * - `oversized`: a frame over the protocol's limit; may be an honest peer of another version with larger limits;
 * - `malformed`: not a frame of the protocol (bad length prefix, not UTF-8 JSON, fails the schema, truncated,
 *   unsigned, or no complete request in time); a bug or a probe;
 * - `forged`: a bad signature, or a signer that is not the peer the frame names: never an honest mistake.
 */
export type Offence = 'oversized' | 'malformed' | 'forged'

/**
 * The offence a frame-rejection reason stands for. The reasons are those of CapacityFrameError and of the state
 * frames (agent/state/frame.ts StateFrameError): the same words for the same failures.
 */
export function offenceOf (reason: string): Offence {
  switch (reason) {
    case 'oversized': return 'oversized'
    case 'bad-signature':
    case 'peer-mismatch':
    case 'actor-mismatch': return 'forged'
    default: return 'malformed'
  }
}

/** A frame from a peer that breaks a protocol's rules; `offence` is what it costs the peer that sent it. */
export class FrameError extends MeshError {
  readonly offence: Offence
  constructor (message: string, code: string, offence: Offence, options?: ErrorOptions) {
    super(message, code, options)
    this.name = 'FrameError'
    this.offence = offence
  }
}

/** A frame's length prefix declares more bytes than the protocol allows. */
export class FrameTooLargeError extends FrameError {
  constructor (message: string, options?: ErrorOptions) {
    super(message, 'ERR_FRAME_TOO_LARGE', 'oversized', options)
    this.name = 'FrameTooLargeError'
  }
}

/** A frame's length prefix is not a length: longer than any allowed length needs, or not a valid varint. */
export class FrameLengthError extends FrameError {
  constructor (message: string, options?: ErrorOptions) {
    super(message, 'ERR_FRAME_LENGTH', 'malformed', options)
    this.name = 'FrameLengthError'
  }
}

/** The stream ended inside a frame (its length prefix or its bytes). */
export class TruncatedFrameError extends FrameError {
  constructor (message: string, options?: ErrorOptions) {
    super(message, 'ERR_TRUNCATED_FRAME', 'malformed', options)
    this.name = 'TruncatedFrameError'
  }
}

/** A complete frame whose contents are not what the protocol expects (not UTF-8 JSON, or failing its schema). */
export class MalformedFrameError extends FrameError {
  constructor (message: string, options?: ErrorOptions) {
    super(message, 'ERR_MALFORMED_FRAME', 'malformed', options)
    this.name = 'MalformedFrameError'
  }
}

/** No complete frame arrived within the protocol's time limit. */
export class FrameTimeoutError extends FrameError {
  constructor (message: string, options?: ErrorOptions) {
    super(message, 'ERR_FRAME_TIMEOUT', 'malformed', options)
    this.name = 'FrameTimeoutError'
  }
}

/** A request answered with an error frame by the remote peer, or an answer that does not parse. */
export class RemoteError extends MeshError {
  readonly remoteCode: string
  constructor (remoteCode: string, message: string, options?: ErrorOptions) {
    super(message, 'ERR_REMOTE', options)
    this.name = 'RemoteError'
    this.remoteCode = remoteCode
  }
}

/** A served exchange (one stream) ran past its time limit. */
export class StreamTimeoutError extends MeshError {
  constructor (message: string, options?: ErrorOptions) {
    super(message, 'ERR_STREAM_TIMEOUT', options)
    this.name = 'StreamTimeoutError'
  }
}

/** An exchange cut short before its end: the caller aborted, the reader is done, or the stream closed under it. */
export class StreamAbortedError extends MeshError {
  constructor (message: string, options?: ErrorOptions) {
    super(message, 'ERR_STREAM_ABORTED', options)
    this.name = 'StreamAbortedError'
  }
}

/** The protocol service stopped (mesh/rpc.ts, mesh/tunnel.ts): its exchanges in flight end; no fault of the peer. */
export class ServiceStoppedError extends MeshError {
  constructor (message = 'the service stopped', options?: ErrorOptions) {
    super(message, 'ERR_SERVICE_STOPPED', options)
    this.name = 'ServiceStoppedError'
  }
}

/** An inbound capacity record refused; `reason` is the metric label, `offence` what it costs the forwarder. */
export class CapacityFrameError extends FrameError {
  readonly reason: RejectReason
  constructor (reason: RejectReason, message: string, options?: ErrorOptions) {
    super(message, 'ERR_CAPACITY_FRAME', offenceOf(reason), options)
    this.name = 'CapacityFrameError'
    this.reason = reason
  }
}
