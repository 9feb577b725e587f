import { PRESETS } from './model/spec.ts'
import type { ModelSpec } from './model/spec.ts'
import { ensureGeneratedModel } from './model/cache.ts'
import type { CachedModel } from './model/cache.ts'

export const DEMO_SPEC: ModelSpec = { ...PRESETS.demo, seed: 1 }
export const DEMO_BLOCK = 'demo-gpt'

export type DemoModel = CachedModel

/** The demo model, generated once into `dir` and reused (see ensureGeneratedModel). */
export async function ensureDemoModel (dir: string, log: (line: string) => void): Promise<DemoModel> {
  return await ensureGeneratedModel(DEMO_SPEC, dir, 'demo-gpt', log)
}

export function demoComponent (m: DemoModel): Record<string, unknown> {
  return {
    name: 'demo-gpt',
    version: m.md5.slice(0, 8),
    description: 'Generated GPT-style decoder: a byte-bigram language model of the shipped corpus (see README)',
    runtime: 'onnx',
    model: { url: m.path, md5: m.md5, sizeBytes: m.sizeBytes },
    tokenizer: { type: 'byte' },
    contextLength: m.spec.maxPositions,
    defaults: { maxTokens: 200, temperature: 0.8, topP: 0.95 },
    resources: { ram: Math.ceil(m.sizeBytes * 2), cpus: 1 }
  }
}
