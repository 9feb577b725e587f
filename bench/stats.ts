export function percentile (xs: number[], p: number): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil(p / 100 * s.length) - 1))
  return s[i]
}

export function median (xs: number[]): number {
  return percentile(xs, 50)
}

export function mean (xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length
}
