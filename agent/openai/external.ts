import { AgentError } from '../errors.ts'
import { openAIErrorBody } from './errors.ts'
import { writeWhole } from '../http/sink.ts'
import type { ResponseSink } from '../http/sink.ts'
import { SseWriter } from '../http/sse.ts'

/** An OpenAI-compatible server the agent does not run itself (vLLM, another agent, a hosted API). */
export interface ExternalTarget {
  /** base URL of the OpenAI-compatible server, e.g. http://vllm-service:8080 (with or without a trailing /v1) */
  url: string
  /** the model name the external server serves (the block id is rewritten to this) */
  model: string
  apiKey?: string
  /** health check path; default '/v1/models' */
  healthPath?: string
}

/** Options of an ExternalBackend. */
export interface ExternalBackendOptions {
  /**
   * Bound on the wait for the upstream's response headers (default 600 000 ms;
   * a non-streamed completion answers only when done). Health checks wait at
   * most the smaller of this and 10 000 ms.
   */
  requestTimeoutMs?: number
}

/** Why an external system failed its health check. */
export type ExternalFailure = 'unhealthy' | 'unreachable'

/** An external system cannot be reached, or answered its health check with a non-2xx status. */
export class ExternalError extends AgentError {
  readonly reason: ExternalFailure
  constructor (reason: ExternalFailure, message: string, options?: ErrorOptions) {
    super(message, `external_${reason}`, reason === 'unhealthy' ? 503 : 502, undefined, options)
    this.name = 'ExternalError'
    this.reason = reason
  }
}

/** Largest non-streamed answer (or upstream error body) read and rewritten. */
export const MAX_JSON_BYTES = 16 * 1024 * 1024
/** Largest single SSE event (all its lines), in characters. */
export const MAX_EVENT_CHARS = 1024 * 1024

const DEFAULT_REQUEST_TIMEOUT_MS = 600_000
const HEALTH_TIMEOUT_MS = 10_000

/** "ECONNREFUSED 127.0.0.1:1234" and the like from a fetch failure, else its message. */
function describe (err: unknown): string {
  const e = err as Error & { cause?: { code?: string, message?: string } }
  const cause = e.cause
  if (cause != null && typeof cause === 'object') {
    if (cause.message != null && cause.message !== '') return cause.code != null && !cause.message.includes(cause.code) ? `${cause.code}: ${cause.message}` : cause.message
    if (cause.code != null) return cause.code
  }
  return e.message
}

class TooLarge extends Error {}

/** Reads a body into a string, refusing more than `max` bytes. */
async function readBounded (body: ReadableStream<Uint8Array> | null, max: number): Promise<string> {
  if (body == null) return ''
  const reader = body.getReader()
  const parts: Uint8Array[] = []
  let size = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    size += value.byteLength
    if (size > max) {
      await reader.cancel().catch(() => {})
      throw new TooLarge(`more than ${max} bytes`)
    }
    parts.push(value)
  }
  return Buffer.concat(parts).toString('utf8')
}

function sendError (res: ResponseSink, headers: Record<string, string>, status: number, message: string, code: string): void {
  writeWhole(res, status, headers, JSON.stringify(openAIErrorBody(status, message, code)), 'application/json')
}

/** The client left before an answer was sent: nothing more to say to it. */
function gone (res: ResponseSink): { status: number, streamed: boolean } {
  if (!res.destroyed) res.destroy()
  return { status: 499, streamed: false }
}

/** `value` with a top-level string `model` replaced, or null when it is not such an object. */
function withModel (value: unknown, model: string): unknown {
  if (value == null || typeof value !== 'object' || Array.isArray(value)) return null
  const obj = value as Record<string, unknown>
  if (typeof obj.model !== 'string') return null
  return { ...obj, model }
}

/**
 * Rewrites one SSE event (its lines, without the blank line that ends it):
 * when its data is a JSON object with a `model`, that is replaced and the data
 * sent as one `data:` line; other fields (event:, id:, comments) are kept.
 */
function rewriteEvent (lines: string[], model: string): string {
  const data: string[] = []
  const other: string[] = []
  for (const line of lines) {
    if (line.startsWith('data:')) data.push(line.slice(line.startsWith('data: ') ? 6 : 5))
    else other.push(line)
  }
  if (data.length > 0) {
    const payload = data.join('\n')
    if (payload.includes('"model"')) {
      try {
        const rewritten = withModel(JSON.parse(payload), model)
        if (rewritten != null) return [...other, `data: ${JSON.stringify(rewritten)}`].join('\n') + '\n\n'
      } catch { /* not JSON: pass through as it came */ }
    }
  }
  return lines.join('\n') + '\n\n'
}

/**
 * Proxies OpenAI requests for one block to an external OpenAI-compatible
 * server: the block id is rewritten to the upstream's model name on the way
 * in and back on the way out; streams pass through event by event.
 */
export class ExternalBackend {
  readonly target: ExternalTarget
  /** the server's root, without a trailing /v1 or slash */
  readonly base: string
  private readonly requestTimeoutMs: number

  constructor (target: ExternalTarget, opts: ExternalBackendOptions = {}) {
    let parsed: URL
    try {
      parsed = new URL(target.url)
    } catch {
      throw new ExternalError('unreachable', `external system URL is not a URL: ${target.url}`)
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new ExternalError('unreachable', `external system URL must be http(s): ${target.url}`)
    this.target = target
    this.base = target.url.replace(/\/+$/, '').replace(/\/v1$/, '')
    this.requestTimeoutMs = opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS
  }

  private headers (json: boolean, accept: string): Record<string, string> {
    // identity: a compressed stream would be held back by the decompressor
    const h: Record<string, string> = { accept, 'accept-encoding': 'identity' }
    if (json) h['content-type'] = 'application/json'
    if (this.target.apiKey != null && this.target.apiKey !== '') h.authorization = `Bearer ${this.target.apiKey}`
    return h
  }

  /** GET the health path; resolves when 2xx, else throws ExternalError (reason 'unhealthy' / 'unreachable'). */
  async health (signal?: AbortSignal): Promise<void> {
    const path = this.target.healthPath ?? '/v1/models'
    const url = this.base + (path.startsWith('/') ? path : `/${path}`)
    const timeoutMs = Math.min(this.requestTimeoutMs, HEALTH_TIMEOUT_MS)
    const timeout = AbortSignal.timeout(timeoutMs)
    let res: Response
    try {
      res = await fetch(url, { headers: this.headers(false, 'application/json'), signal: signal == null ? timeout : AbortSignal.any([signal, timeout]) })
    } catch (err) {
      if (signal?.aborted === true) throw signal.reason
      if (timeout.aborted) throw new ExternalError('unreachable', `external system at ${this.base} did not answer GET ${path} within ${timeoutMs} ms`, { cause: err })
      throw new ExternalError('unreachable', `cannot reach external system at ${this.base} (GET ${path}): ${describe(err)}`, { cause: err })
    }
    let text = ''
    try {
      text = await readBounded(res.body, 64 * 1024)
    } catch { /* a huge or broken body: the status decides */ }
    if (res.status < 200 || res.status > 299) {
      const snippet = text.trim().slice(0, 300)
      throw new ExternalError('unhealthy', `external system at ${this.base} answered ${res.status} to GET ${path}${snippet !== '' ? `: ${snippet}` : ''}`)
    }
  }

  /**
   * Forwards one POST /v1/chat/completions or /v1/completions body and writes
   * the answer to `res` (a raw HTTP response nobody has written to yet, or a
   * tunnel stream), with `headers` added to the upstream's.
   * `body.model` is replaced by target.model; in the answer (JSON or each SSE
   * `data:` event) `model` is replaced by `publicModel`. Streams pass through
   * event by event with backpressure; if `signal` aborts or `res` closes early
   * (the client went away), the upstream request is aborted too.
   * Upstream HTTP errors pass through with their status and body (a body that
   * is not JSON is wrapped in OpenAI's error shape, code `upstream_error`); an
   * unreachable upstream gives 502 `upstream_unreachable`, no headers within
   * requestTimeoutMs 504 `upstream_timeout`, an answer over MAX_JSON_BYTES 502
   * `upstream_response_too_large`. Returns the status sent (499 when the client
   * left before any was) and whether the answer was streamed.
   */
  async forward (path: '/v1/chat/completions' | '/v1/completions', body: Record<string, unknown>, publicModel: string, res: ResponseSink, signal?: AbortSignal, headers: Record<string, string> = {}): Promise<{ status: number, streamed: boolean }> {
    const upstream = new AbortController()
    const onClientGone = (): void => { upstream.abort(new Error('client went away')) }
    const onClose = (): void => { if (!res.writableFinished) onClientGone() }
    res.on('close', onClose)
    if (signal != null) {
      if (signal.aborted) onClientGone()
      else signal.addEventListener('abort', onClientGone, { once: true })
    }
    const clientGone = (): boolean => upstream.signal.aborted && !timedOut
    let timedOut = false
    const timer = setTimeout(() => { timedOut = true; upstream.abort(new Error('upstream timeout')) }, this.requestTimeoutMs)
    try {
      const stream = body.stream === true
      let up: Response
      try {
        up = await fetch(this.base + path, {
          method: 'POST',
          headers: this.headers(true, stream ? 'text/event-stream' : 'application/json'),
          body: JSON.stringify({ ...body, model: this.target.model }),
          signal: upstream.signal
        })
      } catch (err) {
        if (clientGone()) return gone(res)
        if (timedOut) {
          sendError(res, headers, 504, `the external system at ${this.base} did not answer within ${this.requestTimeoutMs} ms`, 'upstream_timeout')
          return { status: 504, streamed: false }
        }
        sendError(res, headers, 502, `cannot reach the external system at ${this.base}: ${describe(err)}`, 'upstream_unreachable')
        return { status: 502, streamed: false }
      } finally {
        clearTimeout(timer)
      }
      const contentType = up.headers.get('content-type') ?? 'application/json'
      const ok = up.status >= 200 && up.status < 300
      if (ok && /^text\/event-stream/i.test(contentType)) {
        await this.pipeEvents(up, contentType, publicModel, res, headers, clientGone)
        return { status: up.status, streamed: true }
      }
      return await this.relayWhole(up, contentType, ok, publicModel, res, headers, clientGone)
    } finally {
      clearTimeout(timer)
      res.off('close', onClose)
      signal?.removeEventListener('abort', onClientGone)
    }
  }

  /** A non-streamed answer: read (bounded), `model` rewritten, written whole. */
  private async relayWhole (up: Response, contentType: string, ok: boolean, publicModel: string, res: ResponseSink, headers: Record<string, string>, clientGone: () => boolean): Promise<{ status: number, streamed: boolean }> {
    const declared = Number(up.headers.get('content-length') ?? NaN)
    let text: string
    try {
      if (declared > MAX_JSON_BYTES) {
        await up.body?.cancel().catch(() => {})
        throw new TooLarge()
      }
      text = await readBounded(up.body, MAX_JSON_BYTES)
    } catch (err) {
      if (clientGone()) return gone(res)
      if (err instanceof TooLarge) {
        sendError(res, headers, 502, `the external system's answer is larger than ${MAX_JSON_BYTES} bytes`, 'upstream_response_too_large')
      } else {
        sendError(res, headers, 502, `the external system at ${this.base} broke off its answer: ${describe(err)}`, 'upstream_unreachable')
      }
      return { status: 502, streamed: false }
    }
    let parsed: unknown
    let isJson = true
    try { parsed = JSON.parse(text) } catch { isJson = false }
    if (!ok) {
      if (isJson) writeWhole(res, up.status, headers, text, contentType)
      else sendError(res, headers, up.status, `the external system answered ${up.status}${text.trim() !== '' ? `: ${text.trim().slice(0, 500)}` : ''}`, 'upstream_error')
      return { status: up.status, streamed: false }
    }
    if (!isJson) {
      sendError(res, headers, 502, `the external system answered ${up.status} with a body that is not JSON (content-type ${contentType})`, 'upstream_invalid_response')
      return { status: 502, streamed: false }
    }
    const rewritten = withModel(parsed, publicModel)
    writeWhole(res, up.status, headers, rewritten == null ? text : JSON.stringify(rewritten), contentType)
    return { status: up.status, streamed: false }
  }

  /** A streamed answer: SSE events forwarded one by one as they arrive, each rewritten. */
  private async pipeEvents (up: Response, contentType: string, publicModel: string, res: ResponseSink, headers: Record<string, string>, clientGone: () => boolean): Promise<void> {
    if (res.destroyed) { await up.body?.cancel().catch(() => {}); return }
    const sse = new SseWriter(res, { status: up.status, headers: { ...headers, 'content-type': contentType } })
    const write = async (frame: string): Promise<void> => { await sse.sendFrame(frame) }
    if (up.body == null) { sse.end(); return }
    const reader = up.body.getReader()
    const decoder = new TextDecoder('utf-8')
    let partial = '' // the unfinished last line
    let event: string[] = [] // complete lines of the unfinished event
    let eventChars = 0
    try {
      for (;;) {
        const { done, value } = await reader.read()
        if (done) break
        const text = partial + decoder.decode(value, { stream: true })
        const lines = text.split('\n')
        partial = lines.pop() ?? ''
        for (const raw of lines) {
          const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw
          if (line === '') {
            if (event.length > 0) await write(rewriteEvent(event, publicModel))
            event = []
            eventChars = 0
            if (res.destroyed) break
          } else {
            event.push(line)
            eventChars += line.length
          }
        }
        if (res.destroyed) break
        if (eventChars + partial.length > MAX_EVENT_CHARS) {
          await reader.cancel().catch(() => {})
          await sse.send(openAIErrorBody(502, `an event from the external system is larger than ${MAX_EVENT_CHARS} characters`, 'upstream_event_too_large'))
          return
        }
      }
      const rest = partial + decoder.decode()
      if (rest !== '') event.push(rest.endsWith('\r') ? rest.slice(0, -1) : rest)
      if (event.length > 0) await write(rewriteEvent(event, publicModel))
    } catch (err) {
      if (!clientGone()) {
        await sse.send(openAIErrorBody(502, `the external system at ${this.base} broke off its stream: ${describe(err)}`, 'upstream_unreachable'))
      }
    } finally {
      if (res.destroyed) await reader.cancel().catch(() => {})
      sse.end()
    }
  }
}
