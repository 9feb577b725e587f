/**
 * Where an answer is written, whatever carries it: an HTTP response (node's ServerResponse, after
 * Fastify let go of it) or a stream through the inference tunnel (TunnelSink). The serving layer
 * writes to this, so the same code answers a client of this agent's HTTP API and a peer that
 * tunnelled a request here.
 */
import { PassThrough } from 'node:stream'

/** The part of node's ServerResponse (a Writable with a status line) the serving layer uses. */
export interface ResponseSink {
  writeHead: (status: number, headers: Record<string, string | number>) => unknown
  write: (chunk: string | Uint8Array) => boolean
  end: (chunk?: string | Uint8Array) => unknown
  destroy: (err?: Error) => unknown
  readonly destroyed: boolean
  readonly writableEnded: boolean
  readonly writableFinished: boolean
  /** bytes written and not yet sent on */
  readonly writableLength: number
  /** a sink read in-process (TunnelSink): bytes waiting for its reader */
  readonly readableLength?: number
  on: (event: 'drain' | 'close', listener: () => void) => unknown
  off: (event: 'drain' | 'close', listener: () => void) => unknown
}

/** Waits until `sink` takes more, or is closed (a client that left never drains). */
export async function drained (sink: ResponseSink): Promise<void> {
  if (sink.destroyed) return
  await new Promise<void>(resolve => {
    const done = (): void => { sink.off('drain', done); sink.off('close', done); resolve() }
    sink.on('drain', done)
    sink.on('close', done)
  })
}

/** Bytes written to `sink` that the other side has not taken yet. */
export function backlog (sink: ResponseSink): number {
  return sink.writableLength + (sink.readableLength ?? 0)
}

/** Writes `chunk`, then waits while the other side is behind (backpressure). */
export async function writeChunk (sink: ResponseSink, chunk: string | Uint8Array): Promise<void> {
  if (sink.destroyed || sink.writableEnded) return
  if (!sink.write(chunk)) await drained(sink)
}

/** A whole JSON (or other text) answer, unless the other side is gone. */
export function writeWhole (sink: ResponseSink, status: number, headers: Record<string, string>, text: string, contentType = 'application/json; charset=utf-8'): void {
  if (sink.destroyed || sink.writableEnded) return
  sink.writeHead(status, { ...headers, 'content-type': contentType, 'content-length': Buffer.byteLength(text) })
  sink.end(text)
}

/** A status line and headers, as a tunnel answer starts with them. */
export interface SinkHead { status: number, headers: Record<string, string> }

/**
 * A ResponseSink whose bytes are read as an async iterable (the body of a tunnel answer), with
 * backpressure: write() returns false while the tunnel is behind, and 'drain' follows once it caught
 * up. `head` resolves at writeHead (or with 499 when the sink is closed before any was written).
 */
export class TunnelSink extends PassThrough implements ResponseSink {
  readonly head: Promise<SinkHead>
  /** writeHead was called */
  headersSent = false
  private resolveHead!: (h: SinkHead) => void

  constructor () {
    super()
    this.head = new Promise(resolve => { this.resolveHead = resolve })
    // writes after the tunnel closed are dropped; a destroyed stream's error has no one to tell
    this.on('error', () => {})
    this.once('close', () => { this.resolveHead({ status: 499, headers: {} }) })
  }

  writeHead (status: number, headers: Record<string, string | number>): this {
    const h: Record<string, string> = {}
    for (const [k, v] of Object.entries(headers)) h[k.toLowerCase()] = String(v)
    this.headersSent = true
    this.resolveHead({ status, headers: h })
    return this
  }
}
