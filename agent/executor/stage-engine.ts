import { EventEmitter } from 'node:events'
import os from 'node:os'
import { Worker } from 'node:worker_threads'
import { providerOrder } from './providers.ts'
import type { GpuPresence, ProviderPreference, ProviderReport } from './providers.ts'
import { EngineError } from './engine.ts'
import { PROMPT_MS_FIRST, promptBudgetProblem } from './prefill.ts'
import type { FromStageWorker, StageInfo, StageSampling, StageWorkerInit, ToStageWorker } from './stage-protocol.ts'
import type { TokenLogprob } from './sampling.ts'

export interface StageEngineOptions {
  modelPath: string
  provider: ProviderPreference
  gpus: GpuPresence
  maxBatch?: number
  intraOpThreads?: number
  /** false: take the whole present.* back from every run even when the stage could keep its batched caches (comparisons) */
  keepCache?: boolean
  /**
   * The worker waits, after posting a run's results, until this thread has handed them on (at most a
   * couple of ms; StageWorkerInit.handoff). Default: when the model's threads take every CPU the process
   * may use (a box of one core, or a process pinned to as many CPUs as ONNX Runtime threads), where the
   * worker's next run would otherwise hold the core the results need. Only on the CPU provider: a GPU's
   * runs leave the core to the main thread.
   */
  shareCore?: boolean
  /** while decoding steps wait, a turn's prompt work aims to take at most this long (ms; default PROMPT_MS_FIRST; Infinity: rows only) */
  promptMsFirst?: number
}

export type StageOutput = { hidden: Float32Array, seqLen: number } | { token: number, logits?: Float32Array, logprob?: TokenLogprob }

/**
 * One stage of a split model, run in its own worker thread (see
 * stage-worker.ts). step() is called per sequence per step by whoever feeds
 * the stage (the vDAG driver or the previous stage); concurrent steps of
 * different sequences are batched. drop() frees a sequence's cache.
 */
export class StageEngine extends EventEmitter {
  readonly provider: ProviderReport
  readonly info: StageInfo
  readonly loadMs: number
  /** whether the worker keeps batched caches itself (the stage's graph gives each step's keys and values) */
  readonly keepsCache: boolean
  /** while decoding steps wait, a turn's prompt work aims to take at most this long (ms; Infinity: no time bound): prefill.ts */
  readonly promptMsFirst: number
  private readonly worker: Worker
  private readonly pending = new Map<number, { resolve: (o: StageOutput) => void, reject: (e: Error) => void }>()
  private readonly sequences = new Set<string>()
  private nextId = 1
  private closed = false
  private readonly handoff: Int32Array | null

  private constructor (worker: Worker, ready: Extract<FromStageWorker, { type: 'ready' }>, handoff: SharedArrayBuffer | undefined, promptMsFirst: number) {
    super()
    this.worker = worker
    // the worker waits for hand-offs only on the CPU provider (stage-worker.ts)
    this.handoff = handoff != null && ready.provider.name === 'cpu' ? new Int32Array(handoff) : null
    this.provider = ready.provider
    this.info = ready.info
    this.loadMs = ready.loadMs
    this.keepsCache = ready.keepsCache
    this.promptMsFirst = promptMsFirst
    worker.on('message', (m: FromStageWorker) => { this.onMessage(m) })
    worker.on('error', (err) => { this.fail(err) })
    worker.on('exit', (code) => { if (!this.closed) this.fail(new EngineError(`stage worker exited (${code})`, 'worker_exit')) })
  }

  static async start (opts: StageEngineOptions): Promise<StageEngine> {
    // intraOpThreads 0 or unset: ONNX Runtime's default, a thread per CPU
    const cpus = os.availableParallelism()
    const threads = opts.intraOpThreads != null && opts.intraOpThreads > 0 ? opts.intraOpThreads : cpus
    const shareCore = opts.shareCore ?? cpus <= threads
    const problem = promptBudgetProblem(undefined, opts.promptMsFirst)
    if (problem != null) throw new EngineError(problem, 'bad_request')
    const init: StageWorkerInit = { modelPath: opts.modelPath, order: providerOrder(opts.provider, opts.gpus), intraOpThreads: opts.intraOpThreads, maxBatch: opts.maxBatch ?? 8, keepCache: opts.keepCache, promptMsFirst: opts.promptMsFirst, ...(shareCore ? { handoff: new SharedArrayBuffer(4) } : {}) }
    const worker = new Worker(new URL('./stage-worker.ts', import.meta.url), { workerData: init })
    const ready = await new Promise<Extract<FromStageWorker, { type: 'ready' }>>((resolve, reject) => {
      const onMessage = (m: FromStageWorker): void => {
        if (m.type === 'ready') { cleanup(); resolve(m) }
        if (m.type === 'failed') { cleanup(); void worker.terminate(); reject(new EngineError(m.error, 'load_failed')) }
      }
      const onError = (err: Error): void => { cleanup(); reject(new EngineError(err.message, 'load_failed')) }
      const cleanup = (): void => { worker.off('message', onMessage); worker.off('error', onError) }
      worker.on('message', onMessage)
      worker.on('error', onError)
    })
    return new StageEngine(worker, ready, init.handoff, opts.promptMsFirst ?? PROMPT_MS_FIRST)
  }

  /** Sequences holding a cache here. */
  get active (): number { return this.sequences.size }

  get waiting (): number { return this.pending.size }

  async step (seq: string, input: { tokens: number[] } | { hidden: Float32Array, seqLen: number }, pastLen: number, opts: { sampling?: StageSampling, returnLogits?: boolean, mask?: Uint8Array, sample?: boolean, group?: number } = {}): Promise<StageOutput> {
    if (this.closed) throw new EngineError('the stage is unloaded', 'closed')
    const id = this.nextId++
    this.sequences.add(seq)
    // the sampling settings go with every step (the worker keeps them from the first); the prompt and history only with the first
    let sampling = opts.sampling
    if ((sampling?.prompt != null || sampling?.history != null) && pastLen > 0) { const { prompt: _, history: __, ...rest } = sampling; sampling = rest }
    const extra = {
      sampling,
      returnLogits: opts.returnLogits,
      ...(opts.mask != null && this.info.last ? { mask: opts.mask } : {}),
      ...(opts.sample === false ? { sample: false } : {}),
      ...(opts.group != null ? { group: opts.group } : {})
    }
    const msg: ToStageWorker = 'tokens' in input
      ? { type: 'step', id, seq, pastLen, tokens: input.tokens, seqLen: input.tokens.length, ...extra }
      : { type: 'step', id, seq, pastLen, hidden: input.hidden, seqLen: input.seqLen, ...extra }
    return await new Promise<StageOutput>((resolve, reject) => {
      this.pending.set(id, { resolve, reject })
      this.worker.postMessage(msg, 'hidden' in input && input.hidden.byteOffset === 0 && input.hidden.byteLength === input.hidden.buffer.byteLength ? [input.hidden.buffer as ArrayBuffer] : [])
    })
  }

  drop (seq: string): void {
    if (!this.sequences.delete(seq) || this.closed) return
    this.worker.postMessage({ type: 'drop', seq } satisfies ToStageWorker)
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    const done = new Promise<void>(resolve => {
      const t = setTimeout(resolve, 5000)
      this.worker.on('message', (m: FromStageWorker) => { if (m.type === 'closed') { clearTimeout(t); resolve() } })
    })
    this.worker.postMessage({ type: 'close' } satisfies ToStageWorker)
    await done
    await this.worker.terminate()
    this.rejectAll(new EngineError('the stage is unloaded', 'closed'))
  }

  /** whether the worker waits for each run's results to be handed on (StageEngineOptions.shareCore) */
  get sharesCore (): boolean { return this.handoff != null }

  /**
   * Tells the worker results message `n` is handed on: after this turn's microtasks, in which the steps'
   * promises resolved and their frames were queued and written (mesh/pipeline-link.ts flushes in a microtask).
   */
  private handedOn (n: number): void {
    const h = this.handoff
    if (h == null) return
    setImmediate(() => {
      Atomics.store(h, 0, n)
      Atomics.notify(h, 0)
    })
  }

  private onMessage (m: FromStageWorker): void {
    if (m.type === 'results') {
      if (m.handoff != null) this.handedOn(m.handoff)
      for (const r of m.items) this.onMessage(r)
    } else if (m.type === 'result') {
      const p = this.pending.get(m.id)
      this.pending.delete(m.id)
      if (p == null) return
      if (m.token != null) p.resolve(m.logprob != null ? { token: m.token, logits: m.logits, logprob: m.logprob } : { token: m.token, logits: m.logits })
      else p.resolve({ hidden: m.hidden as Float32Array, seqLen: m.seqLen })
    } else if (m.type === 'error') {
      const p = this.pending.get(m.id)
      this.pending.delete(m.id)
      p?.reject(new EngineError(m.error, 'step_failed'))
    } else if (m.type === 'batch') {
      this.emit('batch', m)
    }
  }

  private fail (err: Error): void {
    this.rejectAll(err)
    if (!this.closed) {
      this.closed = true
      this.emit('crashed', err)
    }
  }

  private rejectAll (err: Error): void {
    for (const p of this.pending.values()) p.reject(err)
    this.pending.clear()
  }
}
