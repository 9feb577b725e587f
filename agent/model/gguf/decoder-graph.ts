/**
 * Builds an ONNX decoder from a GGUF's weights, in the optimum IO layout the engine, splitter and vDAGs
 * serve (`input_ids`, `attention_mask`, `position_ids`, `past_key_values.N.key|value` → `logits`,
 * `present.N.key|value`), with node names `/model/layers.N/…` so the splitter can cut it by layer.
 *
 * Per layer: RMSNorm → Q/K/V projections (optional bias, optional per-head Q/K RMSNorm) → rotary
 * embedding (HF rotate-half layout) → KV cache concat → grouped-query attention → output projection,
 * residual; RMSNorm → gated MLP (SiLU or tanh-GELU) → residual; gemma3's extra post-norms and
 * sliding-window layers. Logits are computed for the last position only (`[batch, 1, vocab]`): that is
 * all decoding needs, and it saves the LM head for every prompt position.
 *
 * Linear weights are either dequantized to float32 (`weights: 'f32'`) or, for 4-bit blocks of 32
 * (Q4_0, Q4_1), kept 4-bit for ONNX Runtime's `MatMulNBits` (`weights: 'q4'`); the rest is float32.
 */
import { DT, IR_VERSION, floatTensor, valueInfo } from '../onnx.ts'
import type { IModelProto, ITensorProto, IValueInfoProto } from '../onnx.ts'
import { DIMS, io } from '../graph.ts'
import { GraphBuilder } from '../graph-builder.ts'
import { GGML_TYPE, dequantize, repackQ4ForMatMulNBits } from './quants.ts'
import type { DecoderConfig } from './arch.ts'

export const CONVERTER_VERSION = 2
const OPSET = 17
const MS_DOMAIN = 'com.microsoft'

export interface RawTensor { type: number, shape: number[], data: Uint8Array }

export interface BuildOptions {
  /** 'q4': Q4_0/Q4_1 linear weights stay 4-bit (MatMulNBits); 'f32': everything dequantized */
  weights: 'f32' | 'q4'
  /** MatMulNBits accuracy_level (0 = kernel default, 4 = int8 compute); ignored for 'f32' */
  accuracyLevel?: number
  metadata?: Record<string, string>
  onProgress?: (done: number, total: number) => void
}

/** [rows, cols] float32 matrix from ggml order (shape[0] = cols, contiguous). */
function matrix (t: RawTensor): Float32Array {
  return dequantize(t.type, t.data, t.shape.reduce((a, b) => a * b, 1))
}

function transpose (m: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(m.length)
  for (let r = 0; r < rows; r++) {
    const base = r * cols
    for (let c = 0; c < cols; c++) out[c * rows + r] = m[base + c]
  }
  return out
}

/**
 * llama's GGUF converter permutes the rows of Q and K (per head: [pairs][2] instead of [2][halves]) so that
 * ggml's interleaved RoPE applies; this puts each head's rows back in HF order (first halves, then second
 * halves), for rotate-half RoPE. Rows move whole, so it works on quantized rows as bytes.
 */
export function unpermuteRows (data: Uint8Array, rows: number, heads: number): Uint8Array {
  const rowBytes = data.length / rows
  const D = rows / heads
  const out = new Uint8Array(data.length)
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < D / 2; i++) {
      for (let j = 0; j < 2; j++) {
        const from = h * D + i * 2 + j
        const to = h * D + j * (D / 2) + i
        out.set(data.subarray(from * rowBytes, (from + 1) * rowBytes), to * rowBytes)
      }
    }
  }
  return out
}

export function buildDecoder (cfg: DecoderConfig, tensor: (name: string) => RawTensor | undefined, opts: BuildOptions): IModelProto {
  const g = new GraphBuilder()
  const { hidden: H, heads: A, kvHeads: KV, headDim: D } = cfg
  const total = cfg.layers + 2
  let done = 0
  const need = (name: string): RawTensor => {
    const t = tensor(name)
    if (t == null) throw new Error(`tensor ${name} is missing`)
    return t
  }
  const vector = (name: string): string => {
    const t = need(name)
    return g.init(floatTensor(name, [t.shape[0]], matrix(t)))
  }
  let usesMs = false

  /** x [.., K] times the ggml weight `name` ([K, N] in ggml order: N rows of K) → [.., N] */
  const linear = (x: string, name: string, out: string, rowHeads?: number): string => {
    const t = need(name)
    const [K, N] = t.shape
    let data = t.data
    if (rowHeads !== undefined) data = unpermuteRows(data, N, rowHeads)
    const q4 = opts.weights === 'q4' && (t.type === GGML_TYPE.Q4_0 || t.type === GGML_TYPE.Q4_1) && K % 32 === 0
    let y: string
    if (q4) {
      usesMs = true
      const r = repackQ4ForMatMulNBits(t.type, data, N, K)
      const blocks = K / 32
      const inputs = [
        g.init({ name: `${name}.q4`, dims: [N, blocks, 16], dataType: 2 /* UINT8 */, rawData: r.b }),
        g.init(floatTensor(`${name}.scales`, [N * blocks], r.scales))
      ]
      if (r.zeroPoints instanceof Float32Array) inputs.push(g.init(floatTensor(`${name}.zp`, [N * blocks], r.zeroPoints)))
      else if (r.zeroPoints instanceof Uint8Array) inputs.push(g.init({ name: `${name}.zp`, dims: [r.zeroPoints.length], dataType: 2, rawData: r.zeroPoints }))
      y = g.add('MatMulNBits', [x, ...inputs], `${out}/matmul`, { K, N, bits: 4, block_size: 32, accuracy_level: opts.accuracyLevel ?? 0 }, MS_DOMAIN)
    } else {
      const w = g.init(floatTensor(`${name}.t`, [K, N], transpose(matrix({ ...t, data }), N, K)))
      y = g.add('MatMul', [x, w], `${out}/matmul`)
    }
    const biasName = name.replace(/\.weight$/, '.bias')
    if (tensor(biasName) != null) {
      let bias = matrix(need(biasName))
      if (rowHeads !== undefined) bias = new Float32Array(unpermuteRows(new Uint8Array(bias.buffer), N, rowHeads).buffer)
      y = g.add('Add', [y, g.init(floatTensor(biasName, [N], bias))], `${out}/bias`)
    }
    return g.add('Identity', [y], out)
  }

  /** RMSNorm over the last axis, in the Pow/ReduceMean/Add/Sqrt/Div/Mul pattern ONNX Runtime fuses. */
  const rmsNorm = (x: string, weight: string, out: string): string => {
    const sq = g.add('Pow', [x, g.f32(2)], `${out}/pow`)
    const mean = g.add('ReduceMean', [sq], `${out}/mean`, { axes: [-1], keepdims: 1 })
    const rms = g.add('Sqrt', [g.add('Add', [mean, g.f32(cfg.eps)], `${out}/add_eps`)], `${out}/sqrt`)
    return g.add('Mul', [g.add('Div', [x, rms], `${out}/div`), vector(weight)], out)
  }

  // ---- shared: masks and rotary tables
  const bias = g.maskBias(io.inputIds, io.attentionMask, '/model/mask')
  const slidingBias = cfg.sliding != null ? g.maskBias(io.inputIds, io.attentionMask, '/model/mask_swa', cfg.sliding.window) : null
  const rotary = (theta: number, prefix: string, linearFactor: number): { cos: string, sin: string } => {
    const half = D / 2
    const inv = new Float32Array(half)
    for (let i = 0; i < half; i++) inv[i] = 1 / (Math.pow(theta, (2 * i) / D) * linearFactor)
    const pos = g.add('Unsqueeze', [g.add('Cast', [io.positionIds], `${prefix}/pos_f`, { to: DT.FLOAT }), g.i64([2])], `${prefix}/pos_bs1`)
    const freqs = g.add('Mul', [pos, g.init(floatTensor(`${prefix.slice(1).replace(/\//g, '.')}.inv_freq`, [half], inv))], `${prefix}/freqs`)
    const emb = g.add('Concat', [freqs, freqs], `${prefix}/emb`, { axis: -1 })
    return {
      cos: g.add('Unsqueeze', [g.add('Cos', [emb], `${prefix}/cos_bsd`), g.i64([1])], `${prefix}/cos`),
      sin: g.add('Unsqueeze', [g.add('Sin', [emb], `${prefix}/sin_bsd`), g.i64([1])], `${prefix}/sin`)
    }
  }
  const ropeGlobal = rotary(cfg.rope.theta, '/model/rotary', cfg.rope.linearFactor)
  const ropeLocal = cfg.sliding != null ? rotary(cfg.sliding.theta, '/model/rotary_swa', cfg.sliding.linearFactor) : null
  const applyRope = (x: string, r: { cos: string, sin: string }, out: string): string => {
    const x1 = g.add('Slice', [x, g.i64([0]), g.i64([D / 2]), g.i64([-1])], `${out}/x1`)
    const x2 = g.add('Slice', [x, g.i64([D / 2]), g.i64([D]), g.i64([-1])], `${out}/x2`)
    const rotated = g.add('Concat', [g.add('Neg', [x2], `${out}/neg_x2`), x1], `${out}/rotate_half`, { axis: -1 })
    return g.add('Add', [g.add('Mul', [x, r.cos], `${out}/x_cos`), g.add('Mul', [rotated, r.sin], `${out}/rot_sin`)], out)
  }

  // ---- embeddings
  const embd = need('token_embd.weight')
  const embdName = g.init(floatTensor('token_embd.weight', [cfg.vocab, H], matrix(embd)))
  let h = g.add('Gather', [embdName, io.inputIds], '/model/embed/tokens', { axis: 0 })
  if (cfg.embedScale !== 1) h = g.add('Mul', [h, g.f32(cfg.embedScale)], '/model/embed/scaled')
  opts.onProgress?.(++done, total)

  const group = A / KV
  for (let i = 0; i < cfg.layers; i++) {
    const p = `blk.${i}`
    const n = `/model/layers.${i}`
    const local = cfg.sliding != null && (i + 1) % cfg.sliding.pattern !== 0
    const x = rmsNorm(h, `${p}.attn_norm.weight`, `${n}/input_layernorm`)
    const heads = (t: string, count: number, name: string): string => {
      let y = g.add('Reshape', [t, g.i64([0, 0, count, D])], `${n}/attn/${name}_bsad`)
      if (cfg.qkNorm && name !== 'v') y = rmsNorm(y, `${p}.attn_${name}_norm.weight`, `${n}/attn/${name}_norm`)
      return g.add('Transpose', [y], `${n}/attn/${name}_heads`, { perm: [0, 2, 1, 3] })
    }
    const r = local ? ropeLocal as { cos: string, sin: string } : ropeGlobal
    const q = applyRope(heads(linear(x, `${p}.attn_q.weight`, `${n}/attn/q_proj`, cfg.unpermuteQK ? A : undefined), A, 'q'), r, `${n}/attn/q_rope`)
    const k = applyRope(heads(linear(x, `${p}.attn_k.weight`, `${n}/attn/k_proj`, cfg.unpermuteQK ? KV : undefined), KV, 'k'), r, `${n}/attn/k_rope`)
    const v = heads(linear(x, `${p}.attn_v.weight`, `${n}/attn/v_proj`), KV, 'v')
    const kAll = g.add('Concat', [io.pastKey(i), k], io.presentKey(i), { axis: 2 })
    const vAll = g.add('Concat', [io.pastValue(i), v], io.presentValue(i), { axis: 2 })
    const expand = (t: string, name: string): string => group === 1
      ? t
      : g.add('Reshape', [g.add('Expand', [g.add('Unsqueeze', [t, g.i64([2])], `${n}/attn/${name}_unsq`), g.i64([1, 1, group, 1, 1])], `${n}/attn/${name}_expanded`),
        g.i64([0, A, -1, D])], `${n}/attn/${name}_gqa`)
    const kT = g.add('Transpose', [expand(kAll, 'k')], `${n}/attn/k_t`, { perm: [0, 1, 3, 2] })
    const scores = g.add('Add', [
      g.add('Mul', [g.add('MatMul', [q, kT], `${n}/attn/qk`), g.f32(cfg.attentionScale)], `${n}/attn/qk_scaled`),
      local ? slidingBias as string : bias
    ], `${n}/attn/scores`)
    const probs = g.add('Softmax', [scores], `${n}/attn/probs`, { axis: -1 })
    const ctxHeads = g.add('MatMul', [probs, expand(vAll, 'v')], `${n}/attn/ctx_heads`)
    const ctx = g.add('Reshape', [g.add('Transpose', [ctxHeads], `${n}/attn/ctx_bsad`, { perm: [0, 2, 1, 3] }), g.i64([0, 0, A * D])], `${n}/attn/ctx`)
    let attnOut = linear(ctx, `${p}.attn_output.weight`, `${n}/attn/o_proj`)
    if (cfg.sandwichNorms) attnOut = rmsNorm(attnOut, `${p}.post_attention_norm.weight`, `${n}/post_attention_norm`)
    h = g.add('Add', [h, attnOut], `${n}/resid_attn`)

    const y = rmsNorm(h, `${p}.ffn_norm.weight`, `${n}/post_attention_layernorm`)
    const gate = linear(y, `${p}.ffn_gate.weight`, `${n}/mlp/gate_proj`)
    const up = linear(y, `${p}.ffn_up.weight`, `${n}/mlp/up_proj`)
    let act: string
    if (cfg.activation === 'silu') {
      act = g.add('Mul', [gate, g.add('Sigmoid', [gate], `${n}/mlp/sigmoid`)], `${n}/mlp/silu`)
    } else {
      // 0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 x³)))
      const cube = g.add('Mul', [g.add('Mul', [gate, gate], `${n}/mlp/x2`), gate], `${n}/mlp/x3`)
      const inner = g.add('Mul', [g.add('Add', [gate, g.add('Mul', [cube, g.f32(0.044715)], `${n}/mlp/cx3`)], `${n}/mlp/poly`), g.f32(Math.sqrt(2 / Math.PI))], `${n}/mlp/inner`)
      const t = g.add('Add', [g.add('Tanh', [inner], `${n}/mlp/tanh`), g.f32(1)], `${n}/mlp/tanh_1p`)
      act = g.add('Mul', [g.add('Mul', [gate, g.f32(0.5)], `${n}/mlp/half_x`), t], `${n}/mlp/gelu`)
    }
    let mlpOut = linear(g.add('Mul', [act, up], `${n}/mlp/act_up`), `${p}.ffn_down.weight`, `${n}/mlp/down_proj`)
    if (cfg.sandwichNorms) mlpOut = rmsNorm(mlpOut, `${p}.post_ffw_norm.weight`, `${n}/post_feedforward_norm`)
    h = g.add('Add', [h, mlpOut], `${n}/resid_mlp`)
    opts.onProgress?.(++done, total)
  }

  // ---- final norm and LM head, last position only
  const last = g.add('Gather', [h, g.i64([-1], true)], '/model/norm/last_position', { axis: 1 })
  const hf = rmsNorm(last, 'output_norm.weight', '/model/norm')
  let logits2d: string
  if (cfg.tiedEmbeddings) {
    logits2d = g.add('Gemm', [hf, embdName], '/lm_head/gemm', { transB: 1 })
  } else {
    logits2d = linear(hf, 'output.weight', '/lm_head/proj')
  }
  g.add('Unsqueeze', [logits2d, g.i64([1])], io.logits)
  opts.onProgress?.(++done, total)

  const inputs: IValueInfoProto[] = [
    valueInfo(io.inputIds, DT.INT64, [DIMS.batch, DIMS.seq]),
    valueInfo(io.attentionMask, DT.INT64, [DIMS.batch, DIMS.total]),
    valueInfo(io.positionIds, DT.INT64, [DIMS.batch, DIMS.seq])
  ]
  const outputs: IValueInfoProto[] = [valueInfo(io.logits, DT.FLOAT, [DIMS.batch, 1, cfg.vocab])]
  for (let i = 0; i < cfg.layers; i++) {
    inputs.push(valueInfo(io.pastKey(i), DT.FLOAT, [DIMS.batch, KV, DIMS.past, D]), valueInfo(io.pastValue(i), DT.FLOAT, [DIMS.batch, KV, DIMS.past, D]))
    outputs.push(valueInfo(io.presentKey(i), DT.FLOAT, [DIMS.batch, KV, DIMS.total, D]), valueInfo(io.presentValue(i), DT.FLOAT, [DIMS.batch, KV, DIMS.total, D]))
  }
  const metadataProps = Object.entries({ 'blockmesh.converter': String(CONVERTER_VERSION), 'blockmesh.architecture': cfg.architecture, ...opts.metadata }).map(([key, value]) => ({ key, value }))
  return {
    irVersion: IR_VERSION,
    producerName: 'blockmesh-gguf',
    producerVersion: String(CONVERTER_VERSION),
    domain: 'dev.blockmesh',
    modelVersion: 1,
    docString: `${cfg.architecture} decoder converted from GGUF by blockmesh`,
    opsetImport: [{ domain: '', version: OPSET }, ...(usesMs ? [{ domain: MS_DOMAIN, version: 1 }] : [])],
    metadataProps,
    graph: { name: `blockmesh-${cfg.architecture}`, node: g.nodes, initializer: g.inits as ITensorProto[], input: inputs, output: outputs }
  }
}

