// Shapes of the agent's HTTP API answers the dashboard reads (see README "HTTP API").

export interface Gpu {
  index: number
  vendor: string
  model: string
  memoryTotalBytes: number
  memoryFreeBytes: number | null
  utilisation: number | null
  simulated: boolean
}

export interface InstanceReport {
  block: string
  instance: string
  owner: string
  status: 'pending' | 'loading' | 'ready' | 'failed'
  error: string | null
  provider: string | null
  component: string
  active: number
  queued: number
  tokensPerSecond: number
}

/** An ONNX Runtime execution provider the agent tried at start: whether it loads there, and why not. */
export interface ProviderStatus {
  name: string
  available: boolean
  reason?: string
}

export interface Peer {
  peerId: string
  name: string
  cluster: string
  vendor: string
  addrs: string[]
  epoch: number
  seq: number
  heartbeatMs: number
  readings: {
    cpu: { count: number, model: string, load1: number, load5: number, load15: number, utilisation: number }
    memory: { totalBytes: number, freeBytes: number, availableBytes: number }
    gpus: Gpu[]
  }
  instances: InstanceReport[]
  vdags: Array<{ name: string, stages: string[], contextLength: number }>
  links: string[]
  /** empty until the agent's probe ends (absent: an older agent) */
  providers?: ProviderStatus[]
  self: boolean
  status: 'live' | 'expired'
  connected: boolean
  lastSeen: string
  lastSeenAgoMs: number
}

export interface Sample {
  t: number
  cpu: number
  load1: number
  ram: number
  gpu: number | null
  gpuMem: number | null
  tps: number
}

export interface PeersMessage { self: string, heartbeatMs: number, peers: Peer[] }

export interface Component {
  uri: string
  spec: ComponentSpec
  createdAt: string
}

export interface ComponentSpec {
  name: string
  version: string
  description?: string
  runtime: 'onnx' | 'external'
  model?: { url: string, md5: string, sizeBytes?: number }
  stage?: { index: number, worldSize: number, layers: [number, number], source: string }
  contextLength?: number
  /** what an added model is (blockmesh model add) */
  modelInfo?: ModelInfo
}

export interface ModelInfo {
  format: 'gguf' | 'onnx' | 'generated'
  architecture: string
  name?: string
  parameters: number
  quantization: string
  contextLength: number
  vocabSize: number
  chatTemplate: boolean
  source: string
  digest: string
}

export interface InstanceView {
  instance: string
  peerId: string
  peerName: string
  status: 'assigned' | 'loading' | 'ready' | 'failed' | 'lost'
  error: string | null
  provider: string | null
  active: number
  queued: number
}

export interface Block {
  id: string
  component: string
  status: 'pending' | 'loading' | 'ready' | 'failed'
  error: string | null
  spec: { minInstances: number, maxInstances: number, policy: unknown }
  target: number
  instances: InstanceView[]
  refusal: Array<{ filter: string, message: string }> | null
  runtime: { provider: string, loadMs: number, modelBytes: number } | null
  createdAt: string
  /** the agent reconciling the block now, with its fence */
  reconciler: { peerId: string, name: string, term: number } | null
}

export interface Task {
  task_id: string
  task_type: string
  status: 'pending' | 'running' | 'complete' | 'failed'
  progress: number
  message: string | null
  runner: 'local' | 'kubernetes'
  task_data: { model_name: string, model_download_url: string, world_size: number, model_split_config: Record<string, unknown> }
  container_image: string
  result: Record<string, any> | null
  error: string | null
  created_at: string
  updated_at: string
}

export interface Vdag {
  name: string
  stages: string[]
  contextLength: number
  ready: boolean
  createdAt?: string
}

export interface ModelEntry { id: string, owned_by?: string }
