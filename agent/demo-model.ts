import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { generateModel } from './model/generate.ts'
import { GENERATOR_VERSION } from './model/graph.ts'
import { PRESETS, parameterCount } from './model/spec.ts'
import type { ModelSpec } from './model/spec.ts'
import { md5File } from './model/source.ts'

export const DEMO_SPEC: ModelSpec = { ...PRESETS.demo, seed: 1 }
export const DEMO_BLOCK = 'demo-gpt'

export interface DemoModel { path: string, md5: string, sizeBytes: number, spec: ModelSpec, generated: boolean }

/**
 * The demo model, generated once into `dir` and reused while the spec and
 * generator version are unchanged (a sidecar JSON records both and the MD5).
 */
export async function ensureDemoModel (dir: string, log: (line: string) => void): Promise<DemoModel> {
  const path = resolve(join(dir, `demo-gpt-g${GENERATOR_VERSION}.onnx`))
  const sidecar = `${path}.json`
  if (existsSync(path) && existsSync(sidecar)) {
    try {
      const meta = JSON.parse(readFileSync(sidecar, 'utf8')) as { md5: string, spec: ModelSpec, sizeBytes: number }
      if (JSON.stringify(meta.spec) === JSON.stringify(DEMO_SPEC) && await md5File(path) === meta.md5) {
        log(`demo model: ${path} (cached)`)
        return { path, md5: meta.md5, sizeBytes: meta.sizeBytes, spec: DEMO_SPEC, generated: false }
      }
    } catch { /* regenerate */ }
  }
  const t0 = Date.now()
  let shown = -1
  const label = `generating demo model (${(parameterCount(DEMO_SPEC) / 1e6).toFixed(1)}M parameters)`
  if (process.stdout.isTTY !== true) log(`${label}…`)
  const m = generateModel(DEMO_SPEC, path, (done, total) => {
    const pct = Math.floor(10 * done / total) * 10
    if (pct !== shown && process.stdout.isTTY === true) { shown = pct; process.stdout.write(`\r${label}: ${pct}%`) }
  })
  if (process.stdout.isTTY === true) process.stdout.write('\n')
  writeFileSync(sidecar, JSON.stringify({ md5: m.md5, spec: m.spec, sizeBytes: m.sizeBytes }, null, 2) + '\n')
  log(`demo model: ${path} (generated in ${((Date.now() - t0) / 1000).toFixed(1)} s, md5 ${m.md5})`)
  return { path, md5: m.md5, sizeBytes: m.sizeBytes, spec: m.spec, generated: true }
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
