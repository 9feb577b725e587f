import type { DecoderShape } from './feeds.ts'
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
}

/** What a sequence is generated from. */
export interface GenerateParams {
  prompt: number[]
  maxTokens: number
  temperature: number
  topP: number
  seed: number
  /** tokens that end the sequence (not emitted), e.g. EOS */
  stopTokens: number[]
}

export interface GenerateRequest extends GenerateParams {
  type: 'generate'
  id: number
}

export type ToWorker = GenerateRequest | { type: 'cancel', id: number } | { type: 'close' }

export type FinishReason = 'stop' | 'length' | 'cancelled' | 'error'

export type FromWorker =
  | { type: 'ready', provider: ProviderReport, shape: DecoderShape, loadMs: number }
  | { type: 'failed', error: string }
  /** tokens produced by one model run, as [sequence id, token] pairs */
  | { type: 'step', tokens: Array<[number, number]>, batch: number, kind: 'prefill' | 'decode', ms: number }
  | { type: 'done', id: number, reason: FinishReason, error?: string, promptTokens: number, completionTokens: number }
  | { type: 'closed' }
