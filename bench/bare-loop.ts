/**
 * The "bare onnxruntime-node loop" of the inference benchmark, in its own
 * process (a fresh heap, like the agent's worker thread). Over IPC it gets
 * { n } and answers { tps }: decode tokens/s over tokens 2..n after a prefill.
 *   node bench/bare-loop.ts MODEL.onnx TOKEN,TOKEN,...
 */
import ort from 'onnxruntime-node'
import { decoderShape, emptyPast, presentAsPast, sequenceFeeds } from '../agent/executor/feeds.ts'
import { argmax } from '../agent/executor/sampling.ts'

const [modelPath, promptArg] = process.argv.slice(2)
const prompt = promptArg.split(',').map(Number)
const session = await ort.InferenceSession.create(modelPath, { executionProviders: ['cpu'], graphOptimizationLevel: 'all', intraOpNumThreads: 0 })
const shape = decoderShape(session)

async function loop (n: number): Promise<number> {
  let out = await session.run(sequenceFeeds(prompt, 0, emptyPast(shape, 1)))
  let token = argmax((out.logits.data as Float32Array).subarray((prompt.length - 1) * shape.vocab, prompt.length * shape.vocab))
  const t1 = performance.now()
  for (let i = 1; i < n; i++) {
    out = await session.run(sequenceFeeds([token], prompt.length + i - 1, presentAsPast(shape, out)))
    token = argmax(out.logits.data as Float32Array)
  }
  return (n - 1) / ((performance.now() - t1) / 1000)
}

process.on('message', (m: { n: number }) => {
  void loop(m.n).then(tps => { process.send?.({ tps }) })
})
process.send?.({ ready: true })
