// What the Models view shows of the mesh's model files, built from the peers' capacity records (the live
// event stream) and the API's answers: no DOM here, so the unit tests run it as it is.
import type { HolderView, Peer } from './types.ts'

/** One transfer in progress somewhere in the mesh, as a peer's capacity record reports it. */
export interface HostTransfer {
  peerId: string
  host: string
  self: boolean
  md5: string
  name: string | null
  receivedBytes: number
  totalBytes: number
  /** 0–100, null when the size is not known */
  percent: number | null
}

/** received of total as 0–100 (clamped); null when the total is unknown or zero. */
export function percentOf (received: number | null | undefined, total: number | null | undefined): number | null {
  if (received == null || total == null || !Number.isFinite(received) || !Number.isFinite(total) || total <= 0) return null
  return Math.max(0, Math.min(100, 100 * received / total))
}

/**
 * A percentage for people: rounded down (a file is not "100%" until its last byte is here), one decimal
 * under 10%, "<0.1%" for a little more than nothing, "–" when unknown.
 */
export function percentText (p: number | null): string {
  if (p == null || !Number.isFinite(p)) return '–'
  if (p > 0 && p < 0.1) return '<0.1%'
  if (p > 0 && p < 10) return `${Math.floor(p * 10) / 10}%`
  return `${Math.floor(p)}%`
}

/** An MD5 shortened for a table cell: the first 8 hex digits. */
export function shortMd5 (md5: string): string {
  return md5.length > 8 ? md5.slice(0, 8) : md5
}

/** A file as people read it: its name where one is known, else its short MD5. */
export function fileLabel (md5: string, name: string | null | undefined): string {
  return name != null && name !== '' ? name : shortMd5(md5)
}

const byHost = (a: { self: boolean, host: string, peerId: string }, b: { self: boolean, host: string, peerId: string }): number =>
  Number(b.self) - Number(a.self) || a.host.localeCompare(b.host) || a.peerId.localeCompare(b.peerId)

/**
 * The transfers in progress across the mesh: every live peer's `content.fetching`, this agent first, then by
 * host name and file. Expired peers are left out (their last record is no news of a transfer); records of
 * agents older than the content store have no `content` and add nothing.
 */
export function transfersOf (peers: readonly Peer[]): HostTransfer[] {
  const out: HostTransfer[] = []
  for (const p of peers) {
    if (p.status === 'expired' || p.content == null) continue
    for (const f of p.content.fetching) {
      out.push({ peerId: p.peerId, host: p.name, self: p.self, md5: f.md5, name: f.name, receivedBytes: f.receivedBytes, totalBytes: f.totalBytes, percent: percentOf(f.receivedBytes, f.totalBytes) })
    }
  }
  return out.sort((a, b) => byHost(a, b) || fileLabel(a.md5, a.name).localeCompare(fileLabel(b.md5, b.name)) || a.md5.localeCompare(b.md5))
}

/**
 * Who holds a file, from the live records (a peer listing the MD5 as held has it complete; one fetching it
 * has part of it), this agent first. Until the stream has delivered peers, the API's list (`fallback`) stands.
 */
export function holdersOf (md5: string, peers: readonly Peer[], fallback: readonly HolderView[] = []): HolderView[] {
  if (peers.length === 0) return [...fallback]
  const out: Array<HolderView & { self: boolean }> = []
  for (const p of peers) {
    if (p.status === 'expired' || p.content == null) continue
    if (p.content.held.includes(md5)) {
      out.push({ peerId: p.peerId, name: p.name, state: 'complete', receivedBytes: null, totalBytes: null, self: p.self })
      continue
    }
    const t = p.content.fetching.find(f => f.md5 === md5)
    if (t != null) out.push({ peerId: p.peerId, name: p.name, state: 'partial', receivedBytes: t.receivedBytes, totalBytes: t.totalBytes, self: p.self })
  }
  return out.sort((a, b) => byHost({ ...a, host: a.name }, { ...b, host: b.name })).map(({ self: _self, ...h }) => h)
}

/** A file's size: the API's, else the size a peer fetching it reports; null when neither knows. */
export function sizeOf (file: { sizeBytes: number | null }, holders: readonly HolderView[]): number | null {
  return file.sizeBytes ?? holders.find(h => h.totalBytes != null && h.totalBytes > 0)?.totalBytes ?? null
}

/** Whether every file of a model is held complete by the agent `self` (nothing left to pull there). */
export function heldHere (files: ReadonlyArray<{ holders: readonly HolderView[] }>, self: string | null): boolean {
  return self != null && files.length > 0 && files.every(f => f.holders.some(h => h.peerId === self && h.state === 'complete'))
}

/** Why a file of the store cannot be removed now, or null when it can. */
export function removeBlocker (entry: { inUse: number }): string | null {
  return entry.inUse > 0 ? `in use by ${entry.inUse} block${entry.inUse === 1 ? '' : 's'}` : null
}
