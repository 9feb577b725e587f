import type { DecoderShape } from './feeds.ts'
import type { GrammarNode } from './json-constraint.ts'
import type { SamplingControls, TokenLogprob } from './sampling.ts'
import type { ProviderName, ProviderReport } from './providers.ts'

/** Messages between the engine (main thread) and its worker thread. */
export interface WorkerInit {
  modelPath: string
  order: ProviderName[]
  intraOpThreads?: number
  /** sequences decoded together in one step, at most */
  maxBatch: number
  /** positions the model supports (prompt + completion) */
  contextLength: number
  /** false: take the whole present.* back from every run even when the graph gives step outputs (comparisons) */
  keepCache?: boolean
  /** a prompt goes through in chunks of at most this many tokens (default PREFILL_CHUNK, prefill.ts) */
  prefillChunk?: number
  /** while others decode, a turn's prompt work aims to take at most this long (ms; default PROMPT_MS_FIRST; Infinity: chunks and rows only) */
  promptMsFirst?: number
}

/**
 * Constrained decoding: each step only tokens whose text keeps the output a valid prefix of the
 * grammar are sampled (the per-step logit mask), EOS only when the document is complete, and the
 * sequence stops ('stop') once it is. The token texts travel to the worker once per vocabulary key.
 */
export interface ConstraintParams {
  grammar: GrammarNode
  /** sequences with the same key share the grammar and its cached masks */
  grammarKey: string
  vocab: { key: string, size: number, texts?: ReadonlyArray<string | null> }
}

/** What a sequence is generated from. */
export interface GenerateParams extends SamplingControls {
  prompt: number[]
  maxTokens: number
  temperature: number
  topP: number
  seed: number
  /** tokens that end the sequence (not emitted), e.g. EOS */
  stopTokens: number[]
  constraint?: ConstraintParams
  /**
   * A resumed sequence (request migration): the last `resumed` prompt tokens are output an earlier
   * run already generated. They count for the penalties, the JSON constraint advances over them and
   * the seeded generator skips their draws, so the sequence goes on as if it had never stopped.
   */
  resumed?: number
}

export interface GenerateRequest extends GenerateParams {
  type: 'generate'
  id: number
}

export type ToWorker =
  | GenerateRequest
  | { type: 'cancel', id: number }
  | { type: 'close' }
  /** a vocabulary's token texts (by key), sent before the first constrained sequence that needs it */
  | { type: 'vocab', key: string, size: number, texts: ReadonlyArray<string | null> }

export type { TokenLogprob } from './sampling.ts'

export type FinishReason = 'stop' | 'length' | 'cancelled' | 'error'

export type FromWorker =
  | { type: 'ready', provider: ProviderReport, shape: DecoderShape, loadMs: number, /** the batched cache is kept by the worker (kv-cache.ts) */ keepsCache: boolean }
  | { type: 'failed', error: string }
  /** tokens produced by one model run, as [sequence id, token] pairs */
  | { type: 'step', tokens: Array<[number, number]>, batch: number, kind: 'prefill' | 'decode', ms: number, logprobs?: Array<[number, TokenLogprob]> }
  | { type: 'done', id: number, reason: FinishReason, error?: string, promptTokens: number, completionTokens: number }
  | { type: 'closed' }
