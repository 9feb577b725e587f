/**
 * Memory bandwidth, measured like STREAM's "copy": every core copies its own
 * 256 MiB buffer repeatedly (memcpy via Buffer.copy, in worker threads, in
 * parallel). Counted as bytes read + bytes written per second.
 *
 *   node bench/membw.ts THREADS     prints the bytes per second (e.g. under taskset: one thread on one CPU)
 */
import { Worker } from 'node:worker_threads'
import os from 'node:os'
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const WORKER = `
const { parentPort, workerData } = require('node:worker_threads')
const size = workerData.size
const src = Buffer.alloc(size, 1)
const dst = Buffer.alloc(size)
src.copy(dst) // touch the pages first
parentPort.on('message', (reps) => {
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < reps; i++) src.copy(dst)
  parentPort.postMessage(Number(process.hrtime.bigint() - t0) / 1e9)
})
parentPort.postMessage('ready')
`

export async function memoryBandwidth (opts: { threads?: number, sizeBytes?: number, reps?: number } = {}): Promise<{ bytesPerSecond: number, threads: number }> {
  const threads = opts.threads ?? os.availableParallelism()
  const size = opts.sizeBytes ?? 256 * 1024 * 1024
  const reps = opts.reps ?? 8
  const workers = Array.from({ length: threads }, () => new Worker(WORKER, { eval: true, workerData: { size } }))
  try {
    await Promise.all(workers.map(async w => await new Promise(resolve => w.once('message', resolve))))
    const run = async (): Promise<number> => {
      const t0 = performance.now()
      await Promise.all(workers.map(async w => await new Promise(resolve => { w.once('message', resolve); w.postMessage(reps) })))
      return (performance.now() - t0) / 1000
    }
    await run() // warm-up
    let best = Infinity
    for (let i = 0; i < 3; i++) best = Math.min(best, await run())
    return { bytesPerSecond: (2 * size * reps * threads) / best, threads }
  } finally {
    await Promise.all(workers.map(async w => await w.terminate()))
  }
}

if (process.argv[1] != null && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const threads = Number(process.argv[2] ?? '1')
  if (!Number.isInteger(threads) || threads < 1) throw new Error(`usage: node bench/membw.ts THREADS (got ${process.argv[2]})`)
  process.stdout.write(`${(await memoryBandwidth({ threads, reps: 6 })).bytesPerSecond}\n`)
}
