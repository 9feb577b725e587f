import { randomBytes } from 'node:crypto'
import type { MeshNode } from '../../mesh/node.ts'
import { openRoute } from './links.ts'
import type { LocalStages, RouteHop } from './links.ts'
import type { GenerateParams, Generation, GenerationResult } from '../executor/engine.ts'

/**
 * Runs a generation across the stages of a vDAG: one link chain per
 * sequence (local stages in-process, remote ones over the tensor protocol),
 * one step per token. Presents the same Generation interface as a local
 * engine, so the OpenAI routes serve a vDAG like any model.
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
    void (async () => {
      let generated = 0
      let link
      try {
        link = await openRoute(this.node, this.local, this.route(), seq, { sampling: { temperature: params.temperature, topP: params.topP, seed: params.seed >>> 0 }, returnLogits: opts.returnLogits === true }, abort.signal)
        let tokens = params.prompt
        let pastLen = 0
        for (let step = 0; ; step++) {
          const out = await link.step({ step, pastLen, tokens, seqLen: tokens.length }, abort.signal)
          if (out.logits != null) opts.onLogits?.(step, out.logits)
          pastLen += tokens.length
          if (stop.has(out.token)) { end({ reason: 'stop', promptTokens: params.prompt.length, completionTokens: generated }); return }
          push(out.token)
          generated++
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
