import { randomBytes } from 'node:crypto'
import { z } from 'zod'
import { AutoscalingSchema, LoadBalancingSchema, PolicySchema } from '../scheduler/policy.ts'

export const BLOCK_STATUSES = ['pending', 'loading', 'ready', 'failed'] as const
export type BlockStatus = typeof BLOCK_STATUSES[number]

/**
 * A block: a running instance of a component (seed 000). Its id is also the
 * model name clients use on the OpenAI-compatible API.
 */
export const BlockSpecSchema = z.object({
  id: z.string().min(1).max(64).regex(/^[a-z0-9][a-z0-9._-]*$/, 'lowercase letters, digits, ".", "_" and "-", starting with a letter or digit').optional(),
  /** component URI, name:version */
  component: z.string().min(3).max(130).regex(/^[^:\s]+:[^:\s]+$/, 'name:version'),
  /** where instances may run: cluster and node filters (absent: anywhere, this agent first) */
  policy: PolicySchema.default({ cluster: {}, node: {} }),
  /** blocks whose nodes this block's instances stay off (the stages of one vDAG on different peers) */
  avoid: z.array(z.string().min(1).max(64)).max(32).default([]),
  minInstances: z.number().int().min(0).max(1024).default(1),
  maxInstances: z.number().int().min(1).max(1024).default(1),
  autoscaling: AutoscalingSchema.optional(),
  loadBalancing: LoadBalancingSchema.default({ strategy: 'round-robin', sessionAffinity: true, sessionTtl: 600 }),
  executionProvider: z.enum(['auto', 'cpu', 'cuda', 'webgpu']).default('auto'),
  /** sequences decoded together in one step */
  maxBatch: z.number().int().min(1).max(256).default(8),
  /** ONNX Runtime intra-op threads; 0 = auto (see autoThreads) */
  threads: z.number().int().min(0).max(1024).default(0),
  /**
   * While other sequences decode, a turn's prompt work takes about this long at most (ms), so a long prompt
   * stalls their streams for about this much at a time (agent/executor/prefill.ts). A turn always runs one
   * prompt step: the whole model cuts its chunks to fit (32 tokens at least), a pipeline stage runs the
   * driver's 256-token chunks, one a turn or more if they fit. Absent: 200. 0: no time bound, prompts
   * bounded by rows only (throughput first: on a CPU, a burst of long prompts then prefills before any
   * stream decodes).
   */
  promptBudgetMs: z.number().int().min(0).max(60_000).optional(),
  /** handed to the block as it starts (seed 000: blockInitData) */
  blockInitData: z.record(z.string().max(128), z.unknown()).default({})
}).strict().refine(b => b.minInstances <= b.maxInstances, { message: 'minInstances must not exceed maxInstances', path: ['minInstances'] })
export type BlockSpec = z.output<typeof BlockSpecSchema> & { id: string }
export type BlockSpecInput = z.input<typeof BlockSpecSchema>

/** What ran the block, once loaded: the execution provider and why. */
export interface BlockRuntime {
  provider: string
  providerTried: Array<{ name: string, error: string }>
  modelPath: string
  modelBytes: number
  loadMs: number
  /** ONNX Runtime intra-op threads the session uses (0: ONNX Runtime's default, all cores) */
  threads: number
  /** the prompt time budget the engine uses (ms; 0: none): BlockSpec.promptBudgetMs or its default */
  promptBudgetMs?: number
}

export interface BlockRecord {
  id: string
  component: string
  spec: BlockSpec
  status: BlockStatus
  error: string | null
  runtime: BlockRuntime | null
  createdAt: string
  updatedAt: string
}

export function newBlockId (componentName: string): string {
  return `${componentName.slice(0, 55)}-${randomBytes(3).toString('hex')}`
}
