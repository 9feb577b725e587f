import { z } from 'zod'
import { SizeSchema } from '../units.ts'

/**
 * Where a block's instances may run (seed 000): a cluster filter chooses
 * the cluster, a node filter chooses nodes inside it. Every field is
 * optional; an absent filter admits everything. Sizes take numbers (bytes)
 * or strings ("48GB", "16GiB").
 */
export const ClusterFilterSchema = z.object({
  /** total GPUs in the cluster (its live nodes, the vendor's only when `vendor` is set) */
  minGpus: z.number().int().min(0).max(1_000_000).optional(),
  /** the provider label of the cluster's nodes (agent --vendor); nodes of other vendors are not counted or used */
  vendor: z.string().min(1).max(64).optional(),
  /** the cluster's 15-minute CPU load average (mean over its nodes) must be below this */
  maxCpuLoad15: z.number().min(0).max(1_000_000).optional(),
  /** total free GPU memory in the cluster */
  minFreeGpuMemory: SizeSchema.optional(),
  /** only these cluster labels */
  names: z.array(z.string().min(1).max(64)).min(1).max(256).optional()
}).strict()

export const NodeFilterSchema = z.object({
  /** GPUs one instance needs on its node, each passing the GPU filters below (default: 1 if any GPU filter is set, else 0) */
  gpus: z.number().int().min(0).max(64).optional(),
  /** a qualifying GPU is below this utilisation (%) */
  maxGpuUtilisation: z.number().min(0).max(100).optional(),
  /** a qualifying GPU has at least this much free memory */
  minFreeGpuMemory: SizeSchema.optional(),
  minCpus: z.number().int().min(0).max(1_000_000).optional(),
  /** available RAM on the node */
  minRam: SizeSchema.optional(),
  /** the node's 15-minute CPU load average must be below this */
  maxCpuLoad15: z.number().min(0).max(1_000_000).optional(),
  /** only nodes with these names (agent --name), e.g. the peer a template's split decision chose for a stage */
  names: z.array(z.string().min(1).max(64)).min(1).max(256).optional()
}).strict()

export const PolicySchema = z.object({
  cluster: ClusterFilterSchema.default({}),
  node: NodeFilterSchema.default({})
}).strict()
export type Policy = z.output<typeof PolicySchema>

export const AutoscalingSchema = z.object({
  /**
   * queueDepth: requests waiting for their first token, per instance;
   * cpuLoad: the instances' nodes' 1-minute load average per CPU;
   * tokensPerSecond: tokens generated per second, per instance
   */
  metric: z.enum(['queueDepth', 'cpuLoad', 'tokensPerSecond']),
  /** add an instance when the metric stays above this for `window` seconds */
  scaleUpAbove: z.number().min(0),
  /** remove an instance when the metric stays below this for `window` seconds */
  scaleDownBelow: z.number().min(0),
  window: z.number().int().min(1).max(3600).default(10),
  /** seconds between two scaling actions */
  cooldown: z.number().int().min(0).max(86_400).default(30)
}).strict().refine(a => a.scaleDownBelow < a.scaleUpAbove, { message: 'scaleDownBelow must be below scaleUpAbove', path: ['scaleDownBelow'] })
export type Autoscaling = z.output<typeof AutoscalingSchema>

export const LoadBalancingSchema = z.object({
  strategy: z.literal('round-robin').default('round-robin'),
  /** requests with the same session (OpenAI `user` field or X-Session-Id header) go to the same instance while it lives */
  sessionAffinity: z.boolean().default(true),
  /** seconds a session is remembered after its last request */
  sessionTtl: z.number().int().min(1).max(86_400).default(600)
}).strict()
export type LoadBalancing = z.output<typeof LoadBalancingSchema>

/** What the scheduler knows of one live node (built from its gossiped capacity record). */
export interface NodeView {
  peerId: string
  name: string
  cluster: string
  vendor: string
  cpus: number
  load15: number
  /** bytes */
  ramAvailable: number
  /** the node's GPUs in record order (a placement's gpuIndexes index this list) */
  gpus: Array<{
    memoryFreeBytes: number | null
    memoryTotalBytes: number
    utilisation: number | null
    /** declared with --simulate-gpus (or PUT /api/hardware/simulated-gpus): not there; absent means a real GPU */
    simulated?: boolean
  }>
  /** instances of the block being placed already on this node */
  instances: number
}

/** What one instance needs, from the component's `resources`. */
export interface InstanceNeeds {
  /** GPU memory per GPU the instance uses (bytes) */
  gpuMemory: number
  ram: number
  cpus: number
}

export interface PlacementRequest {
  policy: Policy
  needs: InstanceNeeds
  /** instances to add */
  count: number
  /** peers not to use (e.g. a peer that just refused) */
  exclude?: string[]
  /** keep the block in this cluster when it still passes (its existing instances live there) */
  preferCluster?: string
  /** on a tie, prefer this node (the agent placing the block) */
  preferNode?: string
  /**
   * use GPUs marked simulated as if they were real (the placing agent runs with
   * --allow-simulated-gpus: the demo, tests). Default false: simulated GPUs are
   * ignored, as if absent, and a refusal says when they were all a node had.
   */
  allowSimulatedGpus?: boolean
}

export interface Placement { peerId: string, name: string, gpuIndexes: number[] }

export type PlacementResult =
  | { ok: true, cluster: string, placements: Placement[] }
  | { ok: false, reasons: Array<{ filter: string, message: string }> }
