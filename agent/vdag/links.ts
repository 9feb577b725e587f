import { z } from 'zod'
import type { MeshNode } from '../../mesh/node.ts'
import { parsePeerId } from '../../mesh/node.ts'
import { PeerStreamSlots, TENSOR_MAX_STREAMS, TENSOR_PROTOCOL, TensorChannel, asFloat32, float32Bytes, releaseOnClose } from '../../mesh/tensor.ts'
import type { StageEngine } from '../executor/stage-engine.ts'
import type { StageSampling } from '../executor/stage-protocol.ts'
import type { TokenLogprob } from '../executor/sampling.ts'

/** One hop of a pipeline as its upstream sees it: feed a step, get the sampled token back. */
export interface StageLink {
  step: (input: StageStepInput, signal?: AbortSignal) => Promise<StageStepResult>
  close: () => void
}

export interface StageStepInput {
  step: number
  pastLen: number
  tokens?: number[]
  hidden?: Float32Array
  seqLen: number
  /** for the last stage: the tokens it may sample (bitset; constrained decoding) */
  mask?: Uint8Array
}

export interface StageStepResult { token: number, logits?: Float32Array, logprob?: TokenLogprob }

export interface RouteHop { peer: string, block: string }

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

/** A mask travels in a step message's meta, base64 (at most 2^24 tokens). */
export const MAX_MASK_BASE64 = 4 * Math.ceil((1 << 21) / 3)

export const OpenMetaSchema = z.object({
  block: z.string().min(1).max(64),
  route: z.array(z.object({ peer: z.string().min(1).max(128), block: z.string().min(1).max(64) }).strict()).max(31),
  sampling: SamplingSchema,
  returnLogits: z.boolean().default(false)
}).strict()

/** Where stage engines of blocks running here are found. */
export type LocalStages = (block: string) => StageEngine

/**
 * A stage running on this agent: its engine, then the rest of the route.
 * Activations never leave the process for a local hop.
 */
export class LocalStageLink implements StageLink {
  private readonly engine: StageEngine
  private readonly seq: string
  private readonly downstream: StageLink | null
  private readonly opts: { sampling: StageSampling, returnLogits: boolean }

  constructor (engine: StageEngine, seq: string, downstream: StageLink | null, opts: { sampling: StageSampling, returnLogits: boolean }) {
    this.engine = engine
    this.seq = seq
    this.downstream = downstream
    this.opts = opts
  }

  async step (input: StageStepInput, signal?: AbortSignal): Promise<StageStepResult> {
    const out = await this.engine.step(this.seq, input.tokens != null ? { tokens: input.tokens } : { hidden: input.hidden as Float32Array, seqLen: input.seqLen }, input.pastLen, { ...this.opts, mask: input.mask })
    if ('token' in out) return out.logprob != null ? { token: out.token, logits: out.logits, logprob: out.logprob } : { token: out.token, logits: out.logits }
    if (this.downstream == null) throw new Error('this stage produces hidden states but the route has no next stage')
    signal?.throwIfAborted()
    return await this.downstream.step({ step: input.step, pastLen: input.pastLen, hidden: out.hidden, seqLen: out.seqLen, mask: input.mask }, signal)
  }

  close (): void {
    this.engine.drop(this.seq)
    this.downstream?.close()
  }
}

const slots = new WeakMap<MeshNode, PeerStreamSlots>()

/** This node's tensor streams per peer (each at most TENSOR_MAX_STREAMS, the limit the peer's handler accepts). */
export function tensorSlots (node: MeshNode): PeerStreamSlots {
  let s = slots.get(node)
  if (s == null) { s = new PeerStreamSlots(TENSOR_MAX_STREAMS, 'tensor'); slots.set(node, s) }
  return s
}

/** A stage on a peer, over /blockmesh/tensor/1.0.0: tokens or activations out, the token back. */
export class RemoteStageLink implements StageLink {
  private readonly channel: TensorChannel
  private readonly seq: string

  private constructor (channel: TensorChannel, seq: string) {
    this.channel = channel
    this.seq = seq
  }

  static async open (node: MeshNode, hop: RouteHop, seq: string, rest: RouteHop[], opts: { sampling: StageSampling, returnLogits: boolean }, signal?: AbortSignal): Promise<RemoteStageLink> {
    // one stream per sequence per hop: beyond TENSOR_MAX_STREAMS to this peer, wait for one to close
    const release = await tensorSlots(node).acquire(hop.peer, signal)
    let stream
    try {
      stream = await node.libp2p.dialProtocol(parsePeerId(hop.peer), TENSOR_PROTOCOL, { signal: AbortSignal.any([AbortSignal.timeout(15_000), ...(signal != null ? [signal] : [])]), maxOutboundStreams: TENSOR_MAX_STREAMS })
    } catch (err) {
      release()
      throw err
    }
    releaseOnClose(stream, release)
    const channel = new TensorChannel(stream)
    try {
      await channel.send({ kind: 'open', seq, meta: { block: hop.block, route: rest, sampling: opts.sampling, returnLogits: opts.returnLogits } }, undefined, signal)
      const answer = await channel.recv(signal)
      if (answer.header.kind !== 'opened') throw new Error(`peer refused the stage: ${String(answer.header.meta?.message ?? answer.header.kind)}`)
    } catch (err) {
      channel.abort((err as Error).message)
      throw err
    }
    return new RemoteStageLink(channel, seq)
  }

  async step (input: StageStepInput, signal?: AbortSignal): Promise<StageStepResult> {
    const meta = input.mask != null ? { pastLen: input.pastLen, mask: Buffer.from(input.mask.buffer, input.mask.byteOffset, input.mask.byteLength).toString('base64') } : { pastLen: input.pastLen }
    if (input.tokens != null) {
      await this.channel.send({ kind: 'step', seq: this.seq, step: input.step, dtype: 'int32', shape: [input.tokens.length], meta }, new Uint8Array(Int32Array.from(input.tokens).buffer), signal)
    } else {
      const h = input.hidden as Float32Array
      await this.channel.send({ kind: 'step', seq: this.seq, step: input.step, dtype: 'float32', shape: [1, input.seqLen, h.length / input.seqLen], meta }, float32Bytes(h), signal)
    }
    const { header, payload } = await this.channel.recv(signal)
    if (header.kind === 'error') throw new Error(`stage failed on the peer: ${String(header.meta?.message ?? 'unknown error')}`)
    if (header.kind !== 'result' || typeof header.meta?.token !== 'number' || header.step !== input.step) throw new Error(`unexpected answer from the stage (${header.kind}, step ${header.step ?? '?'})`)
    const logits = payload != null ? Float32Array.from(asFloat32(payload)) : undefined
    if (header.meta.logprob == null) return { token: header.meta.token, logits }
    const lp = LogprobSchema.safeParse(header.meta.logprob)
    if (!lp.success) throw new Error('unexpected logprob from the stage')
    return { token: header.meta.token, logits, logprob: lp.data }
  }

  close (): void {
    void this.channel.close()
  }
}

/** Builds the chain of links for a route: local hops in-process, remote hops over libp2p. */
export async function openRoute (node: MeshNode, local: LocalStages, route: RouteHop[], seq: string, opts: { sampling: StageSampling, returnLogits: boolean }, signal?: AbortSignal): Promise<StageLink> {
  const [hop, ...rest] = route
  if (hop == null) throw new Error('empty route')
  if (hop.peer === node.peerId.toString()) {
    const downstream = rest.length > 0 ? await openRoute(node, local, rest, seq, opts, signal) : null
    return new LocalStageLink(local(hop.block), seq, downstream, opts)
  }
  return await RemoteStageLink.open(node, hop, seq, rest, opts, signal)
}
