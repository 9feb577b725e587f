import { Uint8ArrayList } from 'uint8arraylist'
import { FrameError } from './errors.ts'
import type { Offence } from './peer-score.ts'

/**
 * Frames of /blockmesh/pipeline/1.0.0: the messages pipeline stages pass around a ring (a step's
 * tokens or activations forward, the sampled token back to the sequence's driver, errors to the
 * driver, drops forward). Many sequences share one stream per pair of peers, so every frame names
 * its sequence.
 *
 * Wire format: an unsigned varint length, then the frame: a fixed 32-byte little-endian header
 *
 *   0  u8  version (1)        1  u8  kind          2  u8  dtype        3  u8  flags
 *   4  8 bytes sequence id    12 u32 step          16 u32 pastLen      20 u32 rows
 *   24 i32 token              28 u32 meta length
 *
 * then `meta length` bytes of UTF-8 JSON (an object: what a sequence's first step carries, a
 * mask, a logprob, an error), then the payload: the tensor's raw little-endian bytes. Binary rather
 * than JSON headers: a decode step's hop is a few hundred bytes of header work per token, and a
 * fixed header costs nothing to parse.
 */
export const PIPELINE_PROTOCOL = '/blockmesh/pipeline/1.0.0'
export const FRAME_VERSION = 1
export const HEADER_BYTES = 32
/** Largest frame (header + meta + payload): a prompt's activations of a big model fit. */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024
/** Largest meta: the first step's sampling settings carry the prompt for the repetition penalty. */
export const MAX_META_BYTES = 16 * 1024 * 1024

export type FrameKind = 'step' | 'result' | 'error' | 'drop'
const KINDS: FrameKind[] = ['step', 'result', 'error', 'drop']
export type FrameDType = 'int32' | 'float32'
const DTYPES: Array<FrameDType | null> = [null, 'int32', 'float32']

/** flags: the last stage runs the step but samples nothing (a prompt chunk before the last). */
export const FLAG_NO_SAMPLE = 1
/** flags: bits 2–7 carry the step's micro-batch (0–63) */
export const FLAG_GROUP = 2
export const MAX_GROUP = 63
export const groupFlags = (group: number | undefined): number => group == null ? 0 : FLAG_GROUP | ((group & MAX_GROUP) << 2)
export const groupOf = (flags: number): number | undefined => (flags & FLAG_GROUP) === 0 ? undefined : (flags >> 2) & MAX_GROUP

export interface PipelineFrame {
  kind: FrameKind
  /** 16 hex digits */
  seq: string
  step: number
  pastLen: number
  /** positions in a step's tensor (its sequence length) */
  rows: number
  /** a result's token (-1: none, a prompt chunk's acknowledgement) */
  token: number
  flags: number
  dtype: FrameDType | null
  meta: Record<string, unknown> | null
  payload: Uint8Array | null
}

/** A pipeline frame (or a frame's use) that breaks the protocol; `offence` is what it costs the sender. */
export class PipelineFrameError extends FrameError {
  constructor (message: string, offence: Offence = 'malformed') {
    super(message, 'ERR_PIPELINE_FRAME', offence)
    this.name = 'PipelineFrameError'
  }
}

const enc = new TextEncoder()
const dec = new TextDecoder('utf-8', { fatal: true })
const SEQ = /^[0-9a-f]{16}$/

/** Bytes of `n` as an unsigned varint. */
function varintLength (n: number): number {
  let len = 1
  for (; n >= 0x80; n = Math.floor(n / 128)) len++
  return len
}

/** A lowercase hex digit's value (the sequence id was checked against SEQ). */
const nibble = (c: number): number => c <= 57 ? c - 48 : c - 87

/**
 * The frame's bytes with their length prefix, as a list of chunks: the prefix, header and meta in one,
 * then the payload (not copied).
 */
export function encodeFrame (f: PipelineFrame): Uint8Array[] {
  if (!SEQ.test(f.seq)) throw new PipelineFrameError(`sequence id ${f.seq} is not 16 hex digits`)
  const meta = f.meta != null ? enc.encode(JSON.stringify(f.meta)) : null
  const metaLength = meta?.length ?? 0
  if (metaLength > MAX_META_BYTES) throw new PipelineFrameError(`frame meta of ${metaLength} bytes is over ${MAX_META_BYTES}`)
  const payload = f.payload
  if ((payload == null || payload.length === 0) !== (f.dtype == null)) throw new PipelineFrameError('a frame has a payload exactly when it has a dtype')
  const total = HEADER_BYTES + metaLength + (payload?.length ?? 0)
  if (total > MAX_FRAME_BYTES) throw new PipelineFrameError(`frame of ${total} bytes is over the ${MAX_FRAME_BYTES}-byte limit`)
  const prefix = varintLength(total)
  const head = new Uint8Array(prefix + HEADER_BYTES + metaLength)
  let at = 0
  for (let n = total; ; n = Math.floor(n / 128)) {
    if (n < 0x80) { head[at++] = n; break }
    head[at++] = (n & 0x7f) | 0x80
  }
  const v = new DataView(head.buffer, prefix, HEADER_BYTES)
  v.setUint8(0, FRAME_VERSION)
  v.setUint8(1, KINDS.indexOf(f.kind))
  v.setUint8(2, DTYPES.indexOf(f.dtype))
  v.setUint8(3, f.flags)
  for (let i = 0; i < 8; i++) head[prefix + 4 + i] = (nibble(f.seq.charCodeAt(2 * i)) << 4) | nibble(f.seq.charCodeAt(2 * i + 1))
  v.setUint32(12, f.step, true)
  v.setUint32(16, f.pastLen, true)
  v.setUint32(20, f.rows, true)
  v.setInt32(24, f.token, true)
  v.setUint32(28, metaLength, true)
  if (meta != null) head.set(meta, prefix + HEADER_BYTES)
  return payload != null && payload.length > 0 ? [head, payload] : [head]
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'))

/** One frame's fields from its bytes (without the length prefix); PipelineFrameError on anything malformed. */
export function decodeFrame (bytes: Uint8Array): PipelineFrame {
  if (bytes.length < HEADER_BYTES) throw new PipelineFrameError(`frame of ${bytes.length} bytes is shorter than its ${HEADER_BYTES}-byte header`)
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (v.getUint8(0) !== FRAME_VERSION) throw new PipelineFrameError(`frame version ${v.getUint8(0)} (this agent speaks ${FRAME_VERSION})`)
  const kind = KINDS[v.getUint8(1)]
  if (kind == null) throw new PipelineFrameError(`unknown frame kind ${v.getUint8(1)}`)
  const dtypeCode = v.getUint8(2)
  if (dtypeCode >= DTYPES.length) throw new PipelineFrameError(`unknown dtype ${dtypeCode}`)
  const dtype = DTYPES[dtypeCode]
  let seq = ''
  for (let i = 0; i < 8; i++) seq += HEX[bytes[4 + i]]
  const metaLength = v.getUint32(28, true)
  if (metaLength > MAX_META_BYTES || HEADER_BYTES + metaLength > bytes.length) throw new PipelineFrameError(`meta of ${metaLength} bytes does not fit the ${bytes.length}-byte frame`)
  let meta: Record<string, unknown> | null = null
  if (metaLength > 0) {
    let parsed: unknown
    try {
      parsed = JSON.parse(dec.decode(bytes.subarray(HEADER_BYTES, HEADER_BYTES + metaLength)))
    } catch (err) {
      throw new PipelineFrameError(`unreadable frame meta: ${(err as Error).message}`)
    }
    if (parsed == null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new PipelineFrameError('frame meta is not a JSON object')
    meta = parsed as Record<string, unknown>
  }
  const payload = bytes.subarray(HEADER_BYTES + metaLength)
  if ((payload.length === 0) !== (dtype == null)) throw new PipelineFrameError(dtype == null ? `${payload.length} payload bytes without a dtype` : `a ${dtype} frame without a payload`)
  if (payload.length % 4 !== 0) throw new PipelineFrameError(`payload of ${payload.length} bytes is not whole ${dtype ?? ''} values`)
  return {
    kind,
    seq,
    step: v.getUint32(12, true),
    pastLen: v.getUint32(16, true),
    rows: v.getUint32(20, true),
    token: v.getInt32(24, true),
    flags: v.getUint8(3),
    dtype,
    meta,
    payload: payload.length > 0 ? payload : null
  }
}

/**
 * Splits a byte stream into frames as bytes arrive (synchronously: no awaited read per length byte).
 * Holds at most one incomplete frame; a length prefix over MAX_FRAME_BYTES, or one that runs on past
 * the bytes that limit needs, is a PipelineFrameError.
 */
export class FrameDecoder {
  private readonly buffer = new Uint8ArrayList()
  private readonly maxFrame: number
  private readonly maxPrefix: number

  constructor (maxFrame = MAX_FRAME_BYTES) {
    this.maxFrame = maxFrame
    let n = 1
    for (let v = maxFrame; v >= 128; v = Math.floor(v / 128)) n++
    this.maxPrefix = n
  }

  /** Bytes held for a frame not yet complete. */
  get buffered (): number { return this.buffer.byteLength }

  /**
   * Appends bytes and yields the frames now complete, in order. A malformed frame throws when the
   * iteration reaches it, after the frames before it were yielded (a lazy generator: iterate it).
   */
  * push (chunk: Uint8Array | Uint8ArrayList): Generator<PipelineFrame, void, undefined> {
    this.buffer.append(chunk)
    for (;;) {
      let length = 0
      let scale = 1
      let prefix = 0
      let complete = false
      for (; prefix < this.buffer.byteLength && prefix < this.maxPrefix; prefix++) {
        const b = this.buffer.get(prefix)
        length += (b & 0x7f) * scale
        scale *= 128
        if (b < 0x80) { complete = true; prefix++; break }
      }
      if (!complete) {
        if (this.buffer.byteLength >= this.maxPrefix) throw new PipelineFrameError(`length prefix longer than ${this.maxPrefix} bytes`)
        return
      }
      if (length > this.maxFrame) throw new PipelineFrameError(`frame of ${length} bytes is over the ${this.maxFrame}-byte limit`, 'oversized')
      if (this.buffer.byteLength < prefix + length) return
      const bytes = this.buffer.subarray(prefix, prefix + length)
      this.buffer.consume(prefix + length)
      yield decodeFrame(bytes)
    }
  }
}

/** A frame's payload as int32 values (a view when aligned). */
export function int32s (bytes: Uint8Array): Int32Array {
  if (bytes.byteOffset % 4 === 0) return new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4)
  return new Int32Array(new Uint8Array(bytes).buffer)
}

/** A frame's payload as float32 values (a view when aligned, else a copy). */
export function float32s (bytes: Uint8Array): Float32Array {
  if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4)
  return new Float32Array(new Uint8Array(bytes).buffer)
}

export function bytesOf (a: Float32Array | Int32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength)
}
