/**
 * One model file fetched at a time: calls for the same key (a file's path) run one after another.
 */

const locks = new Map<string, Promise<unknown>>()

/** Runs `fn` after every earlier call for the same key has settled (two deployments of one model share one download). */
export async function withLock<T> (key: string, fn: () => Promise<T>): Promise<T> {
  const run = (locks.get(key) ?? Promise.resolve()).then(fn, fn)
  const tail = run.then(() => undefined, () => undefined)
  locks.set(key, tail)
  try {
    return await run
  } finally {
    if (locks.get(key) === tail) locks.delete(key)
  }
}
