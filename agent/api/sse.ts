import type { FastifyReply, FastifyRequest } from 'fastify'
import type { ServerResponse } from 'node:http'

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

/** Already-encoded JSON for EventStream.send. */
export class RawJson { readonly json: string; constructor (json: string) { this.json = json } }

/** Server-sent events on the raw response, with backpressure. */
export class EventStream {
  private readonly raw: ServerResponse
  private lastWrite = Date.now()
  private keepAliveTimer: NodeJS.Timeout | undefined
  constructor (reply: FastifyReply, extra: Record<string, string> = {}) {
    reply.hijack()
    this.raw = reply.raw
    this.raw.writeHead(200, {
      ...extra,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no'
    })
  }

  /**
   * Writes an SSE comment line whenever nothing was sent for `ms` (e.g. while a request waits for an
   * instance to resume on), so proxies and clients do not take the connection for idle. Clients ignore comments.
   */
  keepAlive (ms = 10_000): this {
    clearInterval(this.keepAliveTimer)
    this.keepAliveTimer = setInterval(() => {
      if (this.raw.destroyed || this.raw.writableEnded) { clearInterval(this.keepAliveTimer); return }
      if (Date.now() - this.lastWrite >= ms) { this.lastWrite = Date.now(); this.raw.write(': keep-alive\n\n') }
    }, Math.max(100, Math.floor(ms / 2)))
    this.keepAliveTimer.unref()
    return this
  }

  async send (data: unknown): Promise<void> {
    if (this.raw.destroyed) return
    this.lastWrite = Date.now()
    const text = typeof data === 'string' ? data : data instanceof RawJson ? data.json : JSON.stringify(data)
    if (!this.raw.write(`data: ${text}\n\n`)) {
      await new Promise<void>(resolve => {
        const done = (): void => { this.raw.off('drain', done); this.raw.off('close', done); resolve() }
        this.raw.on('drain', done)
        this.raw.on('close', done)
      })
    }
  }

  end (): void {
    clearInterval(this.keepAliveTimer)
    if (!this.raw.destroyed) this.raw.end()
  }
}

/** Aborts when the client goes away before the response is complete. */
export function clientGone (req: FastifyRequest, reply: FastifyReply): AbortController {
  const ac = new AbortController()
  reply.raw.on('close', () => { if (!reply.raw.writableFinished) ac.abort() })
  req.raw.on('aborted', () => { ac.abort() })
  return ac
}

