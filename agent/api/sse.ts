import type { FastifyReply, FastifyRequest } from 'fastify'
import { SseWriter } from '../http/sse.ts'
import type { SseWriterOptions } from '../http/sse.ts'

/**
 * Fastify's side of server-sent events: the reply is taken from Fastify (hijacked) and the stream is
 * written with the serving layer's SseWriter (agent/serving/sse.ts), the one writer every event stream
 * of the agent uses.
 */
export function eventStream (reply: FastifyReply, opts: SseWriterOptions = {}): SseWriter {
  reply.hijack()
  return new SseWriter(reply.raw, opts)
}

/** Aborts when the client goes away before the response is complete. */
export function clientGone (req: FastifyRequest, reply: FastifyReply): AbortController {
  const ac = new AbortController()
  reply.raw.on('close', () => { if (!reply.raw.writableFinished) ac.abort() })
  req.raw.on('aborted', () => { ac.abort() })
  return ac
}
