/** 1536 → "1.5 KiB" */
export function bytes (n: number | null | undefined): string {
  if (n == null || !Number.isFinite(n)) return '–'
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  let v = n
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`
}

export function pct (n: number | null | undefined): string {
  return n == null || !Number.isFinite(n) ? '–' : `${Math.round(n)}%`
}

export function num (n: number | null | undefined, digits = 1): string {
  return n == null || !Number.isFinite(n) ? '–' : n.toFixed(digits)
}

export function shortId (peerId: string): string {
  return peerId.length > 12 ? `…${peerId.slice(-8)}` : peerId
}

export function ago (iso: string): string {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000))
  return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`
}
