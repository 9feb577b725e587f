/** Plain-text table with aligned columns. */
export function table (header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map(r => (r[i] ?? '').length)))
  const line = (cells: string[]): string => cells.map((c, i) => (c ?? '').padEnd(widths[i])).join('  ').trimEnd()
  return [line(header), ...rows.map(line)].join('\n')
}

export function formatBytes (n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = n
  let i = 0
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)}${units[i]}`
}

export function formatAge (ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms ago`
  if (ms < 120_000) return `${(ms / 1000).toFixed(1)}s ago`
  if (ms < 7200_000) return `${Math.round(ms / 60_000)}m ago`
  return `${Math.round(ms / 3600_000)}h ago`
}
