import { DT, FloatAttr, IR_VERSION, OPSET, floatTensor, int64Tensor, node, valueInfo } from './onnx.ts'
import type { IModelProto, INodeProto, ITensorProto, IValueInfoProto } from './onnx.ts'
import { LN_EPS } from './weights.ts'
import type { NamedTensor } from './weights.ts'
import { headDim } from './spec.ts'
import type { ModelSpec } from './spec.ts'

export const GENERATOR_VERSION = 2
export const MASK_NEG = -1e9

/** Input/output names of the Hugging Face optimum decoder convention. */
export const io = {
  inputIds: 'input_ids',
  attentionMask: 'attention_mask',
  positionIds: 'position_ids',
  pastKey: (i: number) => `past_key_values.${i}.key`,
  pastValue: (i: number) => `past_key_values.${i}.value`,
  logits: 'logits',
  presentKey: (i: number) => `present.${i}.key`,
  presentValue: (i: number) => `present.${i}.value`,
  /**
   * The keys and values of this run's positions alone ([batch, heads, sequence, head_dim]), beside the
   * whole present.*: an engine that keeps its own cache fetches these instead, so the run does not copy
   * the whole cache out (agent/executor/kv-cache.ts).
   */
  stepKey: (i: number) => `present.${i}.key_step`,
  stepValue: (i: number) => `present.${i}.value_step`
}

export const DIMS = { batch: 'batch_size', seq: 'sequence_length', past: 'past_sequence_length', total: 'total_sequence_length' }

/**
 * The GPT-2-style decoder as an ONNX graph (opset 17): token + position
 * embeddings, L pre-norm blocks (multi-head causal self-attention with a KV
 * cache, GELU MLP, residuals), final LayerNorm, LM head. The causal mask is
 * computed in the graph from the shapes: query j (absolute index past + j)
 * may see key k when k <= past + j, and only where attention_mask is 1.
 */
export function buildGraph (spec: ModelSpec, weights: Iterable<NamedTensor>): IModelProto {
  const H = spec.hidden
  const A = spec.heads
  const D = headDim(spec)
  const nodes: INodeProto[] = []
  const inits: ITensorProto[] = []
  for (const w of weights) inits.push(floatTensor(w.name, w.dims, w.data))
  const add = (op: string, inputs: string[], output: string, attrs: Record<string, number | number[] | FloatAttr> = {}): string => {
    nodes.push(node(op, inputs, [output], output, attrs))
    return output
  }
  const constI64 = (name: string, dims: number[], values: number[]): string => { inits.push(int64Tensor(name, dims, values)); return name }
  const constF = (name: string, value: number): string => { inits.push(floatTensor(name, [], new Float32Array([value]))); return name }

  // ---- shapes and mask (shared by all layers)
  const i0 = constI64('const.i64.0', [], [0])
  const i1 = constI64('const.i64.1', [], [1])
  const ax0 = constI64('const.axes.0', [1], [0])
  const ax1 = constI64('const.axes.1', [1], [1])
  const ax01 = constI64('const.axes.0_1', [2], [0, 1])
  const ax12 = constI64('const.axes.1_2', [2], [1, 2])
  const S = add('Gather', [add('Shape', [io.inputIds], '/mask/ids_shape'), i1], '/mask/S', { axis: 0 })
  const T = add('Gather', [add('Shape', [io.attentionMask], '/mask/mask_shape'), i1], '/mask/T', { axis: 0 })
  const P = add('Sub', [T, S], '/mask/P')
  const qidx = add('Range', [P, T, i1], '/mask/qidx')
  const kidx = add('Range', [i0, T, i1], '/mask/kidx')
  const causal = add('LessOrEqual', [add('Unsqueeze', [kidx, ax0], '/mask/k_row'), add('Unsqueeze', [qidx, ax1], '/mask/q_col')], '/mask/causal')
  const padOk = add('Unsqueeze', [add('Cast', [io.attentionMask], '/mask/mask_bool', { to: DT.BOOL }), ax12], '/mask/mask_b11t')
  const allowed = add('And', [add('Unsqueeze', [causal, ax01], '/mask/causal_11st'), padOk], '/mask/allowed')
  const maskBias = add('Where', [allowed, constF('const.f.0', 0), constF('const.f.neg', MASK_NEG)], '/mask/bias')

  // ---- embeddings
  let h = add('Add', [
    add('Gather', ['transformer.wte.weight', io.inputIds], '/embed/tok', { axis: 0 }),
    add('Gather', ['transformer.wpe.weight', io.positionIds], '/embed/pos', { axis: 0 })
  ], '/embed/sum')

  const headsShape = constI64('const.shape.bsad', [4], [0, 0, A, D])
  const mergeShape = constI64('const.shape.bsh', [3], [0, 0, H])
  const split3 = constI64('const.split.qkv', [3], [H, H, H])
  const scale = constF('const.f.scale', 1 / Math.sqrt(D))
  const half = constF('const.f.half', 0.5)
  const one = constF('const.f.one', 1)
  const invSqrt2 = constF('const.f.inv_sqrt2', Math.SQRT1_2)
  const ln = (x: string, prefix: string, out: string): string =>
    add('LayerNormalization', [x, `${prefix}.weight`, `${prefix}.bias`], out, { axis: -1, epsilon: new FloatAttr(LN_EPS) })
  const linear = (x: string, prefix: string, out: string): string =>
    add('Add', [add('MatMul', [x, `${prefix}.weight`], `${out}/matmul`), `${prefix}.bias`], out)

  for (let i = 0; i < spec.layers; i++) {
    const p = `transformer.h.${i}`
    const n = `/h.${i}`
    const x = ln(h, `${p}.ln_1`, `${n}/ln_1`)
    const qkv = linear(x, `${p}.attn.c_attn`, `${n}/attn/qkv`)
    nodes.push(node('Split', [qkv, split3], [`${n}/attn/q`, `${n}/attn/k`, `${n}/attn/v`], `${n}/attn/split`, { axis: -1 }))
    const heads = (t: string): string =>
      add('Transpose', [add('Reshape', [`${n}/attn/${t}`, headsShape], `${n}/attn/${t}_bsad`)], `${n}/attn/${t}_heads`, { perm: [0, 2, 1, 3] })
    const q = heads('q')
    const kNew = heads('k')
    const vNew = heads('v')
    nodes.push(node('Identity', [kNew], [io.stepKey(i)], `${n}/attn/k_step`), node('Identity', [vNew], [io.stepValue(i)], `${n}/attn/v_step`))
    const kAll = add('Concat', [io.pastKey(i), kNew], io.presentKey(i), { axis: 2 })
    const vAll = add('Concat', [io.pastValue(i), vNew], io.presentValue(i), { axis: 2 })
    const scores = add('Add', [
      add('Mul', [add('MatMul', [q, add('Transpose', [kAll], `${n}/attn/k_t`, { perm: [0, 1, 3, 2] })], `${n}/attn/qk`), scale], `${n}/attn/qk_scaled`),
      maskBias
    ], `${n}/attn/scores`)
    const probs = add('Softmax', [scores], `${n}/attn/probs`, { axis: -1 })
    const ctx = add('Reshape', [add('Transpose', [add('MatMul', [probs, vAll], `${n}/attn/ctx_heads`)], `${n}/attn/ctx_bsad`, { perm: [0, 2, 1, 3] }), mergeShape], `${n}/attn/ctx`)
    h = add('Add', [h, linear(ctx, `${p}.attn.c_proj`, `${n}/attn/out`)], `${n}/resid_attn`)
    const y = ln(h, `${p}.ln_2`, `${n}/ln_2`)
    const fc = linear(y, `${p}.mlp.c_fc`, `${n}/mlp/fc`)
    // GELU, exact: 0.5 · x · (1 + erf(x / √2))
    const gelu = add('Mul', [add('Mul', [fc, half], `${n}/mlp/gelu_half`),
      add('Add', [add('Erf', [add('Mul', [fc, invSqrt2], `${n}/mlp/gelu_scaled`)], `${n}/mlp/gelu_erf`), one], `${n}/mlp/gelu_1p`)], `${n}/mlp/gelu`)
    h = add('Add', [h, linear(gelu, `${p}.mlp.c_proj`, `${n}/mlp/out`)], `${n}/resid_mlp`)
  }
  const hf = ln(h, 'transformer.ln_f', '/ln_f')
  nodes.push(node('MatMul', [hf, 'lm_head.weight'], [io.logits], '/lm_head'))

  const inputs: IValueInfoProto[] = [
    valueInfo(io.inputIds, DT.INT64, [DIMS.batch, DIMS.seq]),
    valueInfo(io.attentionMask, DT.INT64, [DIMS.batch, DIMS.total]),
    valueInfo(io.positionIds, DT.INT64, [DIMS.batch, DIMS.seq])
  ]
  const outputs: IValueInfoProto[] = [valueInfo(io.logits, DT.FLOAT, [DIMS.batch, DIMS.seq, spec.vocab])]
  for (let i = 0; i < spec.layers; i++) {
    inputs.push(valueInfo(io.pastKey(i), DT.FLOAT, [DIMS.batch, A, DIMS.past, D]), valueInfo(io.pastValue(i), DT.FLOAT, [DIMS.batch, A, DIMS.past, D]))
    outputs.push(valueInfo(io.presentKey(i), DT.FLOAT, [DIMS.batch, A, DIMS.total, D]), valueInfo(io.presentValue(i), DT.FLOAT, [DIMS.batch, A, DIMS.total, D]))
  }
  for (let i = 0; i < spec.layers; i++) {
    outputs.push(valueInfo(io.stepKey(i), DT.FLOAT, [DIMS.batch, A, DIMS.seq, D]), valueInfo(io.stepValue(i), DT.FLOAT, [DIMS.batch, A, DIMS.seq, D]))
  }
  return {
    irVersion: IR_VERSION,
    producerName: 'blockmesh',
    producerVersion: String(GENERATOR_VERSION),
    domain: 'dev.blockmesh',
    modelVersion: 1,
    docString: 'GPT-style decoder generated by blockmesh: a byte-bigram language model (see README)',
    opsetImport: [{ domain: '', version: OPSET }],
    metadataProps: [
      { key: 'blockmesh.spec', value: JSON.stringify(spec) },
      { key: 'blockmesh.generator', value: String(GENERATOR_VERSION) },
      { key: 'blockmesh.tokenizer', value: JSON.stringify({ type: 'byte', bos: 256, eos: 257, pad: 258 }) }
    ],
    graph: { name: 'blockmesh-gpt', node: nodes, initializer: inits, input: inputs, output: outputs }
  }
}
