import { existsSync, readFileSync } from 'node:fs'
import { extname } from 'node:path'
import { InvalidArgumentError } from 'commander'
import { parse as parseYaml } from 'yaml'
import { parseSize } from '../hardware/gpus.ts'
import { ValidationError } from '../errors.ts'

/** commander value parsers that reject bad values with a clear message (exit code 2). */
export function intArg (min: number, max: number) {
  return (value: string): number => {
    if (!/^-?\d+$/.test(value.trim())) throw new InvalidArgumentError(`expected an integer, got ${JSON.stringify(value)}`)
    const n = Number(value)
    if (n < min || n > max) throw new InvalidArgumentError(`expected ${min}-${max}, got ${n}`)
    return n
  }
}

export function collect (value: string, previous: string[] = []): string[] {
  return [...previous, ...value.split(',').map(v => v.trim()).filter(Boolean)]
}

export function urlArg (value: string): string {
  try {
    const u = new URL(value)
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('not http(s)')
    return u.toString().replace(/\/$/, '')
  } catch {
    throw new InvalidArgumentError(`expected an http(s) URL, got ${JSON.stringify(value)}`)
  }
}

/** Default agent API: --api, then BLOCKMESH_API, then the first demo agent's port. */
export const DEFAULT_API = process.env.BLOCKMESH_API ?? 'http://127.0.0.1:7700'

export function sizeArg (value: string): number {
  try {
    return parseSize(value)
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message)
  }
}

/** A spec file, JSON or YAML (by extension; otherwise JSON is tried first). */
export function readSpecFile (path: string): unknown {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new ValidationError(`cannot read ${path}: ${(err as Error).message}`)
  }
  const ext = extname(path).toLowerCase()
  try {
    if (ext === '.json') return JSON.parse(text)
    if (ext === '.yaml' || ext === '.yml') return parseYaml(text)
    try { return JSON.parse(text) } catch { return parseYaml(text) }
  } catch (err) {
    throw new ValidationError(`${path} is not valid ${ext === '.json' ? 'JSON' : 'JSON or YAML'}: ${(err as Error).message}`)
  }
}

export interface ApiTarget { api: string, token?: string }

/** The token for state-changing calls: --token, BLOCKMESH_TOKEN, --token-file, or the local demo's token file. */
export function resolveToken (opts: { token?: string, tokenFile?: string }): string | undefined {
  if (opts.token != null) return opts.token
  if (process.env.BLOCKMESH_TOKEN != null && process.env.BLOCKMESH_TOKEN !== '') return process.env.BLOCKMESH_TOKEN
  const file = opts.tokenFile ?? '.blockmesh/demo/agent-0/api-token'
  if (existsSync(file)) return readFileSync(file, 'utf8').trim()
  if (opts.tokenFile != null) throw new ValidationError(`token file ${opts.tokenFile} does not exist`)
  return undefined
}
