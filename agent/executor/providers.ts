import ort from 'onnxruntime-node'

export type ProviderName = 'cuda' | 'webgpu' | 'cpu'
export type ProviderPreference = 'auto' | ProviderName

export interface ProviderReport {
  /** the execution provider the session runs on */
  name: ProviderName
  /** why this one: what was tried first and how it failed */
  tried: Array<{ name: ProviderName, error: string }>
}

export interface GpuPresence { nvidia: boolean, any: boolean }

/**
 * Order to try execution providers in. `auto`: CUDA where an NVIDIA GPU is
 * present (it loads only where ONNX Runtime's CUDA provider libraries are
 * installed), WebGPU where any real GPU is (Dawn over Vulkan), CPU always
 * last. Simulated GPUs do not count.
 */
export function providerOrder (pref: ProviderPreference, gpus: GpuPresence): ProviderName[] {
  if (pref !== 'auto') return pref === 'cpu' ? ['cpu'] : [pref, 'cpu']
  const order: ProviderName[] = []
  if (gpus.nvidia) order.push('cuda')
  if (gpus.any) order.push('webgpu')
  order.push('cpu')
  return order
}

export interface SessionOptions {
  intraOpThreads?: number
}

/** Creates an ORT session on the first provider that loads, and says which one and why. */
export async function createSession (modelPath: string, order: ProviderName[], opts: SessionOptions = {}): Promise<{ session: ort.InferenceSession, provider: ProviderReport }> {
  const tried: ProviderReport['tried'] = []
  for (const name of order) {
    try {
      const session = await ort.InferenceSession.create(modelPath, {
        executionProviders: [name],
        graphOptimizationLevel: 'all',
        intraOpNumThreads: opts.intraOpThreads ?? 0,
        enableCpuMemArena: true
      })
      return { session, provider: { name, tried } }
    } catch (err) {
      tried.push({ name, error: (err as Error).message.split('\n')[0].slice(0, 300) })
    }
  }
  throw new Error(`no execution provider could load ${modelPath}: ${tried.map(t => `${t.name}: ${t.error}`).join('; ')}`)
}
