import { createHash } from 'node:crypto'
import { DT, decodeModel, encodeModel, onnx, valueInfo } from '../model/onnx.ts'
import type { IModelProto, INodeProto, ITensorProto, IValueInfoProto, ModelProto } from '../model/onnx.ts'
import { HIDDEN_IN, HIDDEN_OUT } from '../executor/stage-io.ts'

export { HIDDEN_IN, HIDDEN_OUT }

/**
 * Cuts a decoder ONNX model into pipeline stages by layer ranges. Works on
 * the generated models and on Hugging Face optimum-style exports whose node
 * names carry the layer index (`/h.3/…`, `/transformer/h.3/…`,
 * `/model/layers.3/…`). Each stage is a self-contained ONNX model:
 *   stage 0:        input_ids, attention_mask, position_ids, its past KV → hidden_states_out, its present KV
 *   middle stages:  hidden_states, attention_mask (…), its past KV      → hidden_states_out, its present KV
 *   last stage:     hidden_states, attention_mask (…), its past KV      → logits, its present KV
 * plus, where the model gives them, its layers' step keys and values (present.N.key_step / value_step:
 * the run's own positions, which let the stage worker keep its cache; agent/executor/kv-cache.ts).
 * Nodes shared by all layers (the attention mask) are copied into every stage
 * that needs them; where they read input_ids only for its shape, a later
 * stage reads the shape of hidden_states instead (same [batch, seq] prefix).
 */


export class SplitError extends Error {
  readonly code = 'split_failed'
  constructor (message: string) {
    super(message)
    this.name = 'SplitError'
  }
}

const LAYER_PATTERNS = [/(?:^|\/)h\.(\d+)\//, /\/layers\.(\d+)\//, /\/block\.(\d+)\//]

export function layerOfNode (name: string): number | null {
  for (const re of LAYER_PATTERNS) {
    const m = re.exec(name)
    if (m != null) return Number(m[1])
  }
  return null
}

interface GraphIndex {
  model: ModelProto
  nodes: INodeProto[]
  producer: Map<string, number>
  initializers: Map<string, ITensorProto>
  inputs: Map<string, IValueInfoProto>
  outputs: Map<string, IValueInfoProto>
  layerOf: Array<number | 'pre' | 'post'>
  layers: number
}

function tensorBytes (t: ITensorProto): number {
  if (t.rawData != null) return t.rawData.length
  const n = (t.dims ?? []).reduce((a: number, d) => a * Number(d), 1)
  return n * (t.dataType === DT.INT64 ? 8 : 4)
}

export function indexGraph (model: ModelProto): GraphIndex {
  const g = model.graph
  if (g == null) throw new SplitError('the model has no graph')
  const nodes = g.node ?? []
  const producer = new Map<string, number>()
  nodes.forEach((n, i) => { for (const o of n.output ?? []) producer.set(o, i) })
  const initializers = new Map((g.initializer ?? []).map(t => [t.name as string, t]))
  const inputs = new Map((g.input ?? []).map(v => [v.name as string, v]))
  const outputs = new Map((g.output ?? []).map(v => [v.name as string, v]))
  const explicit = nodes.map(n => layerOfNode(n.name ?? ''))
  const layers = explicit.reduce<number>((m, l) => l == null ? m : Math.max(m, l + 1), 0)
  if (layers === 0) throw new SplitError('no layers found: node names carry no layer index (/h.N/, /layers.N/, /block.N/)')
  // a node outside any layer is "post" when it depends on a layer, else "pre"
  const dependsOnLayer = new Array<boolean>(nodes.length).fill(false)
  const layerOf: Array<number | 'pre' | 'post'> = []
  nodes.forEach((n, i) => {
    const own = explicit[i]
    const fromLayer = (n.input ?? []).some(t => { const p = producer.get(t); return p != null && p < i && (explicit[p] != null || dependsOnLayer[p]) })
    dependsOnLayer[i] = own != null || fromLayer
    layerOf.push(own ?? (fromLayer ? 'post' : 'pre'))
  })
  return { model, nodes, producer, initializers, inputs, outputs, layerOf, layers }
}

/**
 * Parameter bytes per layer, before the first layer (embeddings) and after the last (final norm, LM
 * head). With `perStep`, the bytes a decode step reads instead, which is what a stage's step costs on
 * weight-bound hardware: an embedding table read by a Gather costs one row per token, so it counts
 * nothing, and a table the LM head shares with the embedding (tied weights) counts where the head's
 * MatMul reads it. Counting the table as the embedding's, as plain bytes do, gave the first stage too few
 * layers and the last the whole LM head on top (SmolLM2: a fifth of the model's bytes).
 */
export function parameterBytes (ix: GraphIndex, opts: { perStep?: boolean } = {}): StepCosts {
  const perLayer = new Array<number>(ix.layers).fill(0)
  let pre = 0
  let post = 0
  const counted = new Set<string>()
  ix.nodes.forEach((n, i) => {
    for (const [k, t] of (n.input ?? []).entries()) {
      const init = ix.initializers.get(t)
      if (init == null || counted.has(t) || tensorBytes(init) < 64) continue
      // a gather's table (Gather's data, GatherBlockQuantized's codes and scales) is read one row per token
      if (opts.perStep === true && (n.opType === 'Gather' || n.opType === 'GatherBlockQuantized') && k !== 1) continue
      counted.add(t)
      const where = ix.layerOf[i]
      if (where === 'pre') pre += tensorBytes(init)
      else if (where === 'post') post += tensorBytes(init)
      else perLayer[where] += tensorBytes(init)
    }
  })
  return { perLayer, pre, post }
}

/** What a balance weighs: the cost of each layer, and of the parts before (embeddings) and after (final norm, LM head) them. */
export interface StepCosts { perLayer: number[], pre: number, post: number }

export function balanceLayers (bytes: StepCosts, worldSize: number, weights?: number[]): Array<[number, number]> {
  const L = bytes.perLayer.length
  if (!Number.isInteger(worldSize) || worldSize < 1) throw new SplitError('world_size must be a positive integer')
  if (worldSize > L) throw new SplitError(`world_size ${worldSize} exceeds the model's ${L} layers`)
  const w = weights ?? new Array<number>(worldSize).fill(1)
  if (w.length !== worldSize || w.some(x => !(x > 0))) throw new SplitError('capacity weights must be one positive number per stage')
  const prefix = [0]
  for (const b of bytes.perLayer) prefix.push(prefix[prefix.length - 1] + b)
  const cost = (s: number, a: number, b: number): number =>
    (prefix[b] - prefix[a] + (s === 0 ? bytes.pre : 0) + (s === worldSize - 1 ? bytes.post : 0)) / w[s]
  // best[s][i]: minimal max cost placing layers [0, i) on stages [0, s]
  const best = Array.from({ length: worldSize }, () => new Array<number>(L + 1).fill(Infinity))
  const cut = Array.from({ length: worldSize }, () => new Array<number>(L + 1).fill(0))
  for (let i = 1; i <= L; i++) best[0][i] = cost(0, 0, i)
  for (let s = 1; s < worldSize; s++) {
    for (let i = s + 1; i <= L; i++) {
      for (let j = s; j < i; j++) {
        const c = Math.max(best[s - 1][j], cost(s, j, i))
        if (c < best[s][i]) { best[s][i] = c; cut[s][i] = j }
      }
    }
  }
  const ranges: Array<[number, number]> = []
  let end = L
  for (let s = worldSize - 1; s >= 0; s--) {
    const start = s === 0 ? 0 : cut[s][end]
    ranges.unshift([start, end])
    end = start
  }
  return ranges
}

/** The residual-stream tensor entering layer k ≥ 1: produced by layer k - 1, read by layer k. */
function boundaryTensor (ix: GraphIndex, k: number): string {
  const candidates = new Set<string>()
  ix.nodes.forEach((n, i) => {
    if (ix.layerOf[i] !== k) return
    for (const t of n.input ?? []) {
      const p = ix.producer.get(t)
      if (p != null && ix.layerOf[p] === k - 1) candidates.add(t)
    }
  })
  if (candidates.size !== 1) throw new SplitError(`cannot find the hidden state entering layer ${k} (candidates: ${[...candidates].join(', ') || 'none'})`)
  return [...candidates][0]
}

function rename (nodes: INodeProto[], from: string, to: string): INodeProto[] {
  return nodes.map(n => ({
    ...n,
    input: (n.input ?? []).map(t => t === from ? to : t),
    output: (n.output ?? []).map(t => t === from ? to : t)
  }))
}

export interface StageModel {
  index: number
  layers: [number, number]
  model: IModelProto
  inputs: string[]
  outputs: string[]
  parameterBytes: number
}

/**
 * The width of the residual stream: the converter's `blockmesh.hidden_size`, else the token embedding
 * table's second dimension (the initializer a Gather reads with input_ids). Written into the stage files' hidden-state shapes, so a stage knows the
 * activations it takes — with grouped-query attention it is not KV heads × head size.
 */
export function hiddenSizeOf (ix: GraphIndex): number | string {
  const declared = Number(ix.model.metadataProps?.find(p => p.key === 'blockmesh.hidden_size')?.value)
  if (Number.isInteger(declared) && declared > 0) return declared
  for (const n of ix.nodes) {
    if (n.opType !== 'Gather' || n.input?.[1] !== 'input_ids') continue
    const table = ix.initializers.get(n.input[0] as string)
    if (table?.dims?.length === 2) return Number(table.dims[1])
  }
  return 'hidden_size'
}

/** Builds the stage models of a decoder for the given layer ranges. */
export function buildStages (model: ModelProto, ranges: Array<[number, number]>): StageModel[] {
  const ix = indexGraph(model)
  const hiddenSize = hiddenSizeOf(ix)
  const world = ranges.length
  const g = model.graph as NonNullable<ModelProto['graph']>
  const presentOf = (name: string): number | null => { const m = /present\.(\d+)\./.exec(name); return m == null ? null : Number(m[1]) }
  const stages: StageModel[] = []
  for (let s = 0; s < world; s++) {
    const [a, b] = ranges[s]
    const last = s === world - 1
    const hiddenIn = s > 0 ? boundaryTensor(ix, a) : null
    const hiddenOut = last ? null : boundaryTensor(ix, b)
    const wanted: string[] = []
    for (const o of g.output ?? []) {
      const l = presentOf(o.name as string)
      if (l != null ? l >= a && l < b : last) wanted.push(o.name as string)
    }
    if (hiddenOut != null) wanted.unshift(hiddenOut)
    // backward slice from the wanted outputs, stopping at graph inputs, initializers and the cut
    const keep = new Set<number>()
    const stack = [...wanted]
    const seen = new Set<string>()
    while (stack.length > 0) {
      const t = stack.pop() as string
      if (seen.has(t) || t === hiddenIn || t === '') continue
      seen.add(t)
      const p = ix.producer.get(t)
      if (p == null) continue
      if (keep.has(p)) continue
      keep.add(p)
      for (const i of ix.nodes[p].input ?? []) stack.push(i)
    }
    let nodes = [...keep].sort((x, y) => x - y).map(i => ix.nodes[i])
    const used = new Set(nodes.flatMap(n => n.input ?? []))
    if (s > 0 && used.has('input_ids')) {
      const readers = nodes.filter(n => (n.input ?? []).includes('input_ids'))
      if (readers.some(n => n.opType !== 'Shape')) throw new SplitError(`stage ${s} needs input_ids beyond its shape (${readers.map(n => n.name).join(', ')})`)
      nodes = nodes.map(n => n.opType === 'Shape' && (n.input ?? []).includes('input_ids') ? { ...n, input: [hiddenIn as string] } : n)
    }
    if (hiddenIn != null) nodes = rename(nodes, hiddenIn, HIDDEN_IN)
    if (hiddenOut != null) nodes = rename(nodes, hiddenOut, HIDDEN_OUT)
    const reads = new Set(nodes.flatMap(n => n.input ?? []))
    const inputs: IValueInfoProto[] = []
    if (hiddenIn != null) inputs.push(valueInfo(HIDDEN_IN, DT.FLOAT, ['batch_size', 'sequence_length', hiddenSize]))
    for (const v of g.input ?? []) if (reads.has(v.name as string)) inputs.push(v)
    const outputs: IValueInfoProto[] = []
    if (hiddenOut != null) outputs.push(valueInfo(HIDDEN_OUT, DT.FLOAT, ['batch_size', 'sequence_length', hiddenSize]))
    for (const o of g.output ?? []) if (wanted.includes(o.name as string)) outputs.push(o)
    const inits = (g.initializer ?? []).filter(t => reads.has(t.name as string))
    const paramBytes = inits.reduce((sum, t) => sum + (tensorBytes(t) >= 64 ? tensorBytes(t) : 0), 0)
    stages.push({
      index: s,
      layers: [a, b],
      inputs: inputs.map(v => v.name as string),
      outputs: outputs.map(v => v.name as string),
      parameterBytes: paramBytes,
      model: {
        irVersion: model.irVersion,
        producerName: 'blockmesh-splitter',
        producerVersion: '1',
        domain: model.domain,
        modelVersion: model.modelVersion,
        docString: `stage ${s + 1} of ${world}: layers ${a}..${b - 1}`,
        opsetImport: model.opsetImport,
        metadataProps: [
          ...(model.metadataProps ?? []).filter(p => p.key !== 'blockmesh.stage'),
          { key: 'blockmesh.stage', value: JSON.stringify({ index: s, worldSize: world, layers: [a, b] }) }
        ],
        graph: { name: `${g.name ?? 'graph'}-stage-${s}`, node: nodes, initializer: inits, input: inputs, output: outputs }
      }
    })
  }
  return stages
}

export interface SplitOutput {
  stages: Array<StageModel & { bytes: Uint8Array, md5: string }>
  ranges: Array<[number, number]>
  layers: number
}

/**
 * Decodes, balances, cuts and encodes: the whole split of a model file's bytes. Balanced by `costs` when
 * given (./calibrate.ts: measured), else by what a decode step reads on each stage (weight-bound decode),
 * not by bytes stored; `weights`: each stage's capacity.
 */
export function splitDecoder (modelBytes: Uint8Array, worldSize: number, weights?: number[], costs?: StepCosts): SplitOutput {
  return splitModel(decodeModel(modelBytes), worldSize, weights, costs)
}

/** splitDecoder of a model already decoded (the splitter program decodes once, to time and to cut). */
export function splitModel (model: ModelProto, worldSize: number, weights?: number[], costs?: StepCosts): SplitOutput {
  const ix = indexGraph(model)
  if (costs != null && costs.perLayer.length !== ix.layers) throw new SplitError(`the costs name ${costs.perLayer.length} layers, the model has ${ix.layers}`)
  const ranges = balanceLayers(costs ?? parameterBytes(ix, { perStep: true }), worldSize, weights)
  const stages = buildStages(model, ranges).map(st => {
    const bytes = encodeModel(st.model)
    return { ...st, bytes, md5: createHash('md5').update(bytes).digest('hex') }
  })
  return { stages, ranges, layers: ix.layers }
}

export { onnx }
