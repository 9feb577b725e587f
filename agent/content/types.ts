/**
 * The content-addressed store and the mesh transfer of model files (issue 15): the contract between the
 * store (store.ts, manifest.ts), the transfer protocol and fetcher (protocol.ts, service.ts, fetcher.ts) and
 * the agent that wires them (block hosts, `model add`, splits, the API).
 *
 * A file is addressed by its MD5 (lowercase hex): the digest components (`model.md5`), stage files
 * (`model_layer_hash`) and seed 002's `LayerHash` already use. MD5 alone is not collision resistant, so every
 * file also has a **manifest** signed by the peer that added it: the file's SHA-256, its size, its chunk size
 * and the SHA-256 of every chunk. A fetched chunk is checked against the manifest before it is written; the
 * whole file is checked against both MD5 and SHA-256 before it becomes complete.
 */
import { z } from 'zod'

/** The transfer protocol. */
export const CONTENT_PROTOCOL = '/blockmesh/content/1.0.0'
/** Signed-envelope domain and payload type of a manifest (mesh/envelope.ts). */
export const MANIFEST_DOMAIN = 'blockmesh-content-manifest'
export const MANIFEST_CODEC = new TextEncoder().encode('/blockmesh/content-manifest/1')

/** Chunk sizes: powers of two between these. */
export const MIN_CHUNK_BYTES = 64 * 1024
export const MAX_CHUNK_BYTES = 16 * 1024 * 1024
/** The chunk size a file gets unless told otherwise: 1 MiB, doubled until the file has at most MAX_CHUNKS chunks. */
export const DEFAULT_CHUNK_BYTES = 1024 * 1024
/** Chunks a manifest lists, at most (16384 × 16 MiB = 256 GiB). */
export const MAX_CHUNKS = 16384
/** A signed manifest is at most this many bytes (16384 base64 hashes ≈ 720 KiB, plus the envelope). */
export const MAX_MANIFEST_BYTES = 1024 * 1024
/** Digests a capacity record advertises, at most (most recently used first). */
export const MAX_ADVERTISED = 256
/** Transfers in progress a capacity record advertises, at most. */
export const MAX_ADVERTISED_TRANSFERS = 8

export const Md5Hex = z.string().regex(/^[a-f0-9]{32}$/, 'an MD5: 32 lowercase hexadecimal digits')
export const Sha256Hex = z.string().regex(/^[a-f0-9]{64}$/, 'a SHA-256: 64 lowercase hexadecimal digits')
/** SHA-256 of a chunk, base64 (44 characters), to keep manifests small. */
export const ChunkHash = z.string().regex(/^[A-Za-z0-9+/]{43}=$/, 'a SHA-256 in base64')

export const ManifestSchema = z.object({
  v: z.literal(1),
  md5: Md5Hex,
  sha256: Sha256Hex,
  size: z.number().int().min(1).max(MAX_CHUNKS * MAX_CHUNK_BYTES),
  chunkSize: z.number().int().min(MIN_CHUNK_BYTES).max(MAX_CHUNK_BYTES).refine(n => (n & (n - 1)) === 0, 'a power of two'),
  /** SHA-256 of each chunk, in order; the last chunk may be shorter */
  chunks: z.array(ChunkHash).min(1).max(MAX_CHUNKS),
  /** what the adder called it (a file name, for people) */
  name: z.string().max(256).optional(),
  /** peer ID of the agent that added the file and signed this manifest */
  adder: z.string().max(128),
  /** adder's clock, ms */
  created: z.number().int().min(0)
}).strict().superRefine((m, ctx) => {
  if (m.chunks.length !== Math.ceil(m.size / m.chunkSize)) ctx.addIssue({ code: 'custom', path: ['chunks'], message: `${m.chunks.length} chunk hashes for ${m.size} bytes in chunks of ${m.chunkSize}` })
})
export type Manifest = z.output<typeof ManifestSchema>

/** A manifest with the signed envelope it came in (forwarded as is, so every receiver checks the adder's signature). */
export interface SignedManifest { manifest: Manifest, bytes: Uint8Array }

/** One file in the store. */
export interface ContentEntry {
  md5: string
  sha256: string
  size: number
  chunkSize: number
  chunks: number
  /** chunks held (== chunks when complete) */
  have: number
  state: 'complete' | 'partial'
  name: string | null
  /** the file on disk: complete files only */
  path: string | null
  /** added on this agent (`model add`, a split, the generated model): never evicted, removed only by the operator */
  pinned: boolean
  /** blocks using it now (acquire/release): an entry in use is never evicted */
  inUse: number
  /** ms; updated on acquire and when a peer is served from it */
  lastUsed: number
  addedAt: number
}

/**
 * The content-addressed store of one agent: `<dataDir>/content/<md5>` (complete) and `<md5>.part` (partial,
 * with the chunks held recorded in SQLite, so an interrupted download resumes), a size cap, LRU eviction of
 * unpinned files no block uses.
 */
export interface ContentStore {
  /**
   * Adds a local file: hard-linked into the store where the filesystem allows, else copied; hashes it once
   * (MD5, SHA-256, chunk hashes), signs its manifest with this agent's key. Adding a file already held is a
   * hash and a look-up. `pin` defaults to true.
   */
  importFile: (path: string, opts?: { name?: string, pin?: boolean, chunkSize?: number, signal?: AbortSignal }) => Promise<ContentEntry>
  get: (md5: string) => ContentEntry | undefined
  list: () => ContentEntry[]
  /** path of a complete file, else undefined */
  pathOf: (md5: string) => string | undefined
  /** the signed manifest of a file held, complete or partial */
  manifest: (md5: string) => SignedManifest | undefined
  /** which chunks are held: one bit per chunk, bit i of byte i>>3 is (i & 7) (LSB first); all set for a complete file */
  bitmap: (md5: string) => Uint8Array | undefined
  /** a chunk held (of a complete or partial file); ContentNotFoundError when not held */
  readChunk: (md5: string, index: number, signal?: AbortSignal) => Promise<Uint8Array>
  /** starts (or resumes) a partial file for a manifest already verified; returns its entry */
  begin: (signed: SignedManifest) => ContentEntry
  /** writes one chunk of a partial file: ChunkHashError when its SHA-256 is not the manifest's (nothing written) */
  writeChunk: (md5: string, index: number, bytes: Uint8Array) => Promise<void>
  /** every chunk held: checks MD5 and SHA-256 of the whole file and makes it complete (ContentDigestError otherwise: the partial is discarded) */
  complete: (md5: string, signal?: AbortSignal) => Promise<ContentEntry>
  /** marks a file in use (never evicted) until the returned function is called */
  acquire: (md5: string) => () => void
  /** removes a file; ContentInUseError when in use */
  remove: (md5: string) => void
  /** evicts unpinned, unused files, least recently used first, until the store is under its cap; returns the MD5s evicted */
  evict: () => string[]
  /** bytes held (complete + partial files' full sizes) and the cap */
  usage: () => { bytes: number, capBytes: number }
}

/** Progress of one transfer, as the fetcher reports it (and a capacity record carries, bounded). */
export interface TransferProgress {
  md5: string
  name: string | null
  receivedBytes: number
  totalBytes: number
  /** bytes received from each source: peer ID, or 'origin' for the original source (hub, HTTP, S3, file) */
  bySource: Record<string, number>
  startedAt: number
}

/** Where a file may be fetched from when no peer has it. */
export interface OriginSource { url: string, sizeBytes?: number }

export interface FetchOptions {
  signal?: AbortSignal
  name?: string
  /** the original source, used only when no peer holds the file */
  origin?: OriginSource
  onProgress?: (p: TransferProgress) => void
}

/** Fetches files into the store from the peers that hold them (several at once, chunk by chunk), else from the origin. */
export interface ContentFetcher {
  /** resolves when the file is complete in the local store (at once when it already is) */
  fetch: (md5: string, opts?: FetchOptions) => Promise<ContentEntry>
  /** transfers in progress on this agent */
  transfers: () => TransferProgress[]
}

/**
 * Who holds what, from the mesh's capacity records: peers that hold a file complete, and peers fetching it
 * (which may already serve the chunks they have).
 */
export interface ContentDirectory {
  holders: (md5: string) => { complete: string[], partial: string[] }
}
