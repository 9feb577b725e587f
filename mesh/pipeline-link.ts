import type { Connection, PeerId, Stream } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'
import { FrameDecoder, PIPELINE_PROTOCOL, PipelineFrameError, encodeFrame } from './pipeline-frame.ts'
import type { PipelineFrame } from './pipeline-frame.ts'
import { MeshError } from './errors.ts'
import { parsePeerId } from './node.ts'
import type { MeshLogger } from './node.ts'
import type { Offence } from './peer-score.ts'

/** A frame could not be delivered to a peer: the dial failed, or the stream closed under it. */
export class PeerLinkError extends MeshError {
  readonly peer: string
  constructor (peer: string, message: string, options?: ErrorOptions) {
    super(message, 'ERR_PEER_LINK', options)
    this.name = 'PeerLinkError'
    this.peer = peer
  }
}

/** What the link layer needs of libp2p (the node's registrar, dialer and events). */
export interface PeerLinkComponents {
  libp2p: {
    handle: (protocol: string, handler: (stream: Stream, connection: Connection) => void | Promise<void>, opts?: { maxInboundStreams?: number, maxOutboundStreams?: number }) => Promise<void>
    unhandle: (protocol: string) => Promise<void>
    dialProtocol: (peer: PeerId, protocol: string, opts?: { signal?: AbortSignal }) => Promise<Stream>
    addEventListener: (type: 'peer:disconnect', listener: (evt: CustomEvent<PeerId>) => void) => void
    removeEventListener: (type: 'peer:disconnect', listener: (evt: CustomEvent<PeerId>) => void) => void
  }
  isBanned: (peer: string) => boolean
}

export interface PeerLinksInit {
  /** a frame arrived from `peer` */
  onFrame: (peer: string, frame: PipelineFrame) => void
  /** `peer` sent bytes that are not frames, or broke the protocol (the stream is dropped): for the peer score */
  onInvalid: (peer: string, reason: string, offence: Offence) => void
  /** frames to `peer` could not be sent (a failed dial, a stream that broke or closed under them) */
  onSendFailed: (peer: string, frames: PipelineFrame[], err: PeerLinkError) => void
  /** every connection to `peer` is gone */
  onPeerLost: (peer: string, err: PeerLinkError) => void
  log: MeshLogger
  /** how long a dial may take */
  dialTimeoutMs?: number
  /** bytes queued to one peer before a sender waits for the stream to drain */
  highWaterBytes?: number
}

/** Streams per connection and direction: one is used; a few more cover both ends dialling at once and redials. */
const MAX_STREAMS = 4

/** Chunks of a flush are copied together up to this many bytes (about one Noise message); bigger ones go as they are. */
const COALESCE_BYTES = 64 * 1024

/**
 * A flush's chunks (length prefixes, headers, payloads) as few buffers as copying small ones allows:
 * Noise (with Node's cipher, for messages of 1200 bytes and more) encrypts a chunk list chunk by chunk,
 * and libp2p's TCP transport hands every resulting chunk to its own socket.write (with TCP_NODELAY, its
 * own syscall), so a decode step's [prefix, header, payload] cost three writes where one buffer costs
 * one (six writes per step frame become four; eight coalesced steps, 27 become four). Copying a few KiB
 * is far cheaper than a syscall; chunks of 64 KiB and more are not copied.
 */
function coalesce (chunks: Uint8Array[]): Uint8Array | Uint8ArrayList {
  if (chunks.length === 1) return chunks[0]
  const out: Uint8Array[] = []
  let run: Uint8Array[] = []
  let runBytes = 0
  const endRun = (): void => {
    if (run.length === 1) out.push(run[0])
    else if (run.length > 1) {
      const joined = new Uint8Array(runBytes)
      let at = 0
      for (const c of run) { joined.set(c, at); at += c.length }
      out.push(joined)
    }
    run = []
    runBytes = 0
  }
  for (const c of chunks) {
    if (c.length >= COALESCE_BYTES) { endRun(); out.push(c); continue }
    if (runBytes + c.length > COALESCE_BYTES) endRun()
    run.push(c)
    runBytes += c.length
  }
  endRun()
  return out.length === 1 ? out[0] : new Uint8ArrayList(...out)
}

interface Outbound {
  stream: Stream | null
  dialing: Promise<Stream> | null
  /** frames waiting for the next flush, as encoded chunks, and the frames themselves (for onPeerLost) */
  chunks: Uint8Array[]
  frames: PipelineFrame[]
  bytes: number
  scheduled: boolean
  /** waiters for the queue to fall under the high-water mark */
  drained: Array<() => void>
}

/**
 * One long-lived libp2p stream per pair of peers and direction for /blockmesh/pipeline/1.0.0, shared
 * by every sequence between them (instead of a stream per sequence per hop, which ran into libp2p's
 * per-connection stream limits at 64 concurrent sequences). Frames sent in the same tick leave in
 * one write (one Yamux frame, one Noise message, where they fit); inbound bytes are cut into frames
 * synchronously as they arrive. A js-libp2p protocol service: start() handles the protocol, stop()
 * unhandles it and closes the streams.
 */
export class PeerLinks {
  private readonly components: PeerLinkComponents
  private readonly init: PeerLinksInit
  private readonly out = new Map<string, Outbound>()
  private readonly inbound = new Set<Stream>()
  private started = false
  private readonly onDisconnect = (evt: CustomEvent<PeerId>): void => {
    const peer = evt.detail.toString()
    const err = new PeerLinkError(peer, 'the peer disconnected')
    this.lost(peer, err)
    this.init.onPeerLost(peer, err)
  }

  constructor (components: PeerLinkComponents, init: PeerLinksInit) {
    this.components = components
    this.init = init
  }

  async start (): Promise<void> {
    if (this.started) return
    await this.components.libp2p.handle(PIPELINE_PROTOCOL, (stream, connection) => { this.accept(stream, connection) }, { maxInboundStreams: MAX_STREAMS, maxOutboundStreams: MAX_STREAMS })
    this.components.libp2p.addEventListener('peer:disconnect', this.onDisconnect)
    this.started = true
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    this.components.libp2p.removeEventListener('peer:disconnect', this.onDisconnect)
    await this.components.libp2p.unhandle(PIPELINE_PROTOCOL).catch(() => {})
    for (const [peer, o] of this.out) {
      this.out.delete(peer)
      o.stream?.abort(new Error('pipeline links stopped'))
    }
    for (const s of this.inbound) s.abort(new Error('pipeline links stopped'))
    this.inbound.clear()
  }

  /** Bytes queued to `peer` and not yet handed to its stream. */
  queued (peer: string): number { return this.out.get(peer)?.bytes ?? 0 }

  /**
   * Queues a frame for `peer`; it leaves with the others of this tick. Resolves at once unless the
   * peer's queue is over its high-water mark (then once it drains). Failures come to onPeerLost.
   */
  async send (peer: string, frame: PipelineFrame): Promise<void> {
    let o = this.out.get(peer)
    if (o == null) {
      o = { stream: null, dialing: null, chunks: [], frames: [], bytes: 0, scheduled: false, drained: [] }
      this.out.set(peer, o)
    }
    const chunks = encodeFrame(frame)
    o.chunks.push(...chunks)
    o.frames.push(frame)
    for (const c of chunks) o.bytes += c.length
    if (!o.scheduled) {
      o.scheduled = true
      queueMicrotask(() => { void this.flush(peer) })
    }
    if (o.bytes > (this.init.highWaterBytes ?? 8 * 1024 * 1024)) {
      const waiting = o
      await new Promise<void>(resolve => { waiting.drained.push(resolve) })
    }
  }

  /** Writes what is queued for `peer` (the only writer while o.scheduled is set, so frames keep their order). */
  private async flush (peer: string): Promise<void> {
    const o = this.out.get(peer)
    if (o == null) return
    let stream: Stream
    try {
      stream = await this.streamTo(peer, o)
    } catch (err) {
      this.lost(peer, err instanceof PeerLinkError ? err : new PeerLinkError(peer, `cannot open a pipeline stream to ${peer}: ${(err as Error).message}`, { cause: err }))
      return
    }
    while (o.chunks.length > 0 && this.out.get(peer) === o) {
      const data = coalesce(o.chunks)
      o.chunks = []
      o.frames = []
      o.bytes = 0
      for (const w of o.drained.splice(0)) w()
      try {
        if (!stream.send(data)) await stream.onDrain()
      } catch (err) {
        this.lost(peer, new PeerLinkError(peer, `the pipeline stream to ${peer} broke: ${(err as Error).message}`, { cause: err }))
        return
      }
    }
    o.scheduled = false
  }

  private async streamTo (peer: string, o: Outbound): Promise<Stream> {
    if (o.stream != null && o.stream.writeStatus === 'writable') return o.stream
    o.stream = null
    o.dialing ??= (async () => {
      try {
        const stream = await this.components.libp2p.dialProtocol(parsePeerId(peer), PIPELINE_PROTOCOL, { signal: AbortSignal.timeout(this.init.dialTimeoutMs ?? 15_000) })
        // answers come on the peer's own stream to us; anything it writes on this one is read all the same
        this.read(stream, peer)
        stream.addEventListener('close', () => {
          if (o.stream === stream) o.stream = null
          if (this.out.get(peer) === o && (o.chunks.length > 0)) this.lost(peer, new PeerLinkError(peer, `the pipeline stream to ${peer} closed`))
        }, { once: true })
        o.stream = stream
        return stream
      } finally {
        o.dialing = null
      }
    })()
    return await o.dialing
  }

  /** Everything queued for `peer` fails; the next send dials again. */
  private lost (peer: string, err: PeerLinkError): void {
    const o = this.out.get(peer)
    this.out.delete(peer)
    if (o != null) {
      for (const w of o.drained.splice(0)) w()
      if (o.stream != null && o.stream.status === 'open') o.stream.abort(err)
    }
    this.init.onSendFailed(peer, o?.frames ?? [], err)
  }

  private accept (stream: Stream, connection: Connection): void {
    const peer = connection.remotePeer.toString()
    if (this.components.isBanned(peer)) { stream.abort(new Error('banned')); return }
    this.inbound.add(stream)
    stream.addEventListener('close', () => { this.inbound.delete(stream) }, { once: true })
    this.read(stream, peer)
  }

  /**
   * Cuts the stream's bytes into frames and hands them on. A frame that is malformed, or that the
   * handler finds breaks the protocol (it throws PipelineFrameError), costs the peer a strike and ends
   * the stream: nothing after it is read. The peer closing its side closes ours.
   */
  private read (stream: Stream, peer: string): void {
    const decoder = new FrameDecoder()
    let dead = false
    stream.addEventListener('remoteCloseWrite', () => { void stream.close().catch(() => {}) })
    stream.addEventListener('message', (evt) => {
      if (dead) return
      try {
        for (const f of decoder.push(evt.data)) this.init.onFrame(peer, f)
      } catch (err) {
        dead = true
        if (!(err instanceof PipelineFrameError)) {
          this.init.log.warn({ peer, err: (err as Error).message }, 'pipeline frame handler failed')
          stream.abort(err as Error)
          return
        }
        this.init.onInvalid(peer, `pipeline frame: ${err.message}`, err.offence)
        this.init.log.warn({ peer, err: err.message }, 'bad pipeline stream dropped')
        stream.abort(err)
      }
    })
  }
}

/** js-libp2p style factory: `pipelineLinks(init)(components)`. */
export function pipelineLinks (init: PeerLinksInit): (components: PeerLinkComponents) => PeerLinks {
  return (components) => new PeerLinks(components, init)
}
