import { errorOf, headersFor } from './api.ts'
import { SseSplitter } from './sse.ts'

export interface ChatMessage { role: 'system' | 'user' | 'assistant', content: string }

export interface StreamStats {
  /** ms from sending to the first content token */
  ttftMs: number | null
  /** completion tokens (the server's usage count when it sends one) */
  tokens: number
  /** tokens per second after the first one */
  tokensPerSecond: number | null
  finishReason: string | null
  /** stream events that carried content (more than one: the answer came streamed) */
  chunks: number
}

/**
 * Streams a chat completion from the agent's OpenAI-compatible API
 * (POST /v1/chat/completions, stream: true), calling onDelta per content
 * piece; measures time to first token and tokens/s in the page.
 */
export async function streamChat (
  body: { model: string, messages: ChatMessage[], max_tokens?: number, temperature?: number },
  onDelta: (text: string, stats: StreamStats) => void,
  signal?: AbortSignal
): Promise<StreamStats> {
  const started = performance.now()
  const res = await fetch('/v1/chat/completions', {
    method: 'POST',
    headers: { ...headersFor('POST', true), accept: 'text/event-stream' },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
    signal,
    credentials: 'omit',
    cache: 'no-store'
  })
  if (!res.ok || res.body == null) {
    const text = await res.text()
    let parsed: unknown = text
    try { parsed = JSON.parse(text) } catch { /* not JSON */ }
    throw errorOf(res.status, parsed)
  }
  const stats: StreamStats = { ttftMs: null, tokens: 0, tokensPerSecond: null, finishReason: null, chunks: 0 }
  let first = 0
  let usageTokens: number | null = null
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
  const events = new SseSplitter()
  try {
    for (;;) {
      const { value, done } = await reader.read()
      if (done) break
      for (const data of events.push(value)) {
        if (data.trim() === '[DONE]') continue
        let chunk: any
        try { chunk = JSON.parse(data) } catch { continue }
        if (chunk?.error != null) throw errorOf(500, chunk)
        if (typeof chunk?.usage?.completion_tokens === 'number') usageTokens = chunk.usage.completion_tokens
        const choice = chunk?.choices?.[0]
        if (choice?.finish_reason != null) stats.finishReason = choice.finish_reason
        const text: unknown = choice?.delta?.content
        if (typeof text !== 'string' || text === '') continue
        const now = performance.now()
        if (stats.ttftMs == null) { stats.ttftMs = now - started; first = now }
        stats.tokens++
        stats.chunks++
        const secs = (now - first) / 1000
        stats.tokensPerSecond = stats.tokens > 1 && secs > 0 ? (stats.tokens - 1) / secs : null
        onDelta(text, { ...stats })
      }
    }
  } finally {
    // stops the download when the loop ends early (an error event, a bad frame)
    void reader.cancel().catch(() => {})
  }
  if (usageTokens != null) {
    const secs = (performance.now() - (first || started)) / 1000
    stats.tokens = usageTokens
    stats.tokensPerSecond = usageTokens > 1 && secs > 0 ? (usageTokens - 1) / secs : stats.tokensPerSecond
  }
  return stats
}
