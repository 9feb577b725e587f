/**
 * The pipeline protocol's messages (/blockmesh/pipeline/1.0.0, agent side): what a step, a result, an
 * error and a drop carry, their zod-checked meta, their wire form (mesh/pipeline-frame.ts frames), and the
 * typed errors a driver's step fails with. The service that runs stages and drives sequences is
 * ./pipeline.ts.
 */
import { z } from 'zod'
import { FLAG_NO_SAMPLE, PipelineFrameError, bytesOf, float32s, groupFlags, groupOf, int32s } from '../../mesh/pipeline-frame.ts'
import type { PipelineFrame } from '../../mesh/pipeline-frame.ts'
import { parsePeerId } from '../../mesh/node.ts'
import { MeshError } from '../../mesh/errors.ts'
import type { StageEngine } from '../executor/stage-engine.ts'
import type { TokenLogprob } from '../executor/sampling.ts'

/** One hop of a pipeline's route: the stage block and the peer running it. */
export interface RouteHop { peer: string, block: string }

/** Where stage engines of blocks running here are found (throws when there is none). */
export type LocalStages = (block: string) => StageEngine

export interface StageStepInput {
  /** the request's step (tokens generated so far; informative) */
  step: number
  pastLen: number
  tokens?: number[]
  hidden?: Float32Array
  seqLen: number
  /** for the last stage: the tokens it may sample (bitset; constrained decoding) */
  mask?: Uint8Array
  /** false: a prompt chunk before the last; the last stage samples nothing and answers token -1 */
  sample?: boolean
}

export interface StageStepResult { token: number, logits?: Float32Array, logprob?: TokenLogprob }

/** A sequence's pipeline as its driver sees it: feed a step, get the sampled token back. */
export interface StageLink {
  step: (input: StageStepInput, signal?: AbortSignal) => Promise<StageStepResult>
  close: () => void
}

export const SamplingSchema = z.object({
  temperature: z.number().min(0).max(2),
  topP: z.number().gt(0).max(1),
  seed: z.number().int().min(0).max(0xffffffff),
  presencePenalty: z.number().min(-2).max(2).optional(),
  frequencyPenalty: z.number().min(-2).max(2).optional(),
  repetitionPenalty: z.number().gt(0).max(10).optional(),
  topLogprobs: z.number().int().min(0).max(20).optional(),
  prompt: z.array(z.number().int().min(0).max(0x7fffffff)).max(1 << 20).optional(),
  history: z.array(z.number().int().min(0).max(0x7fffffff)).max(1 << 20).optional()
}).strict()

/** A token's logprob as it comes back from a peer's last stage. */
export const LogprobSchema = z.object({
  logprob: z.number().nullable().transform(v => v ?? -Infinity),
  top: z.array(z.tuple([z.number().int().min(0), z.number().nullable().transform(v => v ?? -Infinity)])).max(20)
}).strict()

/** A mask travels in a step frame's meta, base64 (at most 2^24 tokens). */
export const MAX_MASK_BASE64 = 4 * Math.ceil((1 << 21) / 3)

/** Hops a route may have after the first. */
export const MAX_HOP = 31

const isPeerId = (s: string): boolean => { try { parsePeerId(s); return true } catch { return false } }
const PeerIdSchema = z.string().min(1).max(128).refine(isPeerId, { message: 'not a peer id' })
const HopSchema = z.object({ peer: PeerIdSchema, block: z.string().min(1).max(64) }).strict()

/** What a sequence's first step tells each stage: its block, the hops after it, where tokens go, how to sample. */
export const OpenSchema = z.object({
  block: z.string().min(1).max(64),
  route: z.array(HopSchema).max(MAX_HOP),
  origin: PeerIdSchema,
  sampling: SamplingSchema,
  returnLogits: z.boolean(),
  stages: z.number().int().min(1).max(32)
}).strict()
export type OpenMeta = z.output<typeof OpenSchema>

/** The meta of each frame kind (a frame without meta is checked as `{}`). */
export const StepMetaSchema = z.object({ open: OpenSchema.optional(), mask: z.string().max(MAX_MASK_BASE64).optional() }).strict()
export const ResultMetaSchema = z.object({ logprob: LogprobSchema.optional() }).strict()
export const ErrorMetaSchema = z.object({ message: z.string().max(4000), code: z.string().max(64) }).strict()
export const DropMetaSchema = z.object({}).strict()


/** A stage on the route answered a step with an error (its engine failed, it has no such stage, …). */
export class StageFailedError extends MeshError {
  readonly remoteCode: string
  constructor (message: string, remoteCode: string) {
    super(message, 'ERR_STAGE_FAILED')
    this.name = 'StageFailedError'
    this.remoteCode = remoteCode
  }
}

/** A peer on the route disconnected (or its stream broke) while a step was under way. */
export class StagePeerLostError extends MeshError {
  readonly peer: string
  constructor (peer: string, message: string, options?: ErrorOptions) {
    super(message, 'ERR_STAGE_PEER_LOST', options)
    this.name = 'StagePeerLostError'
    this.peer = peer
  }
}

/** A step got no answer in time. */
export class StepTimeoutError extends MeshError {
  constructor (message: string) {
    super(message, 'ERR_STEP_TIMEOUT')
    this.name = 'StepTimeoutError'
  }
}

/** A step message between stages (in-process for a local hop, a frame for a remote one). */
export interface StepMsg {
  seq: string
  /** the hop of the route this step is for (0: the first stage) */
  hop: number
  /** wire step: a counter per sequence, for matching answers */
  step: number
  pastLen: number
  rows: number
  tokens?: Int32Array | number[]
  hidden?: Float32Array
  mask?: Uint8Array
  sample: boolean
  /** the sequence's micro-batch (chosen by its driver; stages batch one micro-batch at a time) */
  group?: number
  open?: OpenMeta
}
export interface ResultMsg { seq: string, step: number, token: number, logprob?: TokenLogprob, logits?: Float32Array }
export interface ErrorMsg { seq: string, step: number, message: string, code: string }

// ------------------------------------------------------------------ wire form of the messages

export function stepFrame (msg: StepMsg): PipelineFrame {
  const meta: Record<string, unknown> = {}
  if (msg.open != null) meta.open = msg.open
  if (msg.mask != null) meta.mask = Buffer.from(msg.mask.buffer, msg.mask.byteOffset, msg.mask.byteLength).toString('base64')
  const payload = msg.tokens != null ? bytesOf(msg.tokens instanceof Int32Array ? msg.tokens : Int32Array.from(msg.tokens)) : bytesOf(msg.hidden as Float32Array)
  return { kind: 'step', seq: msg.seq, step: msg.step, pastLen: msg.pastLen, rows: msg.rows, token: msg.hop, flags: (msg.sample ? 0 : FLAG_NO_SAMPLE) | groupFlags(msg.group), dtype: msg.tokens != null ? 'int32' : 'float32', meta: Object.keys(meta).length > 0 ? meta : null, payload }
}

export function resultFrame (msg: ResultMsg): PipelineFrame {
  return { kind: 'result', seq: msg.seq, step: msg.step, pastLen: 0, rows: msg.logits != null ? msg.logits.length : 0, token: msg.token, flags: 0, dtype: msg.logits != null ? 'float32' : null, meta: msg.logprob != null ? { logprob: msg.logprob } : null, payload: msg.logits != null ? bytesOf(msg.logits) : null }
}

export function errorFrame (msg: ErrorMsg): PipelineFrame {
  return { kind: 'error', seq: msg.seq, step: msg.step, pastLen: 0, rows: 0, token: -1, flags: 0, dtype: null, meta: { message: msg.message, code: msg.code }, payload: null }
}

export function dropFrame (seq: string, hop: number): PipelineFrame {
  return { kind: 'drop', seq, step: 0, pastLen: 0, rows: 0, token: hop, flags: 0, dtype: null, meta: null, payload: null }
}

/** A message read from a peer's frame */
export type InboundMessage =
  | { kind: 'step', msg: StepMsg }
  | { kind: 'result', msg: ResultMsg }
  | { kind: 'error', msg: ErrorMsg }
  | { kind: 'drop', seq: string, hop: number }

/** A peer's frame checked against the protocol and turned into a message; PipelineFrameError when it breaks a rule. */
export function messageOf (f: PipelineFrame): InboundMessage {
  const bad = (why: string): never => { throw new PipelineFrameError(why) }
  switch (f.kind) {
    case 'step': {
      const meta = StepMetaSchema.safeParse(f.meta ?? {})
      if (!meta.success) bad(`step meta: ${meta.error?.issues[0]?.message ?? 'invalid'}`)
      const m = meta.data as z.output<typeof StepMetaSchema>
      if (f.dtype == null || f.payload == null) bad('a step without a tensor')
      if (f.token < 0 || f.token > MAX_HOP) bad(`hop ${f.token} out of range`)
      const payload = f.payload as Uint8Array
      const group = groupOf(f.flags)
      const msg: StepMsg = {
        seq: f.seq,
        hop: f.token,
        step: f.step,
        pastLen: f.pastLen,
        rows: f.rows,
        sample: (f.flags & FLAG_NO_SAMPLE) === 0,
        ...(group != null ? { group } : {}),
        ...(f.dtype === 'int32' ? { tokens: int32s(payload) } : { hidden: float32s(payload) }),
        ...(m.mask != null ? { mask: new Uint8Array(Buffer.from(m.mask, 'base64')) } : {}),
        ...(m.open != null ? { open: m.open } : {})
      }
      if (msg.tokens != null && msg.tokens.some(t => t < 0)) bad('negative token id')
      return { kind: 'step', msg }
    }
    case 'result': {
      const meta = ResultMetaSchema.safeParse(f.meta ?? {})
      if (!meta.success || (f.dtype != null && f.dtype !== 'float32')) bad('result meta or logits malformed')
      const lp = meta.data?.logprob
      return { kind: 'result', msg: { seq: f.seq, step: f.step, token: f.token, ...(lp != null ? { logprob: lp } : {}), ...(f.payload != null ? { logits: Float32Array.from(float32s(f.payload)) } : {}) } }
    }
    case 'error': {
      const meta = ErrorMetaSchema.safeParse(f.meta ?? {})
      if (!meta.success || f.payload != null) bad('error meta malformed')
      const e = meta.data as z.output<typeof ErrorMetaSchema>
      return { kind: 'error', msg: { seq: f.seq, step: f.step, message: e.message, code: e.code } }
    }
    case 'drop': {
      if (!DropMetaSchema.safeParse(f.meta ?? {}).success || f.payload != null) bad('drop frame malformed')
      return { kind: 'drop', seq: f.seq, hop: f.token }
    }
  }
}
