import { existsSync } from 'node:fs'
import { cachedWeightPath } from '../../agent/model/known-models.ts'

/**
 * A real model's GGUF in the weight cache (.ci/run fetches them with scripts/fetch-weights.sh), and
 * the skip reason for tests that need it when it is absent — naming the file and how to get it.
 */
export function realWeights (id: 'smollm2' | 'gemma3'): { path: string, skip: string | false } {
  const path = cachedWeightPath(id)
  return { path, skip: existsSync(path) ? false : `the real model ${path} is not on this machine (fetch it with: bash scripts/fetch-weights.sh)` }
}
