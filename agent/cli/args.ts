import { InvalidArgumentError } from 'commander'

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
