import { z } from 'zod'
import { TokenizerSchema } from '../registry/components.ts'
import type { TokenizerSpec } from '../registry/components.ts'
import type { Verification } from './verify.ts'
import { slugOf } from '../model/names.ts'

/** One stage of a plan: which layers, which file (by MD5), where it is. */
export interface PlanStage {
  rank: number
  layers: [number, number]
  model_layer_hash: string
  url: string
  size_bytes: number
  parameter_bytes: number
  inputs: string[]
  outputs: string[]
}

/**
 * The result of a split task (seed 002: "model plan"): one block spec per
 * split, their components, and the vDAG spec connecting them.
 */
export interface ModelPlan {
  model_name: string
  source_md5: string
  world_size: number
  layers: number
  stages: PlanStage[]
  components: Array<Record<string, unknown>>
  blocks: Array<Record<string, unknown>>
  vdag: { name: string, nodes: Array<{ id: string, block: string }>, edges: Array<{ from: string, to: string }>, contextLength: number, tokenizer: TokenizerSpec }
  verification: Verification
}

/** Components, blocks and the vDAG for a set of stage files. */
export function buildPlan (init: {
  modelName: string
  sourceMd5: string
  layers: number
  stages: PlanStage[]
  contextLength: number
  vdagName?: string
  /** extra block spec fields for every stage block (policy, maxBatch, …) */
  block?: Record<string, unknown>
  verification: Verification
  /** the source model's tokenizer (default: the byte tokenizer of generated models) */
  tokenizer?: TokenizerSpec
}): ModelPlan {
  const tokenizer = init.tokenizer ?? { type: 'byte' }
  const base = slugOf(init.modelName)
  const world = init.stages.length
  const vdagName = init.vdagName ?? `${base}-pipeline`
  const blockIds = init.stages.map(s => `${slugOf(vdagName)}-s${s.rank}`)
  const components = init.stages.map(s => ({
    name: `${base}-s${s.rank}-of-${world}`,
    version: s.model_layer_hash.slice(0, 12),
    description: `stage ${s.rank + 1} of ${world} of ${init.modelName} (layers ${s.layers[0]}..${s.layers[1] - 1})`,
    runtime: 'onnx',
    model: { url: s.url, md5: s.model_layer_hash, sizeBytes: s.size_bytes },
    tokenizer,
    contextLength: init.contextLength,
    stage: { index: s.rank, worldSize: world, layers: s.layers, source: init.sourceMd5 },
    resources: { ram: Math.ceil(s.size_bytes * 2) }
  }))
  const blocks = init.stages.map((s, i) => ({
    ...init.block,
    id: blockIds[i],
    component: `${components[i].name}:${components[i].version}`,
    // stages go on different peers when the mesh has enough of them
    avoid: blockIds.filter((_, j) => j !== i)
  }))
  return {
    model_name: init.modelName,
    source_md5: init.sourceMd5,
    world_size: world,
    layers: init.layers,
    stages: init.stages,
    components,
    blocks,
    vdag: {
      name: vdagName,
      nodes: blockIds.map((b, i) => ({ id: `s${i}`, block: b })),
      edges: blockIds.slice(1).map((_, i) => ({ from: `s${i}`, to: `s${i + 1}` })),
      contextLength: init.contextLength,
      tokenizer
    },
    verification: init.verification
  }
}

/**
 * What deploying needs of a plan given inline (POST /api/vdags/deploy {plan}): the component and
 * block specs (each validated again by its own schema when deployed), one block per component, and
 * the vDAG's name and context. Other fields are kept as they are.
 */
export const DeployablePlanSchema = z.object({
  components: z.array(z.record(z.string(), z.unknown())).min(1).max(64),
  blocks: z.array(z.object({ id: z.string().min(1).max(64) }).passthrough()).min(1).max(64),
  vdag: z.object({
    name: z.string().min(1).max(64),
    contextLength: z.number().int().positive().max(1_048_576),
    tokenizer: TokenizerSchema.optional()
  }).passthrough()
}).passthrough().refine(p => p.blocks.length === p.components.length, { message: 'one block per component', path: ['blocks'] })

