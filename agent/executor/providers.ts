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
 * installed), then CPU. Simulated GPUs do not count.
 *
 * WebGPU (bundled with onnxruntime-node; Dawn over Vulkan) is opt-in
 * (`executionProvider: 'webgpu'`): on an H100 it computed the same tokens
 * as CPU but decoded 8-20x slower, because the KV cache grows by one
 * position a step and every new shape costs it a pipeline rebuild
 * (docs/decisions.md has the figures).
 */
export function providerOrder (pref: ProviderPreference, gpus: GpuPresence): ProviderName[] {
  if (pref !== 'auto') return pref === 'cpu' ? ['cpu'] : [pref, 'cpu']
  return gpus.nvidia ? ['cuda', 'cpu'] : ['cpu']
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
