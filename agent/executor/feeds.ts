import ort from 'onnxruntime-node'
import type { Tensor } from 'onnxruntime-node'
import { io } from '../model/graph.ts'

/** What the executor needs to know about a decoder's cache layout. */
export interface DecoderShape { layers: number, heads: number, headDim: number, vocab: number }

export type Feeds = Record<string, Tensor>

export function int64 (values: ArrayLike<number>, dims: number[]): Tensor {
  const data = new BigInt64Array(values.length)
  for (let i = 0; i < values.length; i++) data[i] = BigInt(values[i])
  return new ort.Tensor('int64', data, dims)
}

export function emptyPast (shape: DecoderShape, batch: number): Feeds {
  const feeds: Feeds = {}
  for (let i = 0; i < shape.layers; i++) {
    feeds[io.pastKey(i)] = new ort.Tensor('float32', new Float32Array(0), [batch, shape.heads, 0, shape.headDim])
    feeds[io.pastValue(i)] = new ort.Tensor('float32', new Float32Array(0), [batch, shape.heads, 0, shape.headDim])
  }
  return feeds
}

/** Feeds for one sequence: `tokens` appended after `pastLen` cached positions. */
export function sequenceFeeds (tokens: number[], pastLen: number, past: Feeds): Feeds {
  const S = tokens.length
  const mask = new Array<number>(pastLen + S).fill(1)
  const pos = tokens.map((_, i) => pastLen + i)
  return {
    [io.inputIds]: int64(tokens, [1, S]),
    [io.attentionMask]: int64(mask, [1, pastLen + S]),
    [io.positionIds]: int64(pos, [1, S]),
    ...past
  }
}

/** The present.* outputs of a run, renamed as the next run's past_key_values.* inputs. */
export function presentAsPast (shape: DecoderShape, outputs: Record<string, Tensor>): Feeds {
  const feeds: Feeds = {}
  for (let i = 0; i < shape.layers; i++) {
    feeds[io.pastKey(i)] = outputs[io.presentKey(i)]
    feeds[io.pastValue(i)] = outputs[io.presentValue(i)]
  }
  return feeds
}

/** Reads layers/heads/headDim/vocab from a session's input and output metadata. */
export function decoderShape (session: { inputNames: readonly string[], inputMetadata: readonly unknown[], outputMetadata: readonly unknown[], outputNames: readonly string[] }): DecoderShape {
  const layers = session.inputNames.filter(n => /^past_key_values\.\d+\.key$/.test(n)).length
  const meta = session.inputMetadata as Array<{ name: string, shape?: Array<number | string> }>
  const k0 = meta.find(m => m.name === io.pastKey(0))
  const logits = (session.outputMetadata as Array<{ name: string, shape?: Array<number | string> }>).find(m => m.name === io.logits)
  const heads = k0?.shape?.[1]
  const headDim = k0?.shape?.[3]
  const vocab = logits?.shape?.[2]
  if (layers === 0 || typeof heads !== 'number' || typeof headDim !== 'number' || typeof vocab !== 'number') {
    throw new Error('not a decoder with a KV cache: expected inputs past_key_values.N.key of shape [batch, heads, past, head_dim] and logits [batch, seq, vocab]')
  }
  return { layers, heads, headDim, vocab }
}
