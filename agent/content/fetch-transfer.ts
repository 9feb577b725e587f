/**
 * One transfer and its callers: concurrent fetches of one MD5 join one transfer (cancelled when its last
 * caller aborts), and its progress goes to their listeners at most 5 times a second (the last event always).
 */
import type { MeshLogger } from '../../mesh/node.ts'
import type { ContentEntry, FetchOptions, OriginSource, TransferProgress } from './types.ts'

/** Progress events per second, at most (the last one always goes out). */
const PROGRESS_EVERY_MS = 200

export interface Transfer {
  md5: string
  progress: TransferProgress
  listeners: Set<(p: TransferProgress) => void>
  controller: AbortController
  joiners: number
  origin: OriginSource | undefined
  lastEmit: number
  promise: Promise<ContentEntry>
}

/** A copy of a transfer's progress, its `bySource` copied too. */
export function progressOf (t: Transfer): TransferProgress {
  return { ...t.progress, bySource: { ...t.progress.bySource } }
}

/** Waits for `t` on behalf of one caller; the transfer is cancelled when its last caller aborts. */
export async function joinTransfer (t: Transfer, opts: FetchOptions): Promise<ContentEntry> {
  const listener = opts.onProgress
  if (listener != null) t.listeners.add(listener)
  t.joiners++
  let left = false
  const leave = (): void => {
    if (left) return
    left = true
    t.joiners--
    if (listener != null) t.listeners.delete(listener)
  }
  const { signal } = opts
  try {
    if (signal == null) return await t.promise
    return await new Promise<ContentEntry>((resolve, reject) => {
      const onAbort = (): void => {
        leave()
        reject(signal.reason)
        if (t.joiners === 0) t.controller.abort(signal.reason)
      }
      signal.addEventListener('abort', onAbort, { once: true })
      t.promise.then(resolve, reject).finally(() => { signal.removeEventListener('abort', onAbort) })
    })
  } finally {
    leave()
  }
}

/** Tells `t`'s listeners its progress: at most every PROGRESS_EVERY_MS unless `final`. */
export function emitProgress (t: Transfer, final: boolean, log: MeshLogger): void {
  const now = Date.now()
  if (!final && now - t.lastEmit < PROGRESS_EVERY_MS) return
  t.lastEmit = now
  for (const l of t.listeners) {
    try { l(progressOf(t)) } catch (err) { log.warn({ md5: t.md5, err: (err as Error).message }, 'a progress listener failed') }
  }
}
