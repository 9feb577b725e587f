/**
 * Tensor-parallel shards of the generated GPT decoder (agent/model/graph.ts): the first brick of serving
 * one model from several boxes at once, each reading only its share of the weights for the whole batch
 * (Megatron-LM's layout). Rank r of R holds, for every layer:
 *
 *  - an attention segment: LayerNorm (replicated), the query/key/value columns of heads
 *    [r·A/R, (r+1)·A/R), attention over those heads with their own KV cache, and the rows of the output
 *    projection that read those heads: a partial [batch, seq, hidden] whose sum over the ranks is the
 *    attention block's output (the bias is added by rank 0 only);
 *  - an MLP segment: LayerNorm, the columns [r·4H/R, (r+1)·4H/R) of the up projection, GELU, the same rows
 *    of the down projection: again a partial to be summed.
 *
 * Between segments the ranks sum their partials (an all-reduce) and each adds the sum to its copy of the
 * residual stream. The embeddings and the head (final LayerNorm, LM head) are small and replicated. Every
 * segment is its own ONNX graph, because the all-reduce happens outside ONNX Runtime; a segment outputs
 * its run's keys and values alone (`key_step` / `value_step`), for an engine that keeps its own cache.
 * test/unit/tp-graph.test.ts checks that summed shards give the whole model's logits; bench/tensor-parallel.ts
 * measures what a rank costs against the whole model.
 */
import { DT, FloatAttr, IR_VERSION, OPSET, floatTensor, valueInfo } from './onnx.ts'
import type { IModelProto, IValueInfoProto } from './onnx.ts'
import { GraphBuilder } from './graph-builder.ts'
import { LN_EPS } from './weights.ts'
import type { NamedTensor } from './weights.ts'
import { headDim } from './spec.ts'
import type { ModelSpec } from './spec.ts'

/** Input and output names of the segments. */
export const tpIo = {
  hidden: 'hidden',
  /** additive attention bias [batch, 1, seq, total]: 0 where a query may see a key, MASK_NEG elsewhere */
  bias: 'attention_bias',
  pastKey: 'past_key',
  pastValue: 'past_value',
  partial: 'partial',
  stepKey: 'key_step',
  stepValue: 'value_step',
  logits: 'logits'
}

/** A rank's share of a model: which heads and which MLP columns. */
export interface TpShare { rank: number, ranks: number, heads: number, headsFrom: number, ffn: number, ffnFrom: number }

export class TensorParallelError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'TensorParallelError'
  }
}

/** Rank `rank` of `ranks`: heads and MLP columns split evenly; refused unless both divide. */
export function tpShare (spec: Pick<ModelSpec, 'heads' | 'hidden'>, rank: number, ranks: number): TpShare {
  if (!Number.isInteger(ranks) || ranks < 1) throw new TensorParallelError(`ranks must be a positive integer, not ${ranks}`)
  if (!Number.isInteger(rank) || rank < 0 || rank >= ranks) throw new TensorParallelError(`rank ${rank} is not in 0..${ranks - 1}`)
  if (spec.heads % ranks !== 0) throw new TensorParallelError(`${spec.heads} heads do not split evenly over ${ranks} ranks`)
  const heads = spec.heads / ranks
  const ffn = (4 * spec.hidden) / ranks
  return { rank, ranks, heads, headsFrom: rank * heads, ffn, ffnFrom: rank * ffn }
}

type Weights = ReadonlyMap<string, NamedTensor>

function weight (w: Weights, name: string): NamedTensor {
  const t = w.get(name)
  if (t == null) throw new TensorParallelError(`the model has no weight ${name}`)
  return t
}

/** Columns [from, from + n) of a row-major [rows, cols] matrix. */
function columns (t: NamedTensor, from: number, n: number): Float32Array {
  const [rows, cols] = t.dims
  const out = new Float32Array(rows * n)
  for (let r = 0; r < rows; r++) out.set(t.data.subarray(r * cols + from, r * cols + from + n), r * n)
  return out
}

/** Rows [from, from + n) of a row-major [rows, cols] matrix. */
function rowsOf (t: NamedTensor, from: number, n: number): Float32Array {
  const cols = t.dims[1]
  return t.data.slice(from * cols, (from + n) * cols)
}

function segment (name: string, g: GraphBuilder, inputs: IValueInfoProto[], outputs: IValueInfoProto[]): IModelProto {
  return {
    irVersion: IR_VERSION,
    producerName: 'blockmesh',
    domain: 'dev.blockmesh',
    modelVersion: 1,
    opsetImport: [{ domain: '', version: OPSET }],
    graph: { name, node: g.nodes, initializer: g.inits, input: inputs, output: outputs }
  }
}

const B = 'batch_size'
const S = 'sequence_length'
const P = 'past_sequence_length'
const T = 'total_sequence_length'

/** Layer `layer`'s attention segment for `share` (see the module comment). */
export function attentionSegment (spec: ModelSpec, w: Weights, layer: number, share: TpShare): IModelProto {
  const H = spec.hidden
  const D = headDim(spec)
  const Hr = share.heads * D
  const from = share.headsFrom * D
  const p = `transformer.h.${layer}`
  const g = new GraphBuilder()
  const qkv = weight(w, `${p}.attn.c_attn.weight`)
  const qkvBias = weight(w, `${p}.attn.c_attn.bias`).data
  // this rank's query, key and value columns side by side: [H, 3·Hr]
  const parts = [0, H, 2 * H].map(base => columns(qkv, base + from, Hr))
  const wqkv = new Float32Array(H * 3 * Hr)
  for (let k = 0; k < H; k++) parts.forEach((m, j) => { wqkv.set(m.subarray(k * Hr, (k + 1) * Hr), k * 3 * Hr + j * Hr) })
  const bqkv = new Float32Array(3 * Hr)
  ;[0, H, 2 * H].forEach((base, j) => { bqkv.set(qkvBias.subarray(base + from, base + from + Hr), j * Hr) })
  g.init(floatTensor('ln.weight', [H], weight(w, `${p}.ln_1.weight`).data))
  g.init(floatTensor('ln.bias', [H], weight(w, `${p}.ln_1.bias`).data))
  g.init(floatTensor('qkv.weight', [H, 3 * Hr], wqkv))
  g.init(floatTensor('qkv.bias', [3 * Hr], bqkv))
  g.init(floatTensor('proj.weight', [Hr, H], rowsOf(weight(w, `${p}.attn.c_proj.weight`), from, Hr)))
  const projBias = share.rank === 0 ? weight(w, `${p}.attn.c_proj.bias`).data : new Float32Array(H)
  g.init(floatTensor('proj.bias', [H], projBias))

  const x = g.add('LayerNormalization', [tpIo.hidden, 'ln.weight', 'ln.bias'], '/ln', { axis: -1, epsilon: new FloatAttr(LN_EPS) })
  const qkvOut = g.add('Add', [g.add('MatMul', [x, 'qkv.weight'], '/qkv/matmul'), 'qkv.bias'], '/qkv')
  const [q0, k0, v0] = g.addMulti('Split', [qkvOut, g.i64([Hr, Hr, Hr])], ['/q', '/k', '/v'], '/split', { axis: -1 })
  const headsShape = g.i64([0, 0, share.heads, D])
  const heads = (t: string): string => g.add('Transpose', [g.add('Reshape', [t, headsShape], `${t}_bsad`)], `${t}_heads`, { perm: [0, 2, 1, 3] })
  const q = heads(q0)
  const kNew = heads(k0)
  const vNew = heads(v0)
  g.addMulti('Identity', [kNew], [tpIo.stepKey], '/k_step')
  g.addMulti('Identity', [vNew], [tpIo.stepValue], '/v_step')
  const kAll = g.add('Concat', [tpIo.pastKey, kNew], '/k_all', { axis: 2 })
  const vAll = g.add('Concat', [tpIo.pastValue, vNew], '/v_all', { axis: 2 })
  const scores = g.add('Add', [
    g.add('Mul', [g.add('MatMul', [q, g.add('Transpose', [kAll], '/k_t', { perm: [0, 1, 3, 2] })], '/qk'), g.f32(1 / Math.sqrt(D))], '/qk_scaled'),
    tpIo.bias
  ], '/scores')
  const probs = g.add('Softmax', [scores], '/probs', { axis: -1 })
  const ctx = g.add('Reshape', [g.add('Transpose', [g.add('MatMul', [probs, vAll], '/ctx_heads')], '/ctx_bsad', { perm: [0, 2, 1, 3] }), g.i64([0, 0, Hr])], '/ctx')
  g.add('Add', [g.add('MatMul', [ctx, 'proj.weight'], '/proj'), 'proj.bias'], tpIo.partial)
  return segment(`blockmesh-tp-attn-${layer}-r${share.rank}of${share.ranks}`, g, [
    valueInfo(tpIo.hidden, DT.FLOAT, [B, S, H]),
    valueInfo(tpIo.bias, DT.FLOAT, [B, 1, S, T]),
    valueInfo(tpIo.pastKey, DT.FLOAT, [B, share.heads, P, D]),
    valueInfo(tpIo.pastValue, DT.FLOAT, [B, share.heads, P, D])
  ], [
    valueInfo(tpIo.partial, DT.FLOAT, [B, S, H]),
    valueInfo(tpIo.stepKey, DT.FLOAT, [B, share.heads, S, D]),
    valueInfo(tpIo.stepValue, DT.FLOAT, [B, share.heads, S, D])
  ])
}

/** Layer `layer`'s MLP segment for `share`. */
export function mlpSegment (spec: ModelSpec, w: Weights, layer: number, share: TpShare): IModelProto {
  const H = spec.hidden
  const p = `transformer.h.${layer}`
  const g = new GraphBuilder()
  g.init(floatTensor('ln.weight', [H], weight(w, `${p}.ln_2.weight`).data))
  g.init(floatTensor('ln.bias', [H], weight(w, `${p}.ln_2.bias`).data))
  g.init(floatTensor('fc.weight', [H, share.ffn], columns(weight(w, `${p}.mlp.c_fc.weight`), share.ffnFrom, share.ffn)))
  g.init(floatTensor('fc.bias', [share.ffn], weight(w, `${p}.mlp.c_fc.bias`).data.slice(share.ffnFrom, share.ffnFrom + share.ffn)))
  g.init(floatTensor('proj.weight', [share.ffn, H], rowsOf(weight(w, `${p}.mlp.c_proj.weight`), share.ffnFrom, share.ffn)))
  g.init(floatTensor('proj.bias', [H], share.rank === 0 ? weight(w, `${p}.mlp.c_proj.bias`).data : new Float32Array(H)))
  const y = g.add('LayerNormalization', [tpIo.hidden, 'ln.weight', 'ln.bias'], '/ln', { axis: -1, epsilon: new FloatAttr(LN_EPS) })
  const fc = g.add('Add', [g.add('MatMul', [y, 'fc.weight'], '/fc/matmul'), 'fc.bias'], '/fc')
  // GELU, exact, as the whole graph computes it: 0.5 · x · (1 + erf(x / √2))
  const gelu = g.add('Mul', [g.add('Mul', [fc, g.f32(0.5)], '/gelu_half'),
    g.add('Add', [g.add('Erf', [g.add('Mul', [fc, g.f32(Math.SQRT1_2)], '/gelu_scaled')], '/gelu_erf'), g.f32(1)], '/gelu_1p')], '/gelu')
  g.add('Add', [g.add('MatMul', [gelu, 'proj.weight'], '/proj'), 'proj.bias'], tpIo.partial)
  return segment(`blockmesh-tp-mlp-${layer}-r${share.rank}of${share.ranks}`, g,
    [valueInfo(tpIo.hidden, DT.FLOAT, [B, S, H])], [valueInfo(tpIo.partial, DT.FLOAT, [B, S, H])])
}

/** The head (final LayerNorm and LM head), replicated: hidden states to logits. */
export function headSegment (spec: ModelSpec, w: Weights): IModelProto {
  const H = spec.hidden
  const g = new GraphBuilder()
  g.init(floatTensor('ln.weight', [H], weight(w, 'transformer.ln_f.weight').data))
  g.init(floatTensor('ln.bias', [H], weight(w, 'transformer.ln_f.bias').data))
  g.init(floatTensor('lm_head.weight', [H, spec.vocab], weight(w, 'lm_head.weight').data))
  const hf = g.add('LayerNormalization', [tpIo.hidden, 'ln.weight', 'ln.bias'], '/ln_f', { axis: -1, epsilon: new FloatAttr(LN_EPS) })
  g.add('MatMul', [hf, 'lm_head.weight'], tpIo.logits)
  return segment('blockmesh-tp-head', g, [valueInfo(tpIo.hidden, DT.FLOAT, [B, S, H])], [valueInfo(tpIo.logits, DT.FLOAT, [B, S, spec.vocab])])
}

/** The embeddings, replicated and computed in JavaScript: token row + position row, [batch, seq, hidden]. */
export function embed (spec: ModelSpec, w: Weights, ids: ArrayLike<number>, positions: ArrayLike<number>): Float32Array {
  const H = spec.hidden
  const wte = weight(w, 'transformer.wte.weight').data
  const wpe = weight(w, 'transformer.wpe.weight').data
  const out = new Float32Array(ids.length * H)
  for (let i = 0; i < ids.length; i++) {
    const t = ids[i]
    const pos = positions[i]
    if (!Number.isInteger(t) || t < 0 || t >= spec.vocab) throw new TensorParallelError(`token ${t} is not in the vocabulary of ${spec.vocab}`)
    if (!Number.isInteger(pos) || pos < 0 || pos >= spec.maxPositions) throw new TensorParallelError(`position ${pos} is not below ${spec.maxPositions}`)
    for (let k = 0; k < H; k++) out[i * H + k] = wte[t * H + k] + wpe[pos * H + k]
  }
  return out
}
