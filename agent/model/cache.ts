import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { generateModel } from './generate.ts'
import { GENERATOR_VERSION } from './graph.ts'
import { parameterCount } from './spec.ts'
import type { ModelSpec } from './spec.ts'
import { md5File } from './source.ts'

export interface CachedModel { path: string, md5: string, sizeBytes: number, spec: ModelSpec, generated: boolean }

/** Two specs are the same model whatever order their fields were written in. */
function sameSpec (a: ModelSpec, b: ModelSpec): boolean {
  const canonical = (x: ModelSpec): string => JSON.stringify(Object.fromEntries(Object.entries(x).sort(([k1], [k2]) => k1.localeCompare(k2))))
  return canonical(a) === canonical(b)
}

/**
 * A generated model kept in `dir` as NAME-g<generator>.onnx and reused while
 * the spec, generator version and MD5 (recorded in a sidecar JSON) match.
 */
export async function ensureGeneratedModel (spec: ModelSpec, dir: string, name: string, log: (line: string) => void): Promise<CachedModel> {
  const path = resolve(join(dir, `${name}-g${GENERATOR_VERSION}.onnx`))
  const sidecar = `${path}.json`
  if (existsSync(path) && existsSync(sidecar)) {
    try {
      const meta = JSON.parse(readFileSync(sidecar, 'utf8')) as { md5: string, spec: ModelSpec, sizeBytes: number }
      if (sameSpec(meta.spec, spec) && await md5File(path) === meta.md5) {
        log(`${name}: ${path} (cached)`)
        return { path, md5: meta.md5, sizeBytes: meta.sizeBytes, spec, generated: false }
      }
    } catch { /* regenerate */ }
  }
  const t0 = Date.now()
  const label = `generating ${name} (${(parameterCount(spec) / 1e6).toFixed(1)}M parameters)`
  let shown = -1
  if (process.stdout.isTTY !== true) log(`${label}…`)
  const m = generateModel(spec, path, (done, total) => {
    const pct = Math.floor(10 * done / total) * 10
    if (pct !== shown && process.stdout.isTTY === true) { shown = pct; process.stdout.write(`\r${label}: ${pct}%`) }
  })
  if (process.stdout.isTTY === true) process.stdout.write('\n')
  writeFileSync(sidecar, JSON.stringify({ md5: m.md5, spec: m.spec, sizeBytes: m.sizeBytes }, null, 2) + '\n')
  log(`${name}: ${path} (generated in ${((Date.now() - t0) / 1000).toFixed(1)} s, md5 ${m.md5})`)
  return { path, md5: m.md5, sizeBytes: m.sizeBytes, spec: m.spec, generated: true }
}
