import type { ProviderName, ProviderReport } from './providers.ts'
import type { SamplingControls, TokenLogprob } from './sampling.ts'

/** Messages between a StageEngine (main thread) and its worker thread. */
export interface StageWorkerInit {
  modelPath: string
  order: ProviderName[]
  intraOpThreads?: number
  maxBatch: number
  /** false: take the whole present.* back from every run even when the stage could keep its batched caches (comparisons) */
  keepCache?: boolean
  /**
   * Set where the worker's runs and the main thread share the process's CPUs (./stage-engine.ts): one Int32
   * into which the main thread writes a results message's `handoff` number once it has handed them on. The
   * worker waits for its number (at most HANDOFF_WAIT_MS) before its next run, so the results leave at once
   * instead of when the scheduler next gives the main thread a slice of the worker's core.
   */
  handoff?: SharedArrayBuffer
  /** while decoding steps wait, a turn's prompt work aims to take at most this long (ms; default PROMPT_MS_FIRST, prefill.ts) */
  promptMsFirst?: number
}

/**
 * How the last stage picks tokens. `prompt` (for the repetition penalty) is needed on the sequence's first step only.
 * `history`: a resumed sequence (request migration) whose prompt is followed by these already-generated tokens;
 * they count for the penalties and the generator skips their draws.
 */
export interface StageSampling extends SamplingControls { temperature: number, topP: number, seed: number, prompt?: number[], history?: number[] }

export interface StageStepRequest {
  type: 'step'
  id: number
  seq: string
  /** positions already in this sequence's cache here (checked: a mismatch is an error) */
  pastLen: number
  /** first stage: token ids */
  tokens?: number[]
  /** later stages: the hidden state [1, seqLen, hidden], row-major */
  hidden?: Float32Array
  seqLen: number
  /** last stage: how to pick the token (the sequence's generator is seeded on its first step) */
  sampling?: StageSampling
  /** last stage: also return the last position's logits */
  returnLogits?: boolean
  /** last stage: only these tokens may be sampled (a bitset over token ids; constrained decoding) */
  mask?: Uint8Array
  /** last stage: run the step but sample nothing (a chunk of a long prompt before its last one); answers token -1 */
  sample?: boolean
  /**
   * The sequence's micro-batch (0 … k−1 for a pipeline of k stages, chosen by its driver): a stage
   * batches only the steps of one micro-batch together, so the sequences move round the ring in k
   * groups and every stage has a group to work on, instead of all in lock-step with k−1 stages idle.
   */
  group?: number
}

export type ToStageWorker = StageStepRequest | { type: 'drop', seq: string } | { type: 'close' }

export interface StageInfo {
  first: boolean
  last: boolean
  layers: number[]
  hiddenSize: number
  vocab: number
}

export type FromStageWorker =
  | { type: 'ready', provider: ProviderReport, info: StageInfo, loadMs: number, /** batched caches are kept by the worker (kv-cache.ts) */ keepsCache: boolean }
  | { type: 'failed', error: string }
  | { type: 'result', id: number, hidden?: Float32Array, seqLen: number, token?: number, logits?: Float32Array, logprob?: TokenLogprob }
  /** the results of one run, in one message; `handoff`: the number the main thread writes into StageWorkerInit.handoff once it has handed them on */
  | { type: 'results', items: Array<{ type: 'result', id: number, hidden?: Float32Array, seqLen: number, token?: number, logits?: Float32Array, logprob?: TokenLogprob }>, handoff?: number }
  | { type: 'error', id: number, error: string }
  /** one run of the stage's graph: sequences in it, positions per sequence (1: a decode step), how long it took */
  | { type: 'batch', size: number, ms: number, rows: number }
  | { type: 'closed' }
