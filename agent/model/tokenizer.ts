import { BOS, EOS, PAD } from './spec.ts'

export interface ChatMessage { role: string, content: string }

/**
 * Byte-level tokenizer: every UTF-8 byte is a token (0-255), plus BOS, EOS
 * and PAD. Decoding is incremental so multi-byte characters split across
 * tokens come out whole.
 */
export class ByteTokenizer {
  readonly bos = BOS
  readonly eos = EOS
  readonly pad = PAD
  private readonly encoder = new TextEncoder()

  encode (text: string, opts: { bos?: boolean } = {}): number[] {
    const bytes = this.encoder.encode(text)
    const out = opts.bos === true ? [BOS] : []
    for (const b of bytes) out.push(b)
    return out
  }

  /** A decoder for one sequence: feed tokens, get text as soon as it is whole. */
  decoder (): { push: (token: number) => string, end: () => string } {
    const dec = new TextDecoder('utf-8', { fatal: false })
    return {
      push: (token: number) => token < 256 ? dec.decode(new Uint8Array([token]), { stream: true }) : '',
      end: () => dec.decode()
    }
  }

  decode (tokens: number[]): string {
    return new TextDecoder().decode(new Uint8Array(tokens.filter(t => t < 256)))
  }

  /** The chat prompt: one "role: content" line per message, then "assistant:". */
  chatPrompt (messages: ChatMessage[]): number[] {
    const text = messages.map(m => `${m.role}: ${m.content}\n`).join('') + 'assistant:'
    return this.encode(text, { bos: true })
  }
}
