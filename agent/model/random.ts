/** Deterministic PRNG (mulberry32): same seed, same sequence, on every platform. */
export class Rng {
  private state: number
  private spare: number | null = null

  constructor (seed: number) {
    this.state = seed >>> 0
  }

  /** Uniform in [0, 1). */
  next (): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0)
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }

  /** Standard normal (Box-Muller, both values used). */
  normal (): number {
    if (this.spare != null) {
      const s = this.spare
      this.spare = null
      return s
    }
    let u = this.next()
    while (u <= 1e-12) u = this.next()
    const v = this.next()
    const r = Math.sqrt(-2 * Math.log(u))
    this.spare = r * Math.sin(2 * Math.PI * v)
    return r * Math.cos(2 * Math.PI * v)
  }

  fillNormal (out: Float32Array, std: number, mean = 0): Float32Array {
    for (let i = 0; i < out.length; i++) out[i] = mean + std * this.normal()
    return out
  }
}

/** Derives an independent seed for a named tensor from the model seed. */
export function subSeed (seed: number, name: string): number {
  let h = (seed ^ 0x9e3779b9) >>> 0
  for (let i = 0; i < name.length; i++) {
    h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0
  }
  return h
}
