/**
 * Builds an ONNX decoder from a GGUF's weights, in the optimum IO layout the engine, splitter and vDAGs
 * serve (`input_ids`, `attention_mask`, `position_ids`, `past_key_values.N.key|value` → `logits`,
 * `present.N.key|value`), with node names `/model/layers.N/…` so the splitter can cut it by layer.
 *
 * Per layer: RMSNorm → one packed Q/K/V projection (optional bias, optional per-head Q/K RMSNorm) →
 * rotary embedding (HF rotate-half layout) → attention with the KV cache and grouped-query heads →
 * output projection, residual; RMSNorm → packed gate/up projection → SiLU or tanh-GELU → down, residual;
 * gemma3's extra post-norms and sliding-window layers. Logits are computed for the last position only
 * (`[batch, 1, vocab]`): that is all decoding needs, and it saves the LM head for every prompt position.
 *
 * ONNX opset 23's RMSNormalization, RotaryEmbedding and Attention carry a layer in ~15 nodes instead of
 * ~45 (ONNX Runtime's per-node cost dominated SmolLM2's decode step; `npm run bench -- --only graph` measures it).
 * Quantized weights keep their exact `MatMulNBits` / `GatherBlockQuantized` forms (nbits.ts) by mode:
 * 'q8' (default) and 'int8' all of them, 'q4' the 4-bit ones; the rest is dequantized to float32.
 */
import { DT, FloatAttr, floatTensor, valueInfo } from '../onnx.ts'
import type { IModelProto, ITensorProto, IValueInfoProto } from '../onnx.ts'
import { DIMS, io } from '../graph.ts'
import { GraphBuilder } from '../graph-builder.ts'
import { dequantize } from './quants.ts'
import { hasNBitsForm, toGatherBlockQuantized, toMatMulNBits } from './nbits.ts'
import type { DecoderConfig } from './arch.ts'

export const CONVERTER_VERSION = 5
/** opset 23: RMSNormalization, RotaryEmbedding, Attention (IR version 11) */
const OPSET = 23
const IR = 11
const MS_DOMAIN = 'com.microsoft'

export interface RawTensor { type: number, shape: number[], data: Uint8Array }

export interface BuildOptions {
  /**
   * 'q4': weights with an exact 4-bit MatMulNBits form stay quantized and are computed exactly (float
   * activations); 'q8': 8-bit forms (Q8_0, Q5_x, Q6_K) stay quantized too, computed with int8 activations
   * (ONNX Runtime's fast 8-bit kernel, like llama.cpp's Q8 dot products: not exact); 'int8': as q8, and the
   * 4-bit weights too are computed with int8 activations (fastest, furthest from exact); 'f32': all float32
   */
  weights: 'f32' | 'q4' | 'q8' | 'int8'
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
  const { heads: A, kvHeads: KV, headDim: D } = cfg
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

  /** Σ over each block of `bs` along x's last axis ([.., K] → [.., K/bs]), once per tensor and block size */
  const sums = new Map<string, string>()
  const blockSums = (x: string, K: number, bs: number): string => {
    const key = `${x}|${bs}`
    let y = sums.get(key)
    if (y == null) {
      y = g.add('ReduceSum', [g.add('Reshape', [x, g.i64([0, 0, K / bs, bs])], `${x}/blocks${bs}`), g.i64([-1])], `${x}/block_sums${bs}`, { keepdims: 0 })
      sums.set(key, y)
    }
    return y
  }

  interface Part { name: string, rowHeads?: number }
  /**
   * x [.., K] times the ggml weights `parts` (each [K, N_i] in ggml order: N_i rows of K) → one output per
   * part. Parts of one type are packed into one matrix (rows stacked) and split after: one MatMul(NBits)
   * instead of several.
   */
  const linear = (x: string, parts: Part[], out: string, outs: string[]): string[] => {
    const ts = parts.map(p => need(p.name))
    const K = ts[0].shape[0]
    const Ns = ts.map(t => t.shape[1])
    const N = Ns.reduce((a, b) => a + b, 0)
    const datas = ts.map((t, i) => parts[i].rowHeads !== undefined ? unpermuteRows(t.data, t.shape[1], parts[i].rowHeads as number) : t.data)
    const stack = (arrays: Uint8Array[]): Uint8Array => {
      if (arrays.length === 1) return arrays[0]
      const all = new Uint8Array(arrays.reduce((a, b) => a + b.length, 0))
      let at = 0
      for (const a of arrays) { all.set(a, at); at += a.length }
      return all
    }
    const sameType = ts.every(t => t.type === ts[0].type)
    const nb = opts.weights !== 'f32' && sameType ? toMatMulNBits(ts[0].type, stack(datas), N, K, { maxBits: opts.weights === 'q4' ? 4 : 8 }) : null
    const base = parts.length === 1 ? parts[0].name : parts[0].name.replace(/\.[^.]+\.weight$/, `.${parts.map(p => /\.([^.]+)\.weight$/.exec(p.name)?.[1] ?? '').join('_')}.weight`)
    const hasBias = parts.map(p => tensor(p.name.replace(/\.weight$/, '.bias')) != null)
    const biased = hasBias.some(Boolean)
    const single = parts.length === 1 && !biased
    let y = single ? outs[0] : `${out}/matmul`
    if (nb != null) {
      usesMs = true
      const blocks = K / nb.blockSize
      const inputs = [
        g.init({ name: `${base}.nbits`, dims: [N, blocks, nb.blockSize * nb.bits / 8], dataType: 2 /* UINT8 */, rawData: nb.b }),
        g.init(floatTensor(`${base}.scales`, [N * blocks], nb.scales))
      ]
      // 8-bit codes run fast only with int8 activations (accuracy level 4); at level 0 ORT dequantizes the whole weight each call
      const attrs = { K, N, bits: nb.bits, block_size: nb.blockSize, accuracy_level: opts.accuracyLevel ?? (nb.bits === 8 || opts.weights === 'int8' ? 4 : 0) }
      if (nb.offsets != null) {
        const q = g.add('MatMulNBits', [x, ...inputs], `${out}/matmul_q`, attrs, MS_DOMAIN)
        const off = g.add('MatMul', [blockSums(x, K, nb.blockSize), g.init(floatTensor(`${base}.offsets`, [blocks, N], nb.offsets))], `${out}/offsets`)
        y = g.add('Add', [q, off], y)
      } else {
        y = g.add('MatMulNBits', [x, ...inputs], y, attrs, MS_DOMAIN)
      }
    } else {
      const w = new Float32Array(K * N)
      let col = 0
      ts.forEach((t, i) => {
        const m = matrix({ ...t, data: datas[i] })
        for (let r = 0; r < Ns[i]; r++) for (let c = 0; c < K; c++) w[c * N + col + r] = m[r * K + c]
        col += Ns[i]
      })
      y = g.add('MatMul', [x, g.init(floatTensor(`${base}.t`, [K, N], w))], y)
    }
    if (biased) {
      const bias = new Float32Array(N)
      let at = 0
      parts.forEach((p, i) => {
        if (hasBias[i]) {
          let b = matrix(need(p.name.replace(/\.weight$/, '.bias')))
          if (p.rowHeads !== undefined) b = new Float32Array(unpermuteRows(new Uint8Array(b.buffer), Ns[i], p.rowHeads).buffer)
          bias.set(b, at)
        }
        at += Ns[i]
      })
      y = g.add('Add', [y, g.init(floatTensor(base.replace(/\.weight$/, '.bias'), [N], bias))], parts.length === 1 ? outs[0] : `${out}/bias`)
    }
    if (parts.length === 1) return [y]
    return g.addMulti('Split', [y, g.i64(Ns)], outs, `${out}/split`, { axis: -1 })
  }

  const rmsNorm = (x: string, weight: string, out: string): string =>
    g.add('RMSNormalization', [x, vector(weight)], out, { axis: -1, epsilon: new FloatAttr(cfg.eps) })

  // ---- shared: masks and rotary tables
  const bias = g.maskBias(io.inputIds, io.attentionMask, '/model/mask')
  const slidingBias = cfg.sliding != null ? g.maskBias(io.inputIds, io.attentionMask, '/model/mask_swa', cfg.sliding.window) : null
  /** cos/sin caches [positions, D/2] for RotaryEmbedding, computed like HF: inv_freq and position·inv_freq in float32 */
  const rotary = (theta: number, prefix: string, linearFactor: number): { cos: string, sin: string } => {
    const half = D / 2
    const positions = cfg.contextLength
    const cos = new Float32Array(positions * half)
    const sin = new Float32Array(positions * half)
    for (let i = 0; i < half; i++) {
      const inv = Math.fround(1 / (Math.pow(theta, (2 * i) / D) * linearFactor))
      for (let p = 0; p < positions; p++) {
        const f = Math.fround(p * inv)
        cos[p * half + i] = Math.cos(f)
        sin[p * half + i] = Math.sin(f)
      }
    }
    const name = prefix.slice(1).replace(/\//g, '.')
    return { cos: g.init(floatTensor(`${name}.cos_cache`, [positions, half], cos)), sin: g.init(floatTensor(`${name}.sin_cache`, [positions, half], sin)) }
  }
  const ropeGlobal = rotary(cfg.rope.theta, '/model/rotary', cfg.rope.linearFactor)
  const ropeLocal = cfg.sliding != null ? rotary(cfg.sliding.theta, '/model/rotary_swa', cfg.sliding.linearFactor) : null
  const applyRope = (x: string, r: { cos: string, sin: string }, heads: number, out: string): string =>
    g.add('RotaryEmbedding', [x, r.cos, r.sin, io.positionIds], out, { num_heads: heads })

  // ---- embeddings
  const embd = need('token_embd.weight')
  const head = cfg.tiedEmbeddings ? 'token_embd.weight' : 'output.weight'
  const headT = need(head)
  const maxBits = opts.weights === 'q4' ? 4 : 8
  const headQuantized = opts.weights !== 'f32' && hasNBitsForm(headT.type, { maxBits })
  // the table stays quantized (GatherBlockQuantized) unless a float32 copy is needed anyway for a tied float LM head
  const gq = opts.weights !== 'f32' && (!cfg.tiedEmbeddings || headQuantized) ? toGatherBlockQuantized(embd.type, embd.data, cfg.vocab, cfg.hidden, { maxBits: 8 }) : null
  let embdName = ''
  let h: string
  if (gq != null) {
    usesMs = true
    const data = g.init({ name: 'token_embd.weight.gather_codes', dims: gq.dataDims, dataType: 2 /* UINT8 */, rawData: gq.data })
    const scales = g.init(floatTensor('token_embd.weight.gather_scales', gq.scalesDims, gq.scales))
    h = g.add('GatherBlockQuantized', [data, io.inputIds, scales], '/model/embed/tokens_q', { ...gq.attributes }, MS_DOMAIN)
    if (gq.offsets != null) {
      const blocks = cfg.hidden / gq.blockSize
      const off = g.add('Unsqueeze', [g.add('Gather', [g.init(floatTensor('token_embd.weight.gather_offsets', gq.scalesDims, gq.offsets)), io.inputIds], '/model/embed/offsets', { axis: 0 }), g.i64([-1])], '/model/embed/offsets_b')
      const rows = g.add('Add', [g.add('Reshape', [h, g.i64([0, 0, blocks, gq.blockSize])], '/model/embed/blocks'), off], '/model/embed/with_offsets')
      h = g.add('Reshape', [rows, g.i64([0, 0, cfg.hidden])], '/model/embed/tokens')
    }
  } else {
    embdName = g.init(floatTensor('token_embd.weight', [cfg.vocab, cfg.hidden], matrix(embd)))
    h = g.add('Gather', [embdName, io.inputIds], '/model/embed/tokens', { axis: 0 })
  }
  if (cfg.embedScale !== 1) h = g.add('Mul', [h, g.f32(cfg.embedScale)], '/model/embed/scaled')
  opts.onProgress?.(++done, total)

  for (let i = 0; i < cfg.layers; i++) {
    const p = `blk.${i}`
    const n = `/model/layers.${i}`
    const local = cfg.sliding != null && (i + 1) % cfg.sliding.pattern !== 0
    const x = rmsNorm(h, `${p}.attn_norm.weight`, `${n}/input_layernorm`)
    let [q, k, v] = linear(x, [
      { name: `${p}.attn_q.weight`, rowHeads: cfg.unpermuteQK ? A : undefined },
      { name: `${p}.attn_k.weight`, rowHeads: cfg.unpermuteQK ? KV : undefined },
      { name: `${p}.attn_v.weight` }
    ], `${n}/attn/qkv_proj`, [`${n}/attn/q_proj`, `${n}/attn/k_proj`, `${n}/attn/v_proj`])
    if (cfg.qkNorm) {
      const headNorm = (t: string, count: number, name: 'q' | 'k'): string => {
        const y = rmsNorm(g.add('Reshape', [t, g.i64([0, 0, count, D])], `${n}/attn/${name}_bsad`), `${p}.attn_${name}_norm.weight`, `${n}/attn/${name}_norm`)
        return g.add('Reshape', [y, g.i64([0, 0, count * D])], `${n}/attn/${name}_normed`)
      }
      q = headNorm(q, A, 'q')
      k = headNorm(k, KV, 'k')
    }
    const r = local ? ropeLocal as { cos: string, sin: string } : ropeGlobal
    q = applyRope(q, r, A, `${n}/attn/q_rope`)
    k = applyRope(k, r, KV, `${n}/attn/k_rope`)
    // this run's keys and values alone, in the cache's layout, for engines that keep their own cache (with
    // sliding windows too: the window counts the positions the mask marks, so a cache's room does not shrink it)
    const step = (t: string, out: string, name: string): string[] => g.addMulti('Transpose', [g.add('Reshape', [t, g.i64([0, 0, KV, D])], `${n}/attn/${name}_step_bsad`)], [out], `${n}/attn/${name}_step`, { perm: [0, 2, 1, 3] })
    step(k, io.stepKey(i), 'k')
    step(v, io.stepValue(i), 'v')
    const [ctx] = g.addMulti('Attention', [q, k, v, local ? slidingBias as string : bias, io.pastKey(i), io.pastValue(i)],
      [`${n}/attn/ctx`, io.presentKey(i), io.presentValue(i)], `${n}/attn/attention`,
      { q_num_heads: A, kv_num_heads: KV, scale: new FloatAttr(cfg.attentionScale) })
    let [attnOut] = linear(ctx, [{ name: `${p}.attn_output.weight` }], `${n}/attn/o_proj`, [`${n}/attn/o_proj`])
    if (cfg.sandwichNorms) attnOut = rmsNorm(attnOut, `${p}.post_attention_norm.weight`, `${n}/post_attention_norm`)
    h = g.add('Add', [h, attnOut], `${n}/resid_attn`)

    const y = rmsNorm(h, `${p}.ffn_norm.weight`, `${n}/post_attention_layernorm`)
    const [gate, up] = linear(y, [{ name: `${p}.ffn_gate.weight` }, { name: `${p}.ffn_up.weight` }], `${n}/mlp/gate_up_proj`, [`${n}/mlp/gate_proj`, `${n}/mlp/up_proj`])
    let act: string
    if (cfg.activation === 'silu') {
      act = g.add('Mul', [gate, g.add('Sigmoid', [gate], `${n}/mlp/sigmoid`)], `${n}/mlp/silu`)
    } else {
      act = g.add('Gelu', [gate], `${n}/mlp/gelu`, { approximate: 'tanh' })
    }
    let [mlpOut] = linear(g.add('Mul', [act, up], `${n}/mlp/act_up`), [{ name: `${p}.ffn_down.weight` }], `${n}/mlp/down_proj`, [`${n}/mlp/down_proj`])
    if (cfg.sandwichNorms) mlpOut = rmsNorm(mlpOut, `${p}.post_ffw_norm.weight`, `${n}/post_feedforward_norm`)
    h = g.add('Add', [h, mlpOut], `${n}/resid_mlp`)
    opts.onProgress?.(++done, total)
  }

  // ---- final norm and LM head, last position only
  const last = g.add('Gather', [h, g.i64([-1], true)], '/model/norm/last_position', { axis: 1 })
  const hf = rmsNorm(last, 'output_norm.weight', '/model/norm')
  const [logits2d] = headQuantized
    ? linear(hf, [{ name: head }], '/lm_head/proj', ['/lm_head/logits'])
    : cfg.tiedEmbeddings
      ? [g.add('Gemm', [hf, embdName], '/lm_head/logits', { transB: 1 })]
      : linear(hf, [{ name: head }], '/lm_head/proj', ['/lm_head/logits'])
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
  for (let i = 0; i < cfg.layers; i++) outputs.push(valueInfo(io.stepKey(i), DT.FLOAT, [DIMS.batch, KV, DIMS.seq, D]), valueInfo(io.stepValue(i), DT.FLOAT, [DIMS.batch, KV, DIMS.seq, D]))
  const metadataProps = Object.entries({ 'blockmesh.converter': String(CONVERTER_VERSION), 'blockmesh.architecture': cfg.architecture, 'blockmesh.hidden_size': String(cfg.hidden), ...opts.metadata }).map(([key, value]) => ({ key, value }))
  return {
    irVersion: IR,
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
