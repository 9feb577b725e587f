import type { GenerateParams, Generation, GenerationResult } from '../executor/engine.ts'
import { TokenStream } from '../executor/token-stream.ts'
import type { TokenSource } from '../openai/generate.ts'
import { DEFAULT_MIGRATION_SETTINGS } from '../request-migration.ts'
import type { MigrationSettings } from '../request-migration.ts'

/** One block instance a request can run on: where it is, and its token source. */
export interface InstanceChoice {
  source: TokenSource
  /** the peer running it (this agent's own peer id for a local instance) */
  peer: string
  instance: string
}

export { DEFAULT_MIGRATION_SETTINGS }
export type { MigrationSettings }

export interface MigratingInit {
  first: InstanceChoice
  /**
   * Another ready instance of the same block for a generation whose instance `failed` was lost:
   * waits (bounded) for one to appear; null when none did. Aborted with the request.
   */
  next: (failed: InstanceChoice, signal: AbortSignal) => Promise<InstanceChoice | null>
  limits: Pick<MigrationSettings, 'max' | 'maxTokens'>
  /** each migration: resumed (went on elsewhere) or failed (gave up: over a limit, no instance) */
  onMigration?: (result: 'resumed' | 'failed', detail: { from: InstanceChoice, to?: InstanceChoice, generated: number, error: string }) => void
  provider?: string
}

/**
 * Request migration for block instances (issue 13): a TokenSource around the instance a request was
 * routed to. When its generation ends because the instance was lost (its worker exited, its host or
 * the stream to it is gone — `GenerationResult.lost`, or a cancellation nobody asked for) after k
 * tokens, another ready instance gets prompt + those k tokens as its prompt, `resumed: k` and
 * max_tokens − k, and its tokens go on to the same consumer: generateText and the SSE writer see one
 * uninterrupted stream. The instance counts the replayed tokens for its penalties, advances the JSON
 * constraint over them and skips their draws of the seeded generator, so greedy decoding gives the
 * same tokens as a run without failure, and so does seeded sampling (up to the replay's prefill
 * computing the same logits as the decode steps did, to rounding).
 *
 * Bounded: at most `max` migrations per generation (each of n choices counts its own), a replay of
 * at most `maxTokens` tokens, and `next`'s own wait; beyond them the generation ends with reason
 * 'error' and code migration_limit / migration_failed.
 */
export class MigratingSource implements TokenSource {
  readonly provider: { name: string }
  private readonly init: MigratingInit

  constructor (init: MigratingInit) {
    this.init = init
    this.provider = { name: init.provider ?? 'cpu' }
  }

  generate (params: GenerateParams): Generation {
    const abort = new AbortController()
    const stream = new TokenStream()
    const generated: number[] = []
    const end = (r: Omit<GenerationResult, 'promptTokens' | 'completionTokens'>): void => {
      stream.end({ ...r, promptTokens: params.prompt.length, completionTokens: generated.length })
    }
    const { limits, onMigration } = this.init
    const run = async (): Promise<void> => {
      let choice = this.init.first
      let migrations = 0
      for (;;) {
        const k = generated.length
        const p: GenerateParams = k === 0
          ? params
          : { ...params, prompt: [...params.prompt, ...generated], maxTokens: params.maxTokens - k, resumed: (params.resumed ?? 0) + k }
        let r: GenerationResult | undefined
        let g: Generation | null = null
        try {
          g = choice.source.generate(p)
        } catch (err) {
          // an engine closed under us (unloaded between the pick and now)
          r = { reason: 'error', promptTokens: p.prompt.length, completionTokens: 0, error: (err as Error).message, lost: true }
        }
        if (g != null) {
          const inner = g
          const onAbort = (): void => { inner.cancel() }
          if (abort.signal.aborted) inner.cancel()
          abort.signal.addEventListener('abort', onAbort, { once: true })
          try {
            let i = 0
            for await (const token of inner.tokens) {
              generated.push(token)
              stream.push(token, inner.logprobs[i++])
            }
            r = await inner.done
          } finally {
            abort.signal.removeEventListener('abort', onAbort)
          }
        }
        r ??= { reason: 'error', promptTokens: p.prompt.length, completionTokens: 0, error: 'the generation ended without a result', lost: true }
        if (abort.signal.aborted) { end({ reason: 'cancelled' }); return }
        const lost = (r.reason === 'error' && r.lost === true) || r.reason === 'cancelled'
        if (!lost) { end({ reason: r.reason, ...(r.error != null ? { error: r.error } : {}), ...(r.code != null ? { code: r.code } : {}) }); return }
        if (generated.length >= params.maxTokens) { end({ reason: 'length' }); return }
        const error = r.error ?? 'the instance stopped the sequence'
        const fail = (message: string, code: string): void => {
          onMigration?.('failed', { from: choice, generated: generated.length, error })
          end({ reason: 'error', error: message, code })
        }
        if (migrations >= limits.max) { fail(`instance ${choice.instance} was lost (${error}) and the request was already migrated ${migrations} time(s), the limit`, 'migration_limit'); return }
        // before the first token nothing is replayed: the next instance gets the request as it came
        const length = params.prompt.length + generated.length
        if (generated.length > 0 && length > limits.maxTokens) { fail(`instance ${choice.instance} was lost (${error}); replaying ${length} tokens is over the migration cap of ${limits.maxTokens}`, 'migration_limit'); return }
        let next: InstanceChoice | null
        try {
          next = await this.init.next(choice, abort.signal)
        } catch (err) {
          if (abort.signal.aborted) { end({ reason: 'cancelled' }); return }
          next = null
          fail(`instance ${choice.instance} was lost (${error}) and no other could be found: ${(err as Error).message}`, 'migration_failed')
          return
        }
        if (abort.signal.aborted) { end({ reason: 'cancelled' }); return }
        if (next == null) { fail(`instance ${choice.instance} was lost (${error}) and no other ready instance came up in time`, 'migration_failed'); return }
        migrations++
        onMigration?.('resumed', { from: choice, to: next, generated: generated.length, error })
        choice = next
      }
    }
    run().catch((err: Error) => { if (!stream.ended) end({ reason: 'error', error: err.message }) })
    return stream.generation(() => { abort.abort() })
  }
}
