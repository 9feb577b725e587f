/**
 * A model's text side in one file — the "tokenizer bundle": its `tokenizer.json`, the config facts
 * (BOS/EOS, whether BOS is added), every stop id and its chat template. Built once when a model is
 * added (from a GGUF's vocabulary or an HF export's files), then materialised like a model file by
 * whichever agent tokenizes for the model (a block's host or a vDAG's driver).
 *
 * Runtime: `@huggingface/tokenizers` for encode/decode, `@huggingface/jinja` for the chat template.
 */
import { readFile, stat } from 'node:fs/promises'
import { Tokenizer } from '@huggingface/tokenizers'
import { Template } from '@huggingface/jinja'
import { z } from 'zod'
import { AgentError } from '../../errors.ts'
import type { ChatMessage, TextTokenizer } from '../tokenizer.ts'

export const BUNDLE_FORMAT = 'blockmesh-tokenizer/1'
export const MAX_BUNDLE_BYTES = 64 * 1024 * 1024

export const TokenizerBundleSchema = z.object({
  format: z.literal(BUNDLE_FORMAT),
  tokenizer: z.record(z.string(), z.unknown()),
  config: z.record(z.string(), z.unknown()),
  bosId: z.number().int().min(0).nullable(),
  eosIds: z.array(z.number().int().min(0)).max(64),
  addBos: z.boolean(),
  chatTemplate: z.string().max(1_000_000).nullable()
}).strict()
export type TokenizerBundle = z.output<typeof TokenizerBundleSchema>

/** A tokenizer or chat template that cannot be used; `reason` says which part failed. */
export class TokenizerError extends AgentError {
  readonly reason: 'unreadable' | 'invalid_tokenizer' | 'invalid_template' | 'template_failed'
  constructor (reason: TokenizerError['reason'], message: string, options?: ErrorOptions) {
    super(message, reason === 'template_failed' ? 'chat_template_failed' : 'invalid_tokenizer', reason === 'template_failed' ? 400 : 422, { reason }, options)
    this.name = 'TokenizerError'
    this.reason = reason
  }
}

/**
 * The chat format for models without a template of their own (documented in the README): one
 * "role: content" line per message, then "assistant:".
 */
export function fallbackChat (messages: ChatMessage[]): string {
  return messages.map(m => `${m.role}: ${m.content}\n`).join('') + 'assistant:'
}

export class HfTextTokenizer implements TextTokenizer {
  readonly eosIds: number[]
  readonly bosId: number | null
  readonly hasChatTemplate: boolean
  readonly vocabSize: number
  private readonly tok: Tokenizer
  private readonly template: Template | null
  private readonly addBos: boolean
  private readonly special: Record<string, string>

  constructor (bundle: TokenizerBundle) {
    try {
      this.tok = new Tokenizer(bundle.tokenizer, bundle.config)
      this.tok.encode('a') // some tokenizer.json errors surface only on first use
    } catch (err) {
      throw new TokenizerError('invalid_tokenizer', `the tokenizer cannot be built: ${(err as Error).message}`, { cause: err })
    }
    this.eosIds = bundle.eosIds
    this.bosId = bundle.bosId
    this.addBos = bundle.addBos
    this.vocabSize = this.tok.get_vocab(true).size
    const name = (id: number | null | undefined): string => id == null ? '' : this.tok.id_to_token(id) ?? ''
    this.special = { bos_token: name(bundle.bosId), eos_token: name(bundle.eosIds[0]) }
    try {
      this.template = bundle.chatTemplate != null ? new Template(bundle.chatTemplate) : null
    } catch (err) {
      throw new TokenizerError('invalid_template', `the chat template does not parse: ${(err as Error).message}`, { cause: err })
    }
    this.hasChatTemplate = this.template != null
    // a template that cannot render the simplest conversation fails at load, not on the first request
    this.renderChat([{ role: 'user', content: 'Hello' }], 'invalid_template')
  }

  encode (text: string, opts: { bos?: boolean } = {}): number[] {
    const ids = this.tok.encode(text, { add_special_tokens: false }).ids
    if (opts.bos === true && this.addBos && this.bosId != null && ids[0] !== this.bosId) ids.unshift(this.bosId)
    return ids
  }

  decode (ids: number[]): string {
    return ids.length === 0 ? '' : this.tok.decode(ids, { skip_special_tokens: true })
  }

  /** The token's own text (special tokens included), e.g. for logprobs. */
  tokenText (id: number): string {
    return this.tok.decode([id], { skip_special_tokens: false })
  }

  /**
   * Incremental decoding: text is released only once it no longer ends in an incomplete character
   * (a split UTF-8 sequence or byte-fallback run decodes to U+FFFD until its last byte arrives), and each
   * delta is decoded with the tokens before it as context (so SentencePiece's leading-space rules hold).
   */
  decoder (): { push: (token: number) => string, end: () => string } {
    const ids: number[] = []
    let prefix = 0
    let read = 0
    const delta = (final: boolean): string => {
      const before = this.decode(ids.slice(prefix, read))
      const now = this.decode(ids.slice(prefix))
      if (now.length <= before.length || (!final && now.endsWith('\uFFFD'))) return ''
      prefix = read
      read = ids.length
      return now.slice(before.length)
    }
    return {
      push: (token: number) => { ids.push(token); return delta(false) },
      end: () => delta(true)
    }
  }

  renderChat (messages: ChatMessage[], failAs: 'template_failed' | 'invalid_template' = 'template_failed'): string {
    if (this.template == null) return fallbackChat(messages)
    try {
      return this.template.render({ messages, add_generation_prompt: true, ...this.special })
    } catch (err) {
      throw new TokenizerError(failAs, `the model's chat template failed: ${(err as Error).message}`, { cause: err })
    }
  }

  chatPrompt (messages: ChatMessage[]): number[] {
    return this.encode(this.renderChat(messages), { bos: true })
  }
}

/** Reads and checks a bundle file (bounded), and builds its tokenizer. */
export async function loadTokenizerBundle (path: string): Promise<HfTextTokenizer> {
  let text: string
  try {
    const st = await stat(path)
    if (st.size > MAX_BUNDLE_BYTES) throw new TokenizerError('unreadable', `tokenizer file ${path} is ${st.size} bytes (limit ${MAX_BUNDLE_BYTES})`)
    text = await readFile(path, 'utf8')
  } catch (err) {
    if (err instanceof TokenizerError) throw err
    throw new TokenizerError('unreadable', `tokenizer file ${path} cannot be read: ${(err as Error).message}`, { cause: err })
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (err) {
    throw new TokenizerError('invalid_tokenizer', `tokenizer file ${path} is not JSON: ${(err as Error).message}`, { cause: err })
  }
  const parsed = TokenizerBundleSchema.safeParse(json)
  if (!parsed.success) throw new TokenizerError('invalid_tokenizer', `tokenizer file ${path}: ${parsed.error.issues.map(i => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`)
  return new HfTextTokenizer(parsed.data)
}
