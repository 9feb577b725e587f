/**
 * The "bare onnxruntime-node loop" of the inference benchmark: its own
 * process, and inside it a worker thread, as the agent runs models (ORT in
 * a worker thread measured ~25% faster than on the main thread for the
 * small demo model, so a main-thread loop would not be a fair baseline).
 * Over IPC it gets { n } and answers { tps }: decode tokens/s over tokens
 * 2..n after a prefill.
 *   node bench/bare-loop.ts MODEL.onnx TOKEN,TOKEN,... THREADS
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads'
import ort from 'onnxruntime-node'
import { decoderShape, emptyPast, presentAsPast, sequenceFeeds } from '../agent/executor/feeds.ts'
import { argmax } from '../agent/executor/sampling.ts'

if (isMainThread) {
  const [modelPath, promptArg, threadsArg] = process.argv.slice(2)
  const worker = new Worker(new URL(import.meta.url), { workerData: { modelPath, prompt: promptArg.split(',').map(Number), threads: Number(threadsArg ?? '0') } })
  worker.on('message', (m: unknown) => { process.send?.(m) })
  worker.on('error', (err) => { console.error(err); process.exit(1) })
  process.on('message', (m: unknown) => { worker.postMessage(m) })
} else {
  const { modelPath, prompt, threads } = workerData as { modelPath: string, prompt: number[], threads: number }
  const session = await ort.InferenceSession.create(modelPath, { executionProviders: ['cpu'], graphOptimizationLevel: 'all', intraOpNumThreads: threads })
  const shape = decoderShape(session)
  const loop = async (n: number): Promise<number> => {
    let out = await session.run(sequenceFeeds(prompt, 0, emptyPast(shape, 1)))
    let token = argmax((out.logits.data as Float32Array).subarray((prompt.length - 1) * shape.vocab, prompt.length * shape.vocab))
    const t1 = performance.now()
    for (let i = 1; i < n; i++) {
      out = await session.run(sequenceFeeds([token], prompt.length + i - 1, presentAsPast(shape, out)))
      token = argmax(out.logits.data as Float32Array)
    }
    return (n - 1) / ((performance.now() - t1) / 1000)
  }
  parentPort?.on('message', (m: { n: number }) => {
    void loop(m.n).then(tps => { parentPort?.postMessage({ tps }) })
  })
  parentPort?.postMessage({ ready: true })
}
