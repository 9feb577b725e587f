/**
 * The wire protocol of /blockmesh/generate/1.0.0 (see ./generate-service.ts for the exchange): bounds,
 * the request and answer schemas, the typed error, and the wire form of GenerateParams.
 */
import { z } from 'zod'
import { MeshError } from '../../mesh/errors.ts'
import { LogprobSchema } from '../vdag/pipeline-protocol.ts'
import { ComponentSpecSchema } from '../registry/components.ts'
import type { GenerateParams } from '../executor/engine.ts'
import { MAX_GRAMMAR_KEY_CHARS, MAX_GRAMMAR_LITERAL_CHARS } from '../executor/json-constraint.ts'
import type { GrammarNode } from '../executor/json-constraint.ts'

export const GENERATE_PROTOCOL = '/blockmesh/generate/1.0.0'
/**
 * 1.1.0: the same exchange, and a failed generation's done frame carries its error code (migration_limit,
 * model_not_ready, …), so the serving agent answers the client with the code and status it would have
 * given had the generation run there; a generate request may carry the client's session key (a vDAG's
 * driver routes its stages by it). A 1.0.0 stream carries neither: 1.0.0 frames are strict both ways, and
 * an older peer would take the field for a malformed frame. Hosts serve both; clients ask for 1.1.0 first.
 */
export const GENERATE_PROTOCOL_CODES = '/blockmesh/generate/1.1.0'

/** streams of this protocol per connection, each way (one per request): a full batch of the largest maxBatch */
export const GENERATE_MAX_STREAMS = 256
export const MAX_REQUEST_BYTES = 16 * 1024 * 1024
export const MAX_ANSWER_BYTES = 1024 * 1024
/** a prompt (with the replayed output of a migrated request) has at most this many tokens */
export const MAX_PROMPT_TOKENS = 1 << 20
/** a grammar nests at most this deep (JSON Schema objects/arrays are a few levels) */
export const MAX_GRAMMAR_DEPTH = 64

const TokenId = z.number().int().min(0).max(0x7fffffff)

const GrammarSchema: z.ZodType<GrammarNode> = z.lazy(() => z.union([
  z.object({ type: z.literal('any') }).strict(),
  z.object({ type: z.literal('string') }).strict(),
  z.object({ type: z.literal('number'), integer: z.boolean() }).strict(),
  z.object({ type: z.literal('literal'), values: z.array(z.string().max(MAX_GRAMMAR_LITERAL_CHARS)).min(1).max(1024) }).strict(),
  z.object({ type: z.literal('object'), props: z.array(z.object({ key: z.string().max(MAX_GRAMMAR_KEY_CHARS), value: GrammarSchema, required: z.boolean() }).strict()).max(1024).nullable() }).strict(),
  z.object({ type: z.literal('array'), items: GrammarSchema.nullable() }).strict(),
  z.object({ type: z.literal('union'), options: z.array(GrammarSchema).min(1).max(16) }).strict()
]))

/** What the host runs: GenerateParams without the vocabulary's texts. */
export const WireParamsSchema = z.object({
  prompt: z.array(TokenId).min(1).max(MAX_PROMPT_TOKENS),
  maxTokens: z.number().int().min(1).max(1 << 24),
  temperature: z.number().min(0).max(2),
  topP: z.number().gt(0).max(1),
  seed: z.number().int().min(0).max(0xffffffff),
  stopTokens: z.array(TokenId).max(256),
  presencePenalty: z.number().min(-2).max(2).optional(),
  frequencyPenalty: z.number().min(-2).max(2).optional(),
  repetitionPenalty: z.number().gt(0).max(10).optional(),
  topLogprobs: z.number().int().min(0).max(20).optional(),
  resumed: z.number().int().min(0).max(MAX_PROMPT_TOKENS).optional(),
  /** constrained decoding: the grammar, and the size of the client's vocabulary (the host checks its own) */
  constraint: z.object({ grammar: GrammarSchema, vocabSize: z.number().int().min(1).max(1 << 24) }).strict().optional()
}).strict().refine(p => (p.resumed ?? 0) <= p.prompt.length, { message: 'resumed counts tokens of the prompt', path: ['resumed'] })
export type WireParams = z.output<typeof WireParamsSchema>

const Block = z.string().min(1).max(64)
export const GenerateRequestSchema = z.discriminatedUnion('op', [
  /** session (1.1.0 only): the client's session key, for a host that routes further (a vDAG's stages) */
  z.object({ v: z.literal(1), op: z.literal('generate'), block: Block, params: WireParamsSchema, session: z.string().min(1).max(256).optional() }).strict(),
  z.object({ v: z.literal(1), op: z.literal('describe'), block: Block }).strict()
])
export type GenerateRequest = z.output<typeof GenerateRequestSchema>

const Text = (n: number): z.ZodString => z.string().max(n)
export const AnswerSchema = z.discriminatedUnion('t', [
  z.object({ t: z.literal('accepted'), instance: Text(64), provider: Text(32) }).strict(),
  z.object({ t: z.literal('tokens'), ids: z.array(TokenId).min(1).max(4096), logprobs: z.array(LogprobSchema).max(4096).optional() }).strict(),
  z.object({
    t: z.literal('done'),
    reason: z.enum(['stop', 'length', 'cancelled', 'error']),
    promptTokens: z.number().int().min(0),
    completionTokens: z.number().int().min(0),
    error: Text(2000).optional(),
    lost: z.boolean().optional(),
    /** 1.1.0 only: the failure's code */
    code: Text(64).optional()
  }).strict(),
  z.object({ t: z.literal('component'), instance: Text(64), provider: Text(32), spec: z.unknown() }).strict(),
  z.object({ t: z.literal('error'), code: Text(64), message: Text(2000) }).strict()
])
export type Answer = z.output<typeof AnswerSchema>

/**
 * A refusal or failure on this protocol. `lost`: the instance (or the way to it) is gone, so the request
 * may go on elsewhere; otherwise it is the request's own fault (bad_request) and would fail anywhere.
 */
export class GenerateError extends MeshError {
  readonly lost: boolean
  constructor (code: string, message: string, lost: boolean, options?: ErrorOptions) {
    super(message, code, options)
    this.name = 'GenerateError'
    this.lost = lost
  }
}

/** The wire form of GenerateParams (the vocabulary's texts stay here). */
export function wireParams (p: GenerateParams): WireParams {
  const w: WireParams = { prompt: p.prompt, maxTokens: p.maxTokens, temperature: p.temperature, topP: p.topP, seed: p.seed >>> 0, stopTokens: p.stopTokens }
  if (p.presencePenalty != null) w.presencePenalty = p.presencePenalty
  if (p.frequencyPenalty != null) w.frequencyPenalty = p.frequencyPenalty
  if (p.repetitionPenalty != null) w.repetitionPenalty = p.repetitionPenalty
  if (p.topLogprobs != null) w.topLogprobs = p.topLogprobs
  if (p.resumed != null && p.resumed > 0) w.resumed = p.resumed
  if (p.constraint != null) w.constraint = { grammar: p.constraint.grammar, vocabSize: p.constraint.vocab.size }
  return w
}

/** Whether `v` nests at most `limit` deep (checked before the schema, without recursion). */
export function depth (v: unknown, limit: number): boolean {
  // iterative, so a hostile nesting cannot overflow the stack before the schema sees it
  const stack: Array<[unknown, number]> = [[v, 0]]
  while (stack.length > 0) {
    const [x, d] = stack.pop() as [unknown, number]
    if (d > limit) return false
    if (x != null && typeof x === 'object') for (const y of Object.values(x)) stack.push([y, d + 1])
  }
  return true
}

