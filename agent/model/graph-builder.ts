import { DT, FloatAttr, floatTensor, int64Tensor, node } from './onnx.ts'
import type { INodeProto, ITensorProto } from './onnx.ts'

export const MASK_NEG = -1e9

type Attrs = Record<string, number | number[] | string | FloatAttr>

/** Nodes and initializers of one ONNX graph under construction; every node is named after its output. */
export class GraphBuilder {
  readonly nodes: INodeProto[] = []
  readonly inits: ITensorProto[] = []
  private readonly consts = new Map<string, string>()

  add (op: string, inputs: string[], output: string, attrs: Attrs = {}, domain?: string): string {
    const n = node(op, inputs, [output], output, attrs as Parameters<typeof node>[4])
    if (domain !== undefined) n.domain = domain
    this.nodes.push(n)
    return output
  }

  /** A node with several outputs. */
  addMulti (op: string, inputs: string[], outputs: string[], name: string, attrs: Attrs = {}, domain?: string): string[] {
    const n = node(op, inputs, outputs, name, attrs as Parameters<typeof node>[4])
    if (domain !== undefined) n.domain = domain
    this.nodes.push(n)
    return outputs
  }

  init (t: ITensorProto): string {
    this.inits.push(t)
    return t.name as string
  }

  /** An int64 constant, shared by value. */
  i64 (values: number[], scalar = false): string {
    const key = `i64:${scalar ? 's' : 'v'}:${values.join(',')}`
    let name = this.consts.get(key)
    if (name == null) {
      name = `const.i64.${scalar ? 's' : 'v'}.${values.join('_').replace(/-/g, 'm')}`
      this.inits.push(int64Tensor(name, scalar ? [] : [values.length], values))
      this.consts.set(key, name)
    }
    return name
  }

  /** A float scalar constant, shared by value. */
  f32 (value: number): string {
    const key = `f32:${value}`
    let name = this.consts.get(key)
    if (name == null) {
      name = `const.f32.${this.consts.size}`
      this.inits.push(floatTensor(name, [], new Float32Array([value])))
      this.consts.set(key, name)
    }
    return name
  }

  /**
   * The additive attention bias [batch, 1, seq, total] shared by all layers: query j (index past + j of the
   * concatenation) may see key k when k <= past + j and attention_mask is 1 there, and — with `window`
   * (sliding-window attention) — when fewer than `window` of the row's positions lie between them: the
   * window counts the positions attention_mask marks (a running count along the row), not indices, so left
   * padding and an engine's unused cache room between the past and the new positions do not shrink it.
   */
  maskBias (inputIds: string, attentionMask: string, prefix: string, window?: number): string {
    const S = this.add('Gather', [this.add('Shape', [inputIds], `${prefix}/ids_shape`), this.i64([1], true)], `${prefix}/S`, { axis: 0 })
    const T = this.add('Gather', [this.add('Shape', [attentionMask], `${prefix}/mask_shape`), this.i64([1], true)], `${prefix}/T`, { axis: 0 })
    const P = this.add('Sub', [T, S], `${prefix}/P`)
    const one = this.i64([1], true)
    const qidx = this.add('Range', [P, T, one], `${prefix}/qidx`)
    const kidx = this.add('Range', [this.i64([0], true), T, one], `${prefix}/kidx`)
    const kRow = this.add('Unsqueeze', [kidx, this.i64([0])], `${prefix}/k_row`)
    const qCol = this.add('Unsqueeze', [qidx, this.i64([1])], `${prefix}/q_col`)
    const causal = this.add('LessOrEqual', [kRow, qCol], `${prefix}/causal`)
    const padOk = this.add('Unsqueeze', [this.add('Cast', [attentionMask], `${prefix}/mask_bool`, { to: DT.BOOL }), this.i64([1, 2])], `${prefix}/mask_b11t`)
    let allowed = this.add('And', [this.add('Unsqueeze', [causal, this.i64([0, 1])], `${prefix}/causal_11st`), padOk], window === undefined ? `${prefix}/allowed` : `${prefix}/allowed_causal`)
    if (window !== undefined) {
      // the count of marked positions up to each index [batch, total], the queries' counts [batch, seq]
      const count = this.add('CumSum', [attentionMask, this.i64([1], true)], `${prefix}/count`)
      const qCount = this.add('Gather', [count, qidx], `${prefix}/q_count`, { axis: 1 })
      const start = this.add('Sub', [this.add('Unsqueeze', [qCount, this.i64([2])], `${prefix}/q_count_bs1`), this.i64([window], true)], `${prefix}/window_start`)
      const recent = this.add('Greater', [this.add('Unsqueeze', [count, this.i64([1])], `${prefix}/count_b1t`), start], `${prefix}/recent`)
      allowed = this.add('And', [allowed, this.add('Unsqueeze', [recent, this.i64([1])], `${prefix}/recent_b1st`)], `${prefix}/allowed_window`)
    }
    return this.add('Where', [allowed, this.f32(0), this.f32(MASK_NEG)], `${prefix}/bias`)
  }
}
