import { createHash } from 'node:crypto'
import { mkdirSync, renameSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { buildGraph } from './graph.ts'
import { encodeModel } from './onnx.ts'
import { modelWeights, readCorpus } from './weights.ts'
import type { NamedTensor } from './weights.ts'
import { ModelSpecSchema, parameterCount } from './spec.ts'
import type { ModelSpec } from './spec.ts'

export interface GeneratedModel { path: string, md5: string, sizeBytes: number, parameters: number, spec: ModelSpec }

/**
 * Generates the GPT-style ONNX model for `spec` and writes it atomically to
 * `out`. Deterministic: the same spec gives a byte-identical file.
 */
export function generateModel (specInput: unknown, out: string, onProgress?: (done: number, total: number, what: string) => void): GeneratedModel {
  const spec = ModelSpecSchema.parse(specInput)
  const total = spec.layers * 12 + 5
  let done = 0
  const counted = function * (): Generator<NamedTensor> {
    for (const w of modelWeights(spec, readCorpus())) {
      yield w
      onProgress?.(++done, total, w.name)
    }
  }
  const bytes = encodeModel(buildGraph(spec, counted()))
  mkdirSync(dirname(out), { recursive: true })
  writeFileSync(out + '.tmp', bytes)
  renameSync(out + '.tmp', out)
  return {
    path: out,
    md5: createHash('md5').update(bytes).digest('hex'),
    sizeBytes: bytes.length,
    parameters: parameterCount(spec),
    spec
  }
}
