import ort from 'onnxruntime-node'
import type { Tensor } from 'onnxruntime-node'
import { io } from '../model/graph.ts'
import { int64 } from './feeds.ts'
import type { Feeds } from './feeds.ts'

/**
 * The stage IO contract: a split stage's graph reads `hidden_states` (every stage but the first) and
 * writes `hidden_states_out` (every stage but the last), its layers' past_key_values.N.* in and present.N.*
 * out, and, where the model gives them, present.N.key_step / value_step (kv-cache.ts). The splitter writes graphs to it, the stage
 * worker runs them; it lives with the executor so that the splitter depends on the executor, never back.
 */
export const HIDDEN_IN = 'hidden_states'
export const HIDDEN_OUT = 'hidden_states_out'

/** What a stage needs to know to build its feeds. */
export interface StageShape {
  /** layer indexes of the stage's KV cache (past_key_values.N.*) */
  layers: number[]
  heads: number
  headDim: number
  /** whether the stage reads input_ids (stage 0) or hidden_states */
  first: boolean
  /** whether the stage produces logits (last stage) */
  last: boolean
  /** graph input names (attention_mask and position_ids are fed only when declared) */
  inputs: readonly string[]
}

export function stageShape (session: ort.InferenceSession): StageShape {
  const names = session.inputNames
  const layers = names.map(n => /^past_key_values\.(\d+)\.key$/.exec(n)).filter(m => m != null).map(m => Number((m as RegExpExecArray)[1]))
  const meta = session.inputMetadata as unknown as Array<{ name: string, shape?: Array<number | string> }>
  const k = meta.find(m => /^past_key_values\.\d+\.key$/.test(m.name))
  const heads = k?.shape?.[1]
  const headDim = k?.shape?.[3]
  if (typeof heads !== 'number' || typeof headDim !== 'number') throw new Error('stage has no KV cache inputs of shape [batch, heads, past, head_dim]')
  return { layers, heads, headDim, first: names.includes(io.inputIds), last: session.outputNames.includes(io.logits), inputs: names }
}

/** Feeds for one sequence's step through a stage: `x` is token ids (first stage) or the hidden state [1, S, H]. */
export function stageFeeds (shape: StageShape, x: { tokens?: number[], hidden?: Tensor }, pastLen: number, past: Feeds | null): Feeds {
  const S = x.tokens?.length ?? (x.hidden as Tensor).dims[1]
  const feeds: Feeds = {}
  if (shape.first) feeds[io.inputIds] = int64(x.tokens as number[], [1, S])
  else feeds[HIDDEN_IN] = x.hidden as Tensor
  if (shape.inputs.includes(io.attentionMask)) feeds[io.attentionMask] = int64(new Array<number>(pastLen + S).fill(1), [1, pastLen + S])
  if (shape.inputs.includes(io.positionIds)) feeds[io.positionIds] = int64(Array.from({ length: S }, (_, i) => pastLen + i), [1, S])
  for (const l of shape.layers) {
    feeds[io.pastKey(l)] = past?.[io.pastKey(l)] ?? new ort.Tensor('float32', new Float32Array(0), [1, shape.heads, 0, shape.headDim])
    feeds[io.pastValue(l)] = past?.[io.pastValue(l)] ?? new ort.Tensor('float32', new Float32Array(0), [1, shape.heads, 0, shape.headDim])
  }
  return feeds
}

/** The stage's present.* outputs as the next step's past_key_values.* inputs. */
export function stagePresent (shape: StageShape, out: Record<string, Tensor>): Feeds {
  const feeds: Feeds = {}
  for (const l of shape.layers) {
    feeds[io.pastKey(l)] = out[io.presentKey(l)]
    feeds[io.pastValue(l)] = out[io.presentValue(l)]
  }
  return feeds
}

