/**
 * The one server-sent-events writer: OpenAI streams (served here, proxied from an external system, or
 * written into the inference tunnel for a peer) and the dashboard's /api/events. It knows nothing of
 * Fastify: it writes to a ResponseSink (an HTTP response, or a tunnel stream).
 */
import { backlog, drained } from './sink.ts'
import type { ResponseSink } from './sink.ts'

/**
 * A streamed chunk whose fixed parts are encoded once: per token only the
 * text is JSON-encoded (the same bytes JSON.stringify of the whole object gives).
 */
export function chunkTemplate (fixed: object, marker: string): (text: string) => string {
  const json = JSON.stringify(fixed)
  const at = json.indexOf(JSON.stringify(marker))
  const head = json.slice(0, at)
  const tail = json.slice(at + JSON.stringify(marker).length)
  return (text: string) => head + JSON.stringify(text) + tail
}

/** Already-encoded JSON for SseWriter.send. */
export class RawJson { readonly json: string; constructor (json: string) { this.json = json } }

/** One event's text: an optional `event:` name, then the data (a string as is, RawJson as encoded, anything else as JSON). */
export function sseFrame (data: unknown, event?: string): string {
  const text = typeof data === 'string' ? data : data instanceof RawJson ? data.json : JSON.stringify(data)
  return `${event != null ? `event: ${event}\n` : ''}data: ${text}\n\n`
}

export interface SseWriterOptions {
  /** default 200 (a proxied stream keeps its upstream's) */
  status?: number
  /** over the defaults (content-type text/event-stream, cache-control no-cache, connection keep-alive, x-accel-buffering no) */
  headers?: Record<string, string>
}

/** Server-sent events on a sink, with backpressure; the status line and headers are written at once. */
export class SseWriter {
  private readonly sink: ResponseSink
  private lastWrite = Date.now()
  private keepAliveTimer: NodeJS.Timeout | undefined

  constructor (sink: ResponseSink, opts: SseWriterOptions = {}) {
    this.sink = sink
    if (sink.destroyed) return
    sink.writeHead(opts.status ?? 200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
      ...opts.headers
    })
  }

  /** The other side is gone (or the stream was ended): nothing more will be written. */
  get closed (): boolean { return this.sink.destroyed || this.sink.writableEnded }

  /** Called once when the stream closes (the client left, or it was ended here). */
  onClose (fn: () => void): void {
    if (this.sink.destroyed) { fn(); return }
    this.sink.on('close', fn)
  }

  /**
   * Writes an SSE comment line whenever nothing was sent for `ms` (e.g. while a request waits for an
   * instance to resume on), so proxies and clients do not take the connection for idle. Clients ignore comments.
   */
  keepAlive (ms = 10_000): this {
    clearInterval(this.keepAliveTimer)
    this.keepAliveTimer = setInterval(() => {
      if (this.closed) { clearInterval(this.keepAliveTimer); return }
      if (Date.now() - this.lastWrite >= ms) { this.lastWrite = Date.now(); this.sink.write(': keep-alive\n\n') }
    }, Math.max(100, Math.floor(ms / 2)))
    this.keepAliveTimer.unref()
    return this
  }

  /** How long an EventSource waits before reconnecting. */
  retry (ms: number): void {
    if (!this.closed) this.sink.write(`retry: ${Math.round(ms)}\n\n`)
  }

  /** One event; waits while the other side is behind. */
  async send (data: unknown, event?: string): Promise<void> {
    await this.sendFrame(sseFrame(data, event))
  }

  /** An already-encoded event (its lines and the blank line that ends it), e.g. one relayed from an upstream. */
  async sendFrame (frame: string): Promise<void> {
    if (this.closed) return
    this.lastWrite = Date.now()
    if (!this.sink.write(frame)) await drained(this.sink)
  }

  /**
   * One event without waiting, for a broadcast to many clients: a client with more than
   * `maxBuffered` bytes not yet taken is dropped (its stream destroyed) rather than buffered without
   * bound. False when the client is (now) gone.
   */
  post (data: unknown, event?: string, maxBuffered = 4 * 1024 * 1024): boolean {
    if (this.closed) return false
    if (backlog(this.sink) > maxBuffered) { this.destroy(); return false }
    this.lastWrite = Date.now()
    this.sink.write(sseFrame(data, event))
    return true
  }

  end (): void {
    clearInterval(this.keepAliveTimer)
    if (!this.closed) this.sink.end()
  }

  destroy (): void {
    clearInterval(this.keepAliveTimer)
    if (!this.sink.destroyed) this.sink.destroy()
  }
}
