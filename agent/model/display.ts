/**
 * How model sources write sizes and URLs in operator messages and logs.
 */

/** Human size for operator messages: "512 B", "3.0 KiB", "2.0 MiB", "1.5 GiB". */
export function formatBytes (n: number): string {
  if (n < 1024) return `${n} B`
  const units = ['KiB', 'MiB', 'GiB', 'TiB']
  let v = n / 1024
  let i = 0
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
  return `${v.toFixed(1)} ${units[i]}`
}

/** A URL fit for logs: no credentials, and the query string (often a signed token) elided. */
export function displayUrl (url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}${url.search !== '' ? '?…' : ''}`
}
