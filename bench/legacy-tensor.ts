/**
 * The tensor protocol the pipeline used before issue 14 (/blockmesh/tensor/1.0.0: one stream per sequence
 * per hop, a zod-checked JSON header then the payload). The agent no longer speaks it; the hop benchmark
 * (bench/activations.ts) keeps it as a row to compare the ring pipeline's links with.
 */
import type { LengthPrefixedStream } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'
import { z } from 'zod'
import { decodeJson, encodeJson, firstIssue, lengthPrefixed } from '../mesh/rpc.ts'
import { MeshError } from '../mesh/errors.ts'

/** libp2p protocol carrying activations between pipeline stages. */
export const TENSOR_PROTOCOL = '/blockmesh/tensor/1.0.0'

export const DTYPE_BYTES = { float32: 4, int64: 8, int32: 4 } as const
export type DType = keyof typeof DTYPE_BYTES

/**
 * A tensor message: a JSON header, then the raw little-endian bytes of the
 * tensor it describes (when it has one). The header's dtype and shape fix
 * the payload's length exactly.
 */
export const TensorHeaderSchema = z.object({
  /** what this message is (open, step, result, error: agreed by the two ends) */
  kind: z.string().min(1).max(32),
  /** the pipeline step (decode position counter) */
  step: z.number().int().min(0).max(1e9).optional(),
  /** sequence id */
  seq: z.string().min(1).max(128).optional(),
  dtype: z.enum(['float32', 'int64', 'int32']).optional(),
  shape: z.array(z.number().int().min(0).max(1 << 24)).max(4).optional(),
  /** small fields of the message (routing, sampling, token, error text) */
  meta: z.record(z.string().max(64), z.unknown()).optional()
}).strict().refine(h => (h.dtype == null) === (h.shape == null), { message: 'dtype and shape come together' })
export type TensorHeader = z.output<typeof TensorHeaderSchema>

export class TensorFrameError extends MeshError {
  constructor (message: string) {
    super(message, 'ERR_TENSOR_FRAME')
    this.name = 'TensorFrameError'
  }
}

export interface TensorMessage { header: TensorHeader, payload: Uint8Array | null }

export function payloadBytes (h: Pick<TensorHeader, 'dtype' | 'shape'>): number {
  if (h.dtype == null || h.shape == null) return 0
  return h.shape.reduce((a, d) => a * d, 1) * DTYPE_BYTES[h.dtype]
}

/**
 * Both ends of a tensor stream: typed, size-bounded messages with
 * backpressure (lpStream waits for drain) and abort via AbortSignal.
 */
export class TensorChannel {
  readonly stream: Stream
  private readonly lp: LengthPrefixedStream<Stream>
  private readonly maxBytes: number

  constructor (stream: Stream, maxBytes = 64 * 1024 * 1024) {
    this.stream = stream
    this.maxBytes = maxBytes
    this.lp = lengthPrefixed(stream, maxBytes)
  }

  async send (header: TensorHeader, payload?: Uint8Array, signal?: AbortSignal): Promise<void> {
    const expected = payloadBytes(header)
    if ((payload?.length ?? 0) !== expected) throw new TensorFrameError(`payload of ${payload?.length ?? 0} bytes for a ${expected}-byte ${header.dtype ?? ''} tensor`)
    if (expected > this.maxBytes) throw new TensorFrameError(`tensor of ${expected} bytes is over the ${this.maxBytes}-byte limit`)
    // header and payload leave in one send: one Yamux frame and one Noise message where they fit
    if (payload != null && expected > 0) await this.lp.writeV([encodeJson(header), payload], { signal })
    else await this.lp.write(encodeJson(header), { signal })
  }

  /** The next message; throws TensorFrameError on anything malformed or oversized ('stream ended' when the stream ends). */
  async recv (signal?: AbortSignal): Promise<TensorMessage> {
    const bytes = await this.readFrame('tensor header', signal)
    let raw: unknown
    try {
      raw = decodeJson(bytes)
    } catch (err) {
      // a complete frame that is not JSON is malformed, even when JSON.parse says "unexpected end"
      throw new TensorFrameError(`unreadable tensor header: ${(err as Error).message}`)
    }
    const parsed = TensorHeaderSchema.safeParse(raw)
    if (!parsed.success) throw new TensorFrameError(`invalid tensor header: ${firstIssue(parsed.error)}`)
    const h = parsed.data
    const expected = payloadBytes(h)
    if (expected > this.maxBytes) throw new TensorFrameError(`tensor of ${expected} bytes is over the ${this.maxBytes}-byte limit`)
    if (expected === 0) return { header: h, payload: null }
    const payload = await this.readFrame('tensor payload', signal)
    if (payload.length !== expected) throw new TensorFrameError(`payload of ${payload.length} bytes does not match ${h.dtype ?? ''}[${(h.shape ?? []).join(',')}] (${expected} bytes)`)
    return { header: h, payload }
  }

  /** One frame's bytes. The stream ending (between frames or inside one) is 'stream ended'; a bad length prefix is malformed. */
  private async readFrame (what: string, signal?: AbortSignal): Promise<Uint8Array> {
    try {
      return (await this.lp.read({ signal })).subarray()
    } catch (err) {
      if (signal?.aborted === true) throw err
      const e = err as Error & { code?: string }
      const badLength = e.name === 'InvalidDataLengthError' || e.name === 'InvalidDataLengthLengthError' || e.name === 'InvalidMessageLengthError' || e.code === 'ERR_FRAME_LENGTH'
      if (!badLength && (/unexpected end|EOF|end of input|stream ended/i.test(e.message) || this.stream.readStatus !== 'readable')) throw new TensorFrameError('stream ended')
      throw new TensorFrameError(`unreadable ${what}: ${e.message}`)
    }
  }

  async close (): Promise<void> {
    await this.stream.close().catch(() => {})
  }

  abort (reason: string): void {
    if (this.stream.status === 'open') this.stream.abort(new Error(reason))
  }
}
