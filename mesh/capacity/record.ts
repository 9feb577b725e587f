import { z } from 'zod'
import type { PrivateKey } from '@libp2p/interface'
import { EnvelopeError, openEnvelope, sealPayload } from '../envelope.ts'
import { CapacityFrameError } from '../errors.ts'

/** Frames larger than this are refused before any decoding. */
/** The highest reconciler term (fence) a record may carry. */
export const MAX_TERM = 2 ** 40

export const MAX_CAPACITY_FRAME_BYTES = 64 * 1024
/** Connections a record lists, at most (a record stays well under the frame bound). */
export const MAX_LINKS = 256
export const CAPACITY_DOMAIN = 'blockmesh-capacity'
export const CAPACITY_CODEC = new TextEncoder().encode('/blockmesh/capacity/1')
export const CAPACITY_TOPIC = '/blockmesh/capacity/1'

const text = (max: number) => z.string().max(max)
const nonNeg = z.number().finite().nonnegative()
const percent = z.number().finite().min(0).max(100)

export const GpuReadingSchema = z.object({
  index: z.number().int().min(0).max(1023),
  vendor: text(64),
  model: text(128),
  memoryTotalBytes: nonNeg,
  /** null when the driver does not report it */
  memoryFreeBytes: nonNeg.nullable(),
  utilisation: percent.nullable(),
  simulated: z.boolean()
})
export type GpuReading = z.infer<typeof GpuReadingSchema>

export const ReadingsSchema = z.object({
  cpu: z.object({
    count: z.number().int().min(1).max(65536),
    model: text(128),
    load1: nonNeg,
    load5: nonNeg,
    load15: nonNeg,
    /** whole-machine CPU busy %, sampled since the previous reading */
    utilisation: percent
  }),
  memory: z.object({
    totalBytes: nonNeg,
    freeBytes: nonNeg,
    availableBytes: nonNeg
  }),
  gpus: z.array(GpuReadingSchema).max(64)
})
export type Readings = z.infer<typeof ReadingsSchema>

/** A block instance this node runs, as its neighbours see it (for routing and the blocks' owners). */
export const InstanceReportSchema = z.object({
  block: text(64),
  instance: text(64),
  /** peer ID of the agent that owns (placed) the block */
  owner: text(128),
  status: z.enum(['pending', 'loading', 'ready', 'failed']),
  /** why it failed, when it did */
  error: text(512).nullable(),
  /** what runs it (execution provider, or "external") */
  provider: text(32).nullable(),
  /** the component URI it runs (name:version) */
  component: text(130),
  /** sequences being generated */
  active: z.number().int().min(0).max(1_000_000),
  /** requests waiting for their first token */
  queued: z.number().int().min(0).max(1_000_000),
  tokensPerSecond: nonNeg,
  /** load balancing the owner asked for: session affinity and its TTL (s) */
  affinity: z.boolean(),
  sessionTtl: z.number().int().min(0).max(86_400),
  /** the fence (term) of the reconciler that placed it (absent from older agents) */
  term: z.number().int().min(0).max(MAX_TERM).optional()
})
export type InstanceReport = z.infer<typeof InstanceReportSchema>

export const VdagReportSchema = z.object({
  name: text(64),
  stages: z.array(text(64)).min(1).max(32),
  /** positions the model supports */
  contextLength: z.number().int().min(1).max(1 << 24),
  /** the model's tokenizer bundle, so any agent can drive the vDAG (absent: the byte tokenizer) */
  tokenizer: z.object({ type: z.literal('bundle'), url: text(1024), md5: z.string().regex(/^[a-f0-9]{32}$/) }).optional()
})
export type VdagReport = z.infer<typeof VdagReportSchema>

/** A block this node reconciles (places and replaces instances of), with its fence and last outcome. */
export const ReconcileReportSchema = z.object({
  block: text(64),
  term: z.number().int().min(0).max(MAX_TERM),
  target: z.number().int().min(0).max(1024),
  status: z.enum(['pending', 'loading', 'ready', 'failed']),
  error: text(200).nullable()
})
export type ReconcileReport = z.infer<typeof ReconcileReportSchema>
export const MAX_RECONCILES = 64

/** Model files a record lists as held, at most (most recently used first), and transfers in progress. */
export const MAX_CONTENT_HELD = 256
export const MAX_CONTENT_FETCHING = 8
const md5Hex = z.string().regex(/^[a-f0-9]{32}$/)

/**
 * The model files this node's content store holds (their MD5s, not a file list of unbounded size) and the
 * transfers it has in progress (peers fetching a file serve the chunks they already have).
 */
export const ContentReportSchema = z.object({
  held: z.array(md5Hex).max(MAX_CONTENT_HELD),
  fetching: z.array(z.object({
    md5: md5Hex,
    name: text(256).nullable(),
    receivedBytes: nonNeg,
    totalBytes: nonNeg
  })).max(MAX_CONTENT_FETCHING)
})
export type ContentReport = z.infer<typeof ContentReportSchema>

/** Providers a record lists, at most, and the length of a reason. */
export const MAX_PROVIDERS = 8
export const MAX_PROVIDER_REASON = 200

/** Whether an ONNX Runtime execution provider loads on this node, and why not when it does not. */
export const ProviderStatusSchema = z.object({
  name: text(32),
  available: z.boolean(),
  reason: text(MAX_PROVIDER_REASON).optional()
})
export type ProviderStatus = z.infer<typeof ProviderStatusSchema>

export const CapacityRecordSchema = z.object({
  v: z.literal(1),
  peerId: text(128),
  name: z.string().min(1).max(64),
  cluster: z.string().min(1).max(64),
  vendor: text(64),
  addrs: z.array(text(256)).max(16),
  /** Incremented at each start of the agent; (epoch, seq) orders records across restarts. */
  epoch: z.number().int().min(0),
  seq: z.number().int().min(0),
  /** Sender's clock (ms since epoch); informational, expiry uses the receiver's clock. */
  ts: z.number().int().min(0),
  heartbeatMs: z.number().int().min(100).max(60_000),
  readings: ReadingsSchema,
  /** block instances running here (absent in records from older agents) */
  instances: z.array(InstanceReportSchema).max(64).default([]),
  /** vDAGs this agent owns: the model name and its stage blocks in order (any agent can serve them) */
  vdags: z.array(VdagReportSchema).max(16).default([]),
  /** peers this node has a live connection to (for topology views; absent from older agents) */
  links: z.array(text(128)).max(MAX_LINKS).default([]),
  /** execution providers probed at start (empty until the probe ends, and from older agents) */
  providers: z.array(ProviderStatusSchema).max(MAX_PROVIDERS).default([]),
  /** digest of the desired state this node holds (peers with another digest pull from each other) */
  state: z.string().regex(/^[a-f0-9]{16}$/).optional(),
  /** blocks this node reconciles, with their fences (absent from older agents) */
  reconciles: z.array(ReconcileReportSchema).max(MAX_RECONCILES).optional(),
  /** model files held and being fetched here (absent from older agents) */
  content: ContentReportSchema.optional()
})
export type CapacityRecord = z.infer<typeof CapacityRecordSchema>

/** Orders two records of the same peer: negative when a is older. */
export function compareRecords (a: Pick<CapacityRecord, 'epoch' | 'seq'>, b: Pick<CapacityRecord, 'epoch' | 'seq'>): number {
  return a.epoch !== b.epoch ? a.epoch - b.epoch : a.seq - b.seq
}

/** Seals raw payload bytes as a capacity envelope (no checks on the payload; used by encode and by tests). */
export async function sealCapacityPayload (payload: Uint8Array, privateKey: PrivateKey): Promise<Uint8Array> {
  return await sealPayload(CAPACITY_DOMAIN, CAPACITY_CODEC, payload, privateKey)
}

/** Seals a record in a libp2p signed envelope (domain-separated Ed25519 signature). */
export async function encodeCapacityRecord (record: CapacityRecord, privateKey: PrivateKey): Promise<Uint8Array> {
  const payload = new TextEncoder().encode(JSON.stringify(CapacityRecordSchema.parse(record)))
  const bytes = await sealCapacityPayload(payload, privateKey)
  if (bytes.length > MAX_CAPACITY_FRAME_BYTES) {
    throw new CapacityFrameError('oversized', `own capacity record is ${bytes.length} bytes (limit ${MAX_CAPACITY_FRAME_BYTES})`)
  }
  return bytes
}

/**
 * Opens a frame: size bound, envelope parse, signature and domain check,
 * JSON parse, schema check, and the signer must be the peer the record names.
 * Throws CapacityFrameError with the reason on any failure.
 */
export async function decodeCapacityRecord (frame: Uint8Array): Promise<CapacityRecord> {
  if (frame.length > MAX_CAPACITY_FRAME_BYTES) {
    throw new CapacityFrameError('oversized', `frame of ${frame.length} bytes exceeds ${MAX_CAPACITY_FRAME_BYTES}`)
  }
  let opened: { signer: string, payload: Uint8Array }
  try {
    opened = await openEnvelope(frame, CAPACITY_DOMAIN, CAPACITY_CODEC)
  } catch (err) {
    if (err instanceof EnvelopeError) throw new CapacityFrameError(err.reason, err.message, { cause: err })
    throw err
  }

  let json: unknown
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(opened.payload))
  } catch (err) {
    throw new CapacityFrameError('bad-json', 'payload is not UTF-8 JSON', { cause: err })
  }
  const parsed = CapacityRecordSchema.safeParse(json)
  if (!parsed.success) {
    const first = parsed.error.issues[0]
    throw new CapacityFrameError('bad-schema', `payload is not a capacity record: ${first.path.join('.') || '(root)'}: ${first.message}`)
  }
  const signer = opened.signer
  if (signer !== parsed.data.peerId) {
    throw new CapacityFrameError('peer-mismatch', `record names ${parsed.data.peerId} but is signed by ${signer}`)
  }
  return parsed.data
}
