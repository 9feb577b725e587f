import type { GenerateParams, Generation, GenerationResult } from '../executor/engine.ts'
import { TokenStream } from '../executor/token-stream.ts'
import type { TokenSource } from '../openai/generate.ts'
import { GenerateError } from './generate-service.ts'
import type { GenerateService } from './generate-service.ts'

/**
 * A block instance on a peer as a TokenSource: generate() runs the parameters there over
 * /blockmesh/generate/1.0.0 and hands out the token ids as they arrive, so the OpenAI layer on this
 * agent (tokenizer, chat template, stop strings, SSE) serves it exactly like a local engine.
 *
 * A generation that ends because the peer, its instance or the stream to it went away ends with
 * reason 'error' and `lost: true` (so MigratingSource can resume it elsewhere); a request the peer
 * refuses as malformed ends with reason 'error' and no `lost`.
 */
export class RemoteEngine implements TokenSource {
  readonly provider: { name: string }
  readonly peer: string
  readonly block: string
  private readonly service: Pick<GenerateService, 'generate'>
  /** the client's session key, for a host that routes further (a vDAG's driver) */
  private readonly session: string | undefined

  constructor (service: Pick<GenerateService, 'generate'>, peer: string, block: string, provider = 'remote', session?: string) {
    this.service = service
    this.peer = peer
    this.block = block
    this.provider = { name: provider }
    this.session = session
  }

  generate (params: GenerateParams): Generation {
    const abort = new AbortController()
    const stream = new TokenStream()
    let received = 0
    const end = (r: Omit<GenerationResult, 'promptTokens' | 'completionTokens'> & { completionTokens?: number }): void => {
      stream.end({ promptTokens: params.prompt.length, completionTokens: r.completionTokens ?? received, ...r })
    }
    void (async () => {
      try {
        const g = await this.service.generate(this.peer, this.block, params, { signal: abort.signal, ...(this.session != null ? { session: this.session } : {}) })
        let final: { reason: GenerationResult['reason'], completionTokens: number, error?: string, lost?: boolean, code?: string } | null = null
        for await (const f of g.frames) {
          if (f.t === 'done') { final = f; continue } // the frames end right after it, closing the stream cleanly
          f.ids.forEach((id, i) => { stream.push(id, f.logprobs?.[i]) })
          received += f.ids.length
        }
        if (abort.signal.aborted) { end({ reason: 'cancelled' }); return }
        if (final == null) { end({ reason: 'error', error: `${this.peer} ended the generation without a result`, lost: true }); return }
        // the host unloading the instance cancels its sequences: from here, the instance is lost
        if (final.reason === 'cancelled') { end({ reason: 'error', error: `the instance on ${this.peer} stopped the sequence (unloaded)`, lost: true }); return }
        end(final.reason === 'error'
          ? { reason: 'error', error: final.error ?? 'generation failed on the peer', ...(final.lost === true ? { lost: true } : {}), ...(final.code != null ? { code: final.code } : {}) }
          : { reason: final.reason, completionTokens: Math.max(received, final.completionTokens) })
      } catch (err) {
        if (abort.signal.aborted) { end({ reason: 'cancelled' }); return }
        const e = err as Error
        end({ reason: 'error', error: e.message, lost: e instanceof GenerateError ? e.lost : true, ...(e instanceof GenerateError && !e.lost ? { code: 'invalid_request' } : {}) })
      }
    })()
    return stream.generation(() => { abort.abort() })
  }
}
