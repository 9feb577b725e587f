import type { TextTokenizer } from '../model/tokenizer.ts'
import type { TokenInfo } from './generate.ts'

const utf8 = (s: string): number[] => Array.from(Buffer.from(s, 'utf8'))

/** Chat logprobs: { content: [{ token, logprob, bytes, top_logprobs: [{ token, logprob, bytes }] }], refusal: null } */
export function chatLogprobs (tokenizer: TextTokenizer, tokens: TokenInfo[]): object {
  return {
    content: tokens.map(t => {
      const text = tokenizer.tokenText(t.id)
      return {
        token: text,
        logprob: t.logprob,
        bytes: utf8(text),
        top_logprobs: t.top.map(([id, logprob]) => { const alt = tokenizer.tokenText(id); return { token: alt, logprob, bytes: utf8(alt) } })
      }
    }),
    refusal: null
  }
}

/**
 * Completions logprobs: { tokens, token_logprobs, top_logprobs ({ token: logprob } maps, the sampled
 * token always in them), text_offset (from the start of the prompt) }. `offset` is where the first token starts.
 */
export function completionLogprobs (tokenizer: TextTokenizer, tokens: TokenInfo[], offset: number): { tokens: string[], token_logprobs: number[], top_logprobs: Array<Record<string, number>>, text_offset: number[] } {
  const out = { tokens: [] as string[], token_logprobs: [] as number[], top_logprobs: [] as Array<Record<string, number>>, text_offset: [] as number[] }
  for (const t of tokens) {
    const text = tokenizer.tokenText(t.id)
    const top = Object.create(null) as Record<string, number>
    for (const [id, logprob] of t.top) { const alt = tokenizer.tokenText(id); if (!(alt in top)) top[alt] = logprob }
    if (!(text in top)) top[text] = t.logprob
    out.tokens.push(text)
    out.token_logprobs.push(t.logprob)
    out.top_logprobs.push(top)
    out.text_offset.push(offset)
    offset += text.length
  }
  return out
}

