import { homedir } from 'node:os'
import { join } from 'node:path'
import { z } from 'zod'

const label = z.string().min(1).max(64).regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'letters, digits, ".", "_" and "-" only, starting with a letter or digit')

export const AgentOptionsSchema = z.object({
  name: label,
  cluster: label.default('default'),
  /** Who provides this node's capacity (seed 000 filters clusters by vendor, e.g. "dma-bangalore"). */
  vendor: z.string().max(64).default(''),
  listen: z.array(z.string().min(1)).min(1).default(['/ip4/0.0.0.0/tcp/7600']),
  bootstrap: z.array(z.string().min(1)).default([]),
  apiHost: z.string().min(1).default('127.0.0.1'),
  apiPort: z.number().int().min(0).max(65535).default(7700),
  dataDir: z.string().min(1).default(join(homedir(), '.blockmesh', 'agent')),
  swarmKey: z.string().min(1).optional(),
  allow: z.array(z.string().min(1)).default([]),
  heartbeatMs: z.number().int().min(250).max(60_000).default(2000),
  simulateGpus: z.string().optional(),
  /** let this agent place blocks on GPUs that peers (or it) declare simulated; off: simulated GPUs are ignored for placement */
  allowSimulatedGpus: z.boolean().default(false),
  /** refuse model files larger than this */
  maxModelBytes: z.number().int().positive().default(64 * 1024 ** 3),
  /** the content store (model files held for blocks and peers): evicts unpinned files no block uses, least recently used first, above this */
  contentCapBytes: z.number().int().positive().default(128 * 1024 ** 3),
  /** bytes per second this agent uploads to peers fetching model files, all together (0: no limit) */
  contentUploadRate: z.number().int().min(0).default(0),
  /** run blocks with an external system or an init process when a peer (not this agent) places them */
  acceptRemoteProcesses: z.boolean().default(false),
  /** run split tasks whose container_image is not a local program as Kubernetes Jobs in this cluster */
  kubeconfig: z.string().min(1).optional(),
  k8sNamespace: z.string().min(1).max(63).optional(),
  /** the API URL splitter Jobs in the cluster use to report (this agent's API must be reachable there) */
  publicApiUrl: z.string().url().optional(),
  /** more splitter programs for the local runner: container_image name → script (.ts/.mjs/.js) or executable */
  splitters: z.record(z.string().min(1).max(200).regex(/^[A-Za-z0-9][A-Za-z0-9._\/:@-]*$/, 'an image-like name: letters, digits, ".", "_", "/", ":", "@", "-"'), z.string().min(1)).default({}),
  /** ONNX Runtime threads per model (0: ONNX Runtime decides) */
  inferenceThreads: z.number().int().min(0).max(1024).default(0),
  /** request migration (issue 13): a request whose instance or vDAG stage dies is resumed elsewhere at most this many times */
  migrationMax: z.number().int().min(0).max(100).default(3),
  /** request migration: a replay (prompt + tokens generated so far) is at most this many tokens */
  migrationMaxTokens: z.number().int().min(1).max(1 << 20).default(8192),
  /** request migration: how long to wait for another ready instance or a stage's replacement */
  migrationWaitMs: z.number().int().min(0).max(3_600_000).default(60_000),
  /** where a vDAG request that arrives here is driven: on its first stage's host (a link crossing fewer per token), or here */
  vdagDriver: z.enum(['first-stage', 'here']).default('first-stage'),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info')
})
export type AgentOptionsInput = z.input<typeof AgentOptionsSchema>
export type AgentOptions = z.output<typeof AgentOptionsSchema>

/** What an agent writes to DIR/agent.json once it is serving; removed on clean stop. */
export interface ReadyInfo {
  pid: number
  name: string
  cluster: string
  peerId: string
  apiUrl: string
  multiaddrs: string[]
  startedAt: string
}

export const READY_FILE = 'agent.json'
export const DB_FILE = 'agent.db'
