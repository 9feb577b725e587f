/**
 * The fetcher's waits: how long a busy source is left alone, and an abortable sleep (the holder and manifest
 * waits). An unreachable source's retries are the transfer's bookkeeping (./swarm.ts).
 */

/** A busy source waits this long, doubled per busy answer in a row, at most BUSY_MAX_MS. */
export const BUSY_MS = 100
export const BUSY_MAX_MS = 2000

/** How long a source that answered busy `busy` times in a row is left alone. */
export function busyBackoffMs (busy: number): number {
  return Math.min(BUSY_MAX_MS, BUSY_MS * 2 ** (busy - 1))
}

export function sleep (ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    signal.throwIfAborted()
    const onAbort = (): void => { clearTimeout(timer); reject(signal.reason) }
    const timer = setTimeout(() => { signal.removeEventListener('abort', onAbort); resolve() }, ms)
    signal.addEventListener('abort', onAbort, { once: true })
  })
}
