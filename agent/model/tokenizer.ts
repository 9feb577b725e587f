import { BOS, EOS, PAD } from './spec.ts'

export interface ChatMessage { role: string, content: string }

/** What serving needs of a tokenizer: the byte tokenizer of generated models, or a real model's (tokenizers/bundle.ts). */
export interface TextTokenizer {
  /** tokens that end a generation (not emitted) */
  readonly eosIds: number[]
  readonly vocabSize: number
  readonly hasChatTemplate: boolean
  /** `bos`: add the BOS token where the model wants one */
  encode: (text: string, opts?: { bos?: boolean }) => number[]
  decode: (ids: number[]) => string
  /** the token's own text (for logprobs) */
  tokenText: (id: number) => string
  decoder: () => { push: (token: number) => string, end: () => string }
  chatPrompt: (messages: ChatMessage[]) => number[]
}

/**
 * Byte-level tokenizer: every UTF-8 byte is a token (0-255), plus BOS, EOS
 * and PAD. Decoding is incremental so multi-byte characters split across
 * tokens come out whole.
 */
export class ByteTokenizer implements TextTokenizer {
  readonly bos = BOS
  readonly eos = EOS
  readonly pad = PAD
  readonly eosIds = [EOS]
  readonly vocabSize = 259
  readonly hasChatTemplate = false
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

  tokenText (id: number): string {
    return id < 256 ? String.fromCharCode(id) : id === BOS ? '<bos>' : id === EOS ? '<eos>' : id === PAD ? '<pad>' : ''
  }

  /** The chat prompt: one "role: content" line per message, then "assistant:". */
  chatPrompt (messages: ChatMessage[]): number[] {
    const text = messages.map(m => `${m.role}: ${m.content}\n`).join('') + 'assistant:'
    return this.encode(text, { bos: true })
  }
}
