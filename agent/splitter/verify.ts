import ort from 'onnxruntime-node'
import type { Tensor } from 'onnxruntime-node'
import { decoderShape, emptyPast, presentAsPast, sequenceFeeds } from '../executor/feeds.ts'
import type { Feeds } from '../executor/feeds.ts'
import { argmax } from '../executor/sampling.ts'
import { io } from '../model/graph.ts'
import { HIDDEN_OUT, stageFeeds, stagePresent, stageShape } from '../executor/stage-io.ts'

export interface Verification {
  /** max |stage chain − monolithic| over the prompt's logits (prefill) */
  maxAbsDiff: number
  /** the same over the logits of `decodeSteps` greedy steps with KV caches */
  decodeMaxAbsDiff: number
  promptTokens: number
  decodeSteps: number
  /** greedy tokens agree step by step */
  greedyEqual: boolean
}

function maxDiff (a: Float32Array, b: Float32Array): number {
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
  return a.length === b.length ? m : Infinity
}

/**
 * Runs the stages chained in-process and the monolithic model on the same
 * fixed prompt (prefill, then greedy decode steps with KV caches) and
 * reports how far their logits are apart.
 */
export async function verifySplit (monolithic: Uint8Array | string, stages: Array<Uint8Array | string>, prompt: number[], decodeSteps = 4): Promise<Verification> {
  const opts: ort.InferenceSession.SessionOptions = { executionProviders: ['cpu'], graphOptimizationLevel: 'all' }
  const whole = typeof monolithic === 'string' ? await ort.InferenceSession.create(monolithic, opts) : await ort.InferenceSession.create(monolithic, opts)
  const parts = await Promise.all(stages.map(async s => typeof s === 'string' ? await ort.InferenceSession.create(s, opts) : await ort.InferenceSession.create(s, opts)))
  try {
    const shape = decoderShape(whole)
    const shapes = parts.map(stageShape)
    const V = shape.vocab
    // prefill
    let wholeOut = await whole.run(sequenceFeeds(prompt, 0, emptyPast(shape, 1)))
    let pasts: Array<Feeds | null> = parts.map(() => null)
    const runChain = async (tokens: number[], pastLen: number): Promise<Tensor> => {
      let hidden: Tensor | undefined
      let logits: Tensor | undefined
      for (let i = 0; i < parts.length; i++) {
        const out = await parts[i].run(stageFeeds(shapes[i], shapes[i].first ? { tokens } : { hidden }, pastLen, pasts[i]))
        pasts[i] = stagePresent(shapes[i], out)
        if (shapes[i].last) logits = out[io.logits]
        else hidden = out[HIDDEN_OUT]
      }
      return logits as Tensor
    }
    pasts = parts.map(() => null)
    let chainLogits = await runChain(prompt, 0)
    const maxAbsDiff = maxDiff(wholeOut.logits.data as Float32Array, chainLogits.data as Float32Array)
    // greedy decode steps
    let decodeMaxAbsDiff = 0
    let greedyEqual = true
    let pos = prompt.length
    // the last position's logits: [1, S, V] from a generated model, [1, 1, V] from a converted one (last position only)
    const last = (t: Tensor): Float32Array => { const d = t.data as Float32Array; return d.subarray(d.length - V) }
    let tokW = argmax(last(wholeOut.logits))
    let tokC = argmax(last(chainLogits))
    for (let step = 0; step < decodeSteps; step++) {
      if (tokW !== tokC) greedyEqual = false
      wholeOut = await whole.run(sequenceFeeds([tokW], pos, presentAsPast(shape, wholeOut)))
      chainLogits = await runChain([tokW], pos)
      decodeMaxAbsDiff = Math.max(decodeMaxAbsDiff, maxDiff(wholeOut.logits.data as Float32Array, chainLogits.data as Float32Array))
      tokW = argmax(wholeOut.logits.data as Float32Array)
      tokC = argmax(chainLogits.data as Float32Array)
      pos++
    }
    if (tokW !== tokC) greedyEqual = false
    return { maxAbsDiff, decodeMaxAbsDiff, promptTokens: prompt.length, decodeSteps, greedyEqual }
  } finally {
    await whole.release()
    for (const p of parts) await p.release()
  }
}
