import { randomBytes } from 'node:crypto'
import type { MeshNode } from '../../mesh/node.ts'
import { openRoute } from './links.ts'
import type { LocalStages, RouteHop } from './links.ts'
import type { GenerateParams, Generation, GenerationResult, TokenLogprob } from '../executor/engine.ts'
import type { StageSampling } from '../executor/stage-protocol.ts'
import { JsonConstraint, grammarFor, maskCount, vocabFor } from '../executor/json-constraint.ts'

/**
 * Runs a generation across the stages of a vDAG: one link chain per
 * sequence (local stages in-process, remote ones over the tensor protocol),
 * one step per token. Presents the same Generation interface as a local
 * engine, so the OpenAI routes serve a vDAG like any model.
 *
 * Penalties and logprobs are computed where the token is sampled, in the last stage's worker (the
 * sampling settings travel with the route; the prompt too when the repetition penalty needs it).
 * Constrained decoding runs here: each step's allowed tokens go to the last stage as a bitset.
 */
export class VdagDriver {
  readonly provider = { name: 'vdag' }
  private readonly node: MeshNode
  private readonly local: LocalStages
  private readonly route: () => RouteHop[]

  constructor (node: MeshNode, local: LocalStages, route: () => RouteHop[]) {
    this.node = node
    this.local = local
    this.route = route
  }

  generate (params: GenerateParams, opts: { returnLogits?: boolean, onLogits?: (step: number, logits: Float32Array) => void } = {}): Generation {
    const seq = randomBytes(8).toString('hex')
    const abort = new AbortController()
    const queue: number[] = []
    let waiter: (() => void) | null = null
    let ended = false
    let resolveDone!: (r: GenerationResult) => void
    const done = new Promise<GenerationResult>(resolve => { resolveDone = resolve })
    const push = (t: number): void => { queue.push(t); waiter?.(); waiter = null }
    const end = (r: GenerationResult): void => { ended = true; waiter?.(); waiter = null; resolveDone(r) }
    const stop = new Set(params.stopTokens)
    const logprobs: TokenLogprob[] = []
    const sampling: StageSampling = { temperature: params.temperature, topP: params.topP, seed: params.seed >>> 0 }
    if (params.presencePenalty != null && params.presencePenalty !== 0) sampling.presencePenalty = params.presencePenalty
    if (params.frequencyPenalty != null && params.frequencyPenalty !== 0) sampling.frequencyPenalty = params.frequencyPenalty
    if (params.repetitionPenalty != null && params.repetitionPenalty !== 1) { sampling.repetitionPenalty = params.repetitionPenalty; sampling.prompt = params.prompt }
    if (params.topLogprobs != null) sampling.topLogprobs = params.topLogprobs
    void (async () => {
      let generated = 0
      let link
      try {
        let constraint: JsonConstraint | null = null
        const c = params.constraint
        if (c != null) {
          const texts = c.vocab.texts
          constraint = new JsonConstraint(grammarFor(c.vocab.key, c.grammarKey, c.grammar), vocabFor(c.vocab.key, () => { if (texts == null) throw new Error(`vocabulary ${c.vocab.key} has no texts`); return texts }, c.vocab.size), params.stopTokens)
        }
        link = await openRoute(this.node, this.local, this.route(), seq, { sampling, returnLogits: opts.returnLogits === true }, abort.signal)
        let tokens = params.prompt
        let pastLen = 0
        for (let step = 0; ; step++) {
          const mask = constraint?.allowed(params.maxTokens - generated)
          if (mask != null && maskCount(mask) === 0) throw new Error('constrained decoding: no token of this vocabulary can continue the JSON')
          const out = await link.step({ step, pastLen, tokens, seqLen: tokens.length, mask }, abort.signal)
          if (out.logits != null) opts.onLogits?.(step, out.logits)
          pastLen += tokens.length
          if (stop.has(out.token)) { end({ reason: 'stop', promptTokens: params.prompt.length, completionTokens: generated }); return }
          if (constraint != null && !constraint.accept(out.token)) throw new Error(`constrained decoding: the last stage picked token ${out.token}, which does not continue the JSON`)
          if (out.logprob != null) logprobs.push(out.logprob)
          push(out.token)
          generated++
          if (constraint?.done === true) { end({ reason: 'stop', promptTokens: params.prompt.length, completionTokens: generated }); return }
          if (generated >= params.maxTokens) { end({ reason: 'length', promptTokens: params.prompt.length, completionTokens: generated }); return }
          tokens = [out.token]
        }
      } catch (err) {
        end(abort.signal.aborted
          ? { reason: 'cancelled', promptTokens: params.prompt.length, completionTokens: generated }
          : { reason: 'error', promptTokens: params.prompt.length, completionTokens: generated, error: (err as Error).message })
      } finally {
        link?.close()
      }
    })()
    const cancel = (): void => { abort.abort() }
    return {
      id: 0,
      logprobs,
      done,
      cancel,
      tokens: {
        [Symbol.asyncIterator]: () => ({
          next: async (): Promise<IteratorResult<number>> => {
            while (queue.length === 0 && !ended) await new Promise<void>(resolve => { waiter = resolve })
            if (queue.length > 0) return { value: queue.shift() as number, done: false }
            return { value: undefined, done: true }
          },
          return: async (): Promise<IteratorResult<number>> => {
            cancel()
            return { value: undefined, done: true }
          }
        })
      }
    }
  }
}
