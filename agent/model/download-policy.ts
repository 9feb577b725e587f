/**
 * The pacing shared by the model downloads (http(s), S3, the hub): how many attempts, the backoff between them,
 * and how often progress is reported.
 */

/** Default number of attempts for a download. */
export const DEFAULT_ATTEMPTS = 3
/** Backoff before the second attempt; doubles for each further attempt. */
export const RETRY_BACKOFF_MS = 200
/** Minimum interval between two progress calls (the final call is never held back). */
export const PROGRESS_INTERVAL_MS = 200

/** Called as bytes arrive; total is null when unknown. */
export type ProgressCallback = (p: { receivedBytes: number, totalBytes: number | null }) => void

export interface ProgressReporter {
  tick: (received: number, total: number | null) => void
  final: (received: number, total: number | null) => void
}

/** At most one call per PROGRESS_INTERVAL_MS while bytes arrive (the first at once), plus a final call; never the same report twice in a row. */
export function progressReporter (cb: ProgressCallback | undefined): ProgressReporter {
  let lastAt = -Infinity
  let last: { receivedBytes: number, totalBytes: number | null } | undefined
  const emit = (receivedBytes: number, totalBytes: number | null): void => {
    if (cb === undefined || (last?.receivedBytes === receivedBytes && last.totalBytes === totalBytes)) return
    last = { receivedBytes, totalBytes }
    cb({ receivedBytes, totalBytes })
  }
  return {
    tick (received, total) {
      const now = performance.now()
      if (now - lastAt < PROGRESS_INTERVAL_MS) return
      lastAt = now
      emit(received, total)
    },
    final (received, total) { emit(received, total) }
  }
}
