/** Form input text → a number when it is one; otherwise the text itself, so the API names the problem. */
export function numberOrText (s: string): number | string | undefined {
  const t = s.trim()
  if (t === '') return undefined
  const n = Number(t)
  return Number.isFinite(n) ? n : t
}

/** Drops undefined values and objects left empty, so only what the user filled is sent. */
export function compact (o: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(o)) {
    if (v === undefined) continue
    if (v != null && typeof v === 'object' && !Array.isArray(v)) {
      const inner = compact(v as Record<string, unknown>)
      if (Object.keys(inner).length > 0) out[k] = inner
      continue
    }
    out[k] = v
  }
  return out
}
