import { randomBytes } from 'node:crypto'
import { TokenStream } from '../executor/token-stream.ts'
import type { PipelineClient, RouteHop, StageLink } from './pipeline.ts'
import type { GenerateParams, Generation, GenerationResult } from '../executor/engine.ts'
import { PREFILL_CHUNK } from '../executor/prefill.ts'
import type { StageSampling } from '../executor/stage-protocol.ts'
import { JsonConstraint, grammarFor, maskCount, vocabFor } from '../executor/json-constraint.ts'
import { DEFAULT_MIGRATION_SETTINGS } from '../request-migration.ts'
import type { MigrationSettings } from '../request-migration.ts'

/** Where a driver gets its routes: one ready instance per stage now (null: a stage has none). */
export interface RouteSource {
  route: () => RouteHop[] | null
  /** a peer found dead after a failed step: route() skips it for a while */
  markFailure?: (peer: string) => void
}

/**
 * Stage migration (issue 13): when a step fails under a sequence (a stage's host died, a stream
 * broke), the driver waits for a route whose stages are all ready again — the replacement of a lost
 * stage once its owner has placed it — and replays prompt + the tokens generated so far through it
 * as a new sequence, then goes on. Bounded by `max` replays and a replay length of `maxTokens`.
 */
export interface MigrationLimits extends MigrationSettings {
  /** each migration: resumed (a new route was found), failed (gave up: limit, no route) */
  onMigration?: (result: 'resumed' | 'failed', detail: { error: string, generated: number }) => void
}

/** A failure that replaying cannot fix (the request's own: its JSON constraint). */
class RequestFault extends Error {}


/**
 * Runs a generation across the stages of a vDAG: one link chain per
 * sequence (local stages in-process, remote ones over the tensor protocol),
 * one step per token. Presents the same Generation interface as a local
 * engine, so the OpenAI routes serve a vDAG like any model.
 *
 * Penalties and logprobs are computed where the token is sampled, in the last stage's worker (the
 * sampling settings travel with the route; the prompt too when the repetition penalty needs it).
 * Constrained decoding runs here: each step's allowed tokens go to the last stage as a bitset.
 *
 * A step that fails under the sequence is resumed on a fresh route (see MigrationLimits): a new
 * sequence id, prompt + generated tokens prefilled from position 0 (pastLen 0 on every stage, so
 * the replacement's positions start where the tokens do), the same step numbering, and the
 * generated tokens passed to the last stage as `history` so its penalties and seeded generator
 * continue as if nothing had happened. The JSON constraint lives here and simply carries on.
 * A generation handed over from elsewhere (`params.resumed`: a driver on another agent was lost, see
 * agent/serving/backend.ts) starts the same way, as a replay on a route whose peers answer.
 */
export class VdagDriver {
  readonly provider = { name: 'vdag' }
  private readonly pipeline: PipelineClient
  private readonly routes: RouteSource
  private readonly limits: MigrationLimits
  private readonly log: ((obj: object, msg: string) => void) | undefined

  constructor (pipeline: PipelineClient, routes: RouteSource | (() => RouteHop[]), limits: Partial<MigrationLimits> = {}, log?: (obj: object, msg: string) => void) {
    this.pipeline = pipeline
    this.routes = typeof routes === 'function' ? { route: routes } : routes
    this.limits = { ...DEFAULT_MIGRATION_SETTINGS, ...limits }
    this.log = log
  }

  generate (params: GenerateParams, opts: { returnLogits?: boolean, onLogits?: (step: number, logits: Float32Array) => void } = {}): Generation {
    const abort = new AbortController()
    const stream = new TokenStream()
    const end = (r: GenerationResult): void => { stream.end(r) }
    const stop = new Set(params.stopTokens)
    // a resumed generation (request migration onto this driver): the prompt's last `resumed` tokens were
    // generated before, elsewhere; they are replayed like the driver's own migrations replay its tokens
    const k = params.resumed ?? 0
    const kOk = Number.isInteger(k) && k >= 0 && k <= params.prompt.length
    const prompt = kOk && k > 0 ? params.prompt.slice(0, params.prompt.length - k) : params.prompt
    const sampling: StageSampling = { temperature: params.temperature, topP: params.topP, seed: params.seed >>> 0 }
    if (params.presencePenalty != null && params.presencePenalty !== 0) sampling.presencePenalty = params.presencePenalty
    if (params.frequencyPenalty != null && params.frequencyPenalty !== 0) sampling.frequencyPenalty = params.frequencyPenalty
    if (params.repetitionPenalty != null && params.repetitionPenalty !== 1) { sampling.repetitionPenalty = params.repetitionPenalty; sampling.prompt = prompt }
    if (params.topLogprobs != null) sampling.topLogprobs = params.topLogprobs
    void (async () => {
      /** tokens generated so far (the stop token excluded), in every route this sequence took; the first k before it came here */
      const generated: number[] = params.prompt.slice(prompt.length)
      const result = (r: Omit<GenerationResult, 'promptTokens' | 'completionTokens'>): GenerationResult => ({ promptTokens: params.prompt.length, completionTokens: generated.length - (kOk ? k : 0), ...r })
      let constraint: JsonConstraint | null = null
      try {
        if (!kOk) throw new Error(`resumed (${k}) must be a count of the prompt's last tokens`)
        const c = params.constraint
        if (c != null) {
          const texts = c.vocab.texts
          constraint = new JsonConstraint(grammarFor(c.vocab.key, c.grammarKey, c.grammar), vocabFor(c.vocab.key, () => { if (texts == null) throw new Error(`vocabulary ${c.vocab.key} has no texts`); return texts }, c.vocab.size), params.stopTokens)
          for (const t of generated) if (!constraint.accept(t)) throw new Error(`constrained decoding: resumed token ${t} does not continue the JSON`)
        }
      } catch (err) {
        end(result({ reason: 'error', error: (err as Error).message }))
        return
      }
      // a resumed generation comes from a driver or host that was lost: its route is looked for as after a
      // failed step here (peers that do not answer skipped, waiting for a replacement within waitMs)
      let route: RouteHop[] | null
      try {
        route = k > 0 ? await this.reroute([], abort.signal) : this.routes.route()
      } catch {
        end(result({ reason: 'cancelled' }))
        return
      }
      if (route == null) { end(result({ reason: 'error', error: 'a stage of the vDAG has no ready instance', code: 'model_not_ready' })); return }
      let migrations = 0
      for (;;) {
        const seq = randomBytes(8).toString('hex')
        let link: StageLink | undefined
        try {
          const resumed = generated.length > 0
          link = this.pipeline.open(route, seq, { sampling: resumed ? { ...sampling, history: [...generated] } : sampling, returnLogits: opts.returnLogits === true })
          // a replay starts a new sequence: everything from position 0
          let tokens = resumed ? [...prompt, ...generated] : prompt
          let pastLen = 0
          while (tokens.length > PREFILL_CHUNK) {
            const chunk = tokens.slice(0, PREFILL_CHUNK)
            await link.step({ step: generated.length, pastLen, tokens: chunk, seqLen: chunk.length, sample: false }, abort.signal)
            pastLen += chunk.length
            tokens = tokens.slice(PREFILL_CHUNK)
          }
          for (;;) {
            const step = generated.length
            const mask = constraint?.allowed(params.maxTokens - (generated.length - k))
            if (mask != null && maskCount(mask) === 0) throw new RequestFault('constrained decoding: no token of this vocabulary can continue the JSON')
            const out = await link.step({ step, pastLen, tokens, seqLen: tokens.length, mask }, abort.signal)
            if (out.logits != null) opts.onLogits?.(step, out.logits)
            pastLen += tokens.length
            if (stop.has(out.token)) { end(result({ reason: 'stop' })); return }
            if (constraint != null && !constraint.accept(out.token)) throw new RequestFault(`constrained decoding: the last stage picked token ${out.token}, which does not continue the JSON`)
            generated.push(out.token)
            stream.push(out.token, out.logprob)
            if (constraint?.done === true) { end(result({ reason: 'stop' })); return }
            if (generated.length - k >= params.maxTokens) { end(result({ reason: 'length' })); return }
            tokens = [out.token]
          }
        } catch (err) {
          if (abort.signal.aborted) { end(result({ reason: 'cancelled' })); return }
          const error = (err as Error).message
          if (err instanceof RequestFault) { end(result({ reason: 'error', error })); return }
          const fail = (message: string, code: string): void => {
            this.limits.onMigration?.('failed', { error, generated: generated.length })
            end(result({ reason: 'error', error: message, code }))
          }
          if (migrations >= this.limits.max) { fail(`a stage failed (${error}) and the request was already migrated ${migrations} time(s), the limit`, 'migration_limit'); return }
          const length = prompt.length + generated.length
          if (length > this.limits.maxTokens) { fail(`a stage failed (${error}); replaying ${length} tokens is over the migration cap of ${this.limits.maxTokens}`, 'migration_limit'); return }
          this.log?.({ route: route.map(h => `${h.block}@${h.peer}`), generated: generated.length, err: error }, 'vDAG step failed; waiting for a route to resume the sequence on')
          let next: RouteHop[] | null
          try {
            next = await this.reroute(route, abort.signal)
          } catch {
            end(result({ reason: 'cancelled' }))
            return
          }
          if (next == null) { fail(`a stage failed (${error}) and no route with every stage ready came up within ${Math.round(this.limits.waitMs / 1000)} s`, 'migration_failed'); return }
          migrations++
          this.limits.onMigration?.('resumed', { error, generated: generated.length })
          this.log?.({ route: next.map(h => `${h.block}@${h.peer}`), replay: prompt.length + generated.length, migration: migrations }, 'vDAG sequence resumed on a new route')
          route = next
        } finally {
          link?.close()
        }
      }
    })()
    return stream.generation(() => { abort.abort() })
  }

  /**
   * A route to resume on, within waitMs: the failed route's peers that do not answer a ping are
   * reported to the route source (so the router skips them until gossip expires them and their
   * stage's owner places a replacement), then routes are asked for until one has every stage ready
   * with each remote peer answering. The very route that failed is taken again only when nothing
   * in it was found dead and a couple of seconds have passed (a transient failure).
   */
  private async reroute (failed: RouteHop[], signal: AbortSignal): Promise<RouteHop[] | null> {
    const start = Date.now()
    const deadline = start + this.limits.waitMs
    const self = this.pipeline.self
    const same = (r: RouteHop[]): boolean => r.length === failed.length && r.every((h, i) => h.peer === failed[i].peer && h.block === failed[i].block)
    let foundDead = false
    for (const dead of await this.deadPeers(failed.map(h => h.peer).filter(p => p !== self), signal)) {
      foundDead = true
      this.routes.markFailure?.(dead)
    }
    // at least one look, even with no time to wait
    for (let first = true; first || Date.now() < deadline; first = false) {
      signal.throwIfAborted()
      const r = this.routes.route()
      if (r != null && (!same(r) || (!foundDead && Date.now() - start >= 2000))) {
        const dead = await this.deadPeers(r.map(h => h.peer).filter(p => p !== self), signal)
        if (dead.length === 0) return r
        for (const p of dead) this.routes.markFailure?.(p)
      }
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => { signal.removeEventListener('abort', onAbort); resolve() }, 250)
        const onAbort = (): void => { clearTimeout(t); reject(signal.reason) }
        signal.addEventListener('abort', onAbort, { once: true })
      })
    }
    return null
  }

  /** The peers among `peers` that do not answer a libp2p ping within 2 s. */
  private async deadPeers (peers: string[], signal: AbortSignal): Promise<string[]> {
    const unique = [...new Set(peers)]
    const alive = await Promise.all(unique.map(async p => await this.pipeline.alive(p, 2000, signal)))
    signal.throwIfAborted()
    return unique.filter((_, i) => !alive[i])
  }
}
