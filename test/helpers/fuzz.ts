/**
 * Shared pieces of the fuzz tests (test/fuzz-mesh.test.ts, test/fuzz-http.test.ts):
 * the fixed seed, generators of malformed frames and bodies (from a valid sample: wrong types,
 * huge numbers, deep nesting, missing and unknown keys, bit flips, truncation, bad length
 * prefixes), an in-memory Yamux connection to feed a protocol's real stream handler, and a heap
 * measurement after garbage collection.
 */
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import fc from 'fast-check'
import { multiaddrConnectionPair } from '@libp2p/utils'
import { yamux } from '@chainsafe/libp2p-yamux'
import type { PeerId, Stream, StreamHandler } from '@libp2p/interface'
import type { MeshNode } from '../../mesh/node.ts'

/** Every fuzz run uses this seed (FUZZ_SEED=n to explore others); fast-check prints seed and path on failure. */
export const FUZZ_SEED = Number(process.env.FUZZ_SEED ?? 20261203)

export function fuzzParams (numRuns: number): fc.Parameters<unknown> {
  return { seed: FUZZ_SEED, numRuns, endOnFailure: false, includeErrorInReport: true }
}

// ---------------------------------------------------------------- memory

let gcFn: (() => void) | undefined
function gc (): void {
  if (gcFn == null) {
    setFlagsFromString('--expose-gc')
    gcFn = runInNewContext('gc') as () => void
  }
  gcFn()
}

/** Heap in use after the event loop settled (pending 1 ms timers of stream queues ran) and a full GC. */
export async function settledHeap (): Promise<number> {
  for (let i = 0; i < 5; i++) await new Promise(resolve => setTimeout(resolve, 20))
  gc()
  gc()
  return process.memoryUsage().heapUsed
}

// ---------------------------------------------------------------- crashes

/** Collects uncaught exceptions and unhandled rejections while armed (a handler that throws outside its try). */
export class CrashWatch {
  readonly errors: string[] = []
  private readonly onError = (err: unknown): void => { this.errors.push(`${(err as Error)?.stack ?? String(err)}`) }
  arm (): void {
    process.on('uncaughtException', this.onError)
    process.on('unhandledRejection', this.onError)
  }

  disarm (): void {
    process.off('uncaughtException', this.onError)
    process.off('unhandledRejection', this.onError)
  }
}

// ---------------------------------------------------------------- bytes and frames

const enc = new TextEncoder()

export function utf8 (s: string): Uint8Array { return enc.encode(s) }

export function concat (parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) { out.set(p, at); at += p.length }
  return out
}

/** Unsigned LEB128 varint (the length prefix of libp2p's length-prefixed streams), for lengths up to 2^53. */
export function varint (n: number): Uint8Array {
  const out: number[] = []
  do {
    let b = n % 128
    n = Math.floor(n / 128)
    if (n > 0) b |= 0x80
    out.push(b)
  } while (n > 0)
  return Uint8Array.from(out)
}

/**
 * How one frame's length prefix is sent:
 * - ok: the right length; short: more than is sent (the stream then ends);
 * - over: a length above the protocol's limit (the bytes that follow are fewer);
 * - overlong: a varint that never ends (every byte has its continuation bit set);
 * - zero: length 0.
 */
export type Framing =
  | { kind: 'ok' }
  | { kind: 'short', missing: number }
  | { kind: 'over', declared: number }
  | { kind: 'overlong', bytes: number }
  | { kind: 'zero' }

/** A framing that makes the frame invalid (any limit: `maxFrame` is the protocol's largest frame). */
export function badFraming (maxFrame: number): fc.Arbitrary<Framing> {
  return fc.oneof(
    fc.integer({ min: 1, max: 1 << 20 }).map(missing => ({ kind: 'short' as const, missing })),
    fc.oneof(fc.integer({ min: maxFrame + 1, max: 2 ** 31 }), fc.constantFrom(maxFrame + 1, 2 ** 32, 2 ** 53 - 1)).map(declared => ({ kind: 'over' as const, declared })),
    fc.integer({ min: 9, max: 2048 }).map(bytes => ({ kind: 'overlong' as const, bytes })),
    fc.constant({ kind: 'zero' as const })
  )
}

/** The bytes of one frame sent with `framing`. */
export function frame (payload: Uint8Array, framing: Framing = { kind: 'ok' }): Uint8Array {
  switch (framing.kind) {
    case 'ok': return concat([varint(payload.length), payload])
    case 'short': return concat([varint(payload.length + framing.missing), payload])
    case 'over': return concat([varint(framing.declared), payload.subarray(0, 1024)])
    case 'overlong': return new Uint8Array(framing.bytes).fill(0xff)
    case 'zero': return varint(0)
  }
}

/** Framings after which nothing more is read: the server cannot wait for more bytes to decide (the sender keeps its side open). */
export function refusedAtOnce (framing: Framing): boolean {
  return framing.kind === 'over' || framing.kind === 'overlong'
}

/** Byte-level mutations of an encoded frame: bit flips, truncation, garbage appended or inserted, bytes replaced. */
export function mutatedBytes (bytes: Uint8Array): fc.Arbitrary<{ bytes: Uint8Array, how: string }> {
  const n = Math.max(1, bytes.length)
  return fc.oneof(
    fc.array(fc.tuple(fc.nat(n - 1), fc.integer({ min: 0, max: 7 })), { minLength: 1, maxLength: 8 }).map(flips => {
      const b = new Uint8Array(bytes)
      for (const [i, bit] of flips) if (i < b.length) b[i] ^= 1 << bit
      return { bytes: b, how: 'bit-flip' }
    }),
    fc.nat(n - 1).map(at => ({ bytes: bytes.slice(0, at), how: 'truncated' })),
    fc.uint8Array({ minLength: 1, maxLength: 64 }).map(tail => ({ bytes: concat([bytes, tail]), how: 'garbage-appended' })),
    fc.tuple(fc.nat(n), fc.uint8Array({ minLength: 1, maxLength: 16 })).map(([at, ins]) => ({ bytes: concat([bytes.subarray(0, at), ins, bytes.subarray(at)]), how: 'garbage-inserted' })),
    fc.tuple(fc.nat(n - 1), fc.constantFrom(0x00, 0xff, 0x22, 0x5c, 0x7b, 0x7d, 0xc0, 0xed, 0xf8)).map(([at, v]) => {
      const b = new Uint8Array(bytes)
      if (at < b.length) b[at] = v
      return { bytes: b, how: 'byte-replaced' }
    })
  )
}

// ---------------------------------------------------------------- JSON values

function nested (depth: number, leaf: unknown, asArray: boolean): unknown {
  let v = leaf
  for (let i = 0; i < depth; i++) v = asArray ? [v] : { a: v }
  return v
}

/** Values that break schemas: wrong types, extreme numbers, odd strings, deep nesting, long arrays, prototype keys. */
export const nastyValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom<unknown>(null, true, false, 0, -1, -0, 0.5, -1.5, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, -(2 ** 53), 1e21, 1e308, -1e308, 5e-324,
    '', ' ', '\u0000', '\ud800', '\uffff', '../../../etc/passwd', '%00', '$where', '__proto__', 'constructor', 'NaN', 'Infinity', '1e999', '-1', 'true', 'null',
    [], {}, [null], { '': null }, { __proto__: { polluted: true } }, JSON.parse('{"__proto__": {"polluted": true}}'), { constructor: { prototype: { polluted: true } } }),
  fc.integer(),
  fc.double(), // NaN and ±Infinity become null in JSON
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.integer({ min: 1, max: 20_000 }).map(n => 'x'.repeat(n)),
  fc.tuple(fc.integer({ min: 16, max: 1500 }), fc.boolean()).map(([d, arr]) => nested(d, 1, arr)),
  fc.integer({ min: 100, max: 5000 }).map(n => Array.from({ length: n }, (_, i) => i)),
  fc.jsonValue({ maxDepth: 3 })
)

type Path = Array<string | number>

function paths (v: unknown, at: Path = [], out: Path[] = [], depth = 0): Path[] {
  out.push(at)
  if (depth > 12 || v == null || typeof v !== 'object') return out
  if (Array.isArray(v)) v.forEach((x, i) => paths(x, [...at, i], out, depth + 1))
  else for (const [k, x] of Object.entries(v)) paths(x, [...at, k], out, depth + 1)
  return out
}

function clone<T> (v: T): T { return structuredClone(v) }

function setAt (root: unknown, path: Path, fn: (parent: any, key: string | number) => void): unknown {
  if (path.length === 0) {
    const box = { v: clone(root) }
    fn(box, 'v')
    return box.v
  }
  const copy = clone(root) as any
  let parent = copy
  for (const k of path.slice(0, -1)) parent = parent[k]
  fn(parent, path[path.length - 1])
  return copy
}

/**
 * A valid sample mutated at one place (or a few): a value replaced by a nasty one, a key removed,
 * an unknown key added, a value wrapped deep, a string made huge, or the whole value replaced.
 */
export function mutatedJson (sample: unknown): fc.Arbitrary<{ value: unknown, how: string }> {
  const all = paths(sample)
  const objects = all.filter(p => { const v = p.reduce<any>((o, k) => o?.[k], sample); return v != null && typeof v === 'object' && !Array.isArray(v) })
  const keyed = all.filter(p => p.length > 0 && typeof p[p.length - 1] === 'string')
  const one: fc.Arbitrary<{ value: unknown, how: string }> = fc.oneof(
    { weight: 5, arbitrary: fc.tuple(fc.constantFrom(...all), nastyValue).map(([p, bad]) => ({ value: setAt(sample, p, (o, k) => { o[k] = bad }), how: 'wrong-value' })) },
    ...(keyed.length > 0 ? [{ weight: 2, arbitrary: fc.constantFrom(...keyed).map(p => ({ value: setAt(sample, p, (o, k) => { delete o[k] }), how: 'key-removed' })) }] : []),
    ...(objects.length > 0 ? [{ weight: 2, arbitrary: fc.tuple(fc.constantFrom(...objects), fc.string({ minLength: 1, maxLength: 12 }), nastyValue).map(([p, k, bad]) => ({ value: setAt(sample, p, (o, key) => { o[key][k] = bad }), how: 'key-added' })) }] : []),
    { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...all), fc.integer({ min: 1, max: 40 })).map(([p, d]) => ({ value: setAt(sample, p, (o, k) => { o[k] = nested(d, o[k], d % 2 === 0) }), how: 'wrapped-deep' })) },
    { weight: 1, arbitrary: nastyValue.map(v => ({ value: v, how: 'replaced-whole' })) }
  )
  return fc.oneof(
    { weight: 4, arbitrary: one },
    { weight: 1, arbitrary: fc.array(one, { minLength: 2, maxLength: 4 }).map(ms => ({ value: ms[ms.length - 1].value, how: ms.map(m => m.how).join('+') })) }
  )
}

/** JSON text that does not parse, or parses into something odd (numbers out of range, deep nesting, duplicate keys). */
export const brokenJsonText: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom('', ' ', '{', '}', '[', '{"a":', '{"a":1,}', '[1,]', "{'a':1}", 'NaN', 'Infinity', '-', '1e999', '-1e999', '0x10', 'undefined',
    '{"a":1}{"a":2}', '"\\ud800"', '"\\u00zz"', '{"a":"\u0000"}', '\ufeff{}', '{"__proto__":{"x":1}}', '{"constructor":{"prototype":{"x":1}}}', '{"a":1,"a":2}', 'null', 'true', '[]', '0', '"text"'),
  fc.integer({ min: 100, max: 100_000 }).map(d => '['.repeat(d) + ']'.repeat(d)),
  fc.integer({ min: 100, max: 50_000 }).map(d => '{"a":'.repeat(d) + '1' + '}'.repeat(d)),
  fc.integer({ min: 100, max: 50_000 }).map(d => '['.repeat(d)),
  fc.string({ unit: 'binary', maxLength: 200 }),
  fc.json({ maxDepth: 3 }).chain(j => fc.nat(Math.max(0, j.length - 1)).map(at => j.slice(0, at)))
)

/** Bytes that are not UTF-8. */
export const notUtf8: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.constantFrom(Uint8Array.of(0xff), Uint8Array.of(0xc0, 0x80), Uint8Array.of(0xed, 0xa0, 0x80), Uint8Array.of(0x7b, 0xf8, 0x7d), Uint8Array.of(0xe2, 0x82)),
  fc.uint8Array({ minLength: 1, maxLength: 512 }).map(b => concat([b, Uint8Array.of(0xff)]))
)

// ---------------------------------------------------------------- senders

/** Fresh identities for senders; a sender is replaced once banned, so every frame is judged by a handler that still hears it. */
export class Senders {
  private readonly make: () => Promise<PeerId>
  current!: PeerId
  readonly retired: PeerId[] = []
  constructor (make: () => Promise<PeerId>) { this.make = make }
  async start (): Promise<this> { this.current = await this.make(); return this }
  async rotate (): Promise<void> {
    this.retired.push(this.current)
    this.current = await this.make()
  }
}

// ---------------------------------------------------------------- streams

/**
 * Records the stream handlers a node registers (they stay registered on the real node too), so a
 * test can hand them streams of an in-memory connection from any peer ID: a banned sender is
 * replaced by a fresh identity without a new TCP + Noise handshake each time.
 */
export function captureHandlers (node: MeshNode): Map<string, StreamHandler> {
  const handlers = new Map<string, StreamHandler>()
  const libp2p = node.libp2p as unknown as { handle: (p: string | string[], h: StreamHandler, o?: unknown) => Promise<void> }
  const original = libp2p.handle.bind(libp2p)
  libp2p.handle = async (protocol, handler, opts) => {
    for (const p of Array.isArray(protocol) ? protocol : [protocol]) handlers.set(p, handler)
    await original(protocol, handler, opts)
  }
  return handlers
}

/** Two real Yamux muxers over an in-memory connection: each open() is a new stream, client side and server side. */
export class MemoryLink {
  private readonly client: ReturnType<ReturnType<ReturnType<typeof yamux>>['createStreamMuxer']>
  private readonly server: ReturnType<ReturnType<ReturnType<typeof yamux>>['createStreamMuxer']>
  private readonly waiting: Array<(s: Stream) => void> = []

  constructor () {
    const [a, b] = multiaddrConnectionPair({ delay: 0 })
    const factory = yamux()()
    this.client = factory.createStreamMuxer(a)
    this.server = factory.createStreamMuxer(b)
    this.server.addEventListener('stream', (evt) => { this.waiting.shift()?.(evt.detail) })
  }

  async open (): Promise<{ client: Stream, server: Stream }> {
    const inbound = new Promise<Stream>(resolve => this.waiting.push(resolve))
    const client = await this.client.createStream()
    return { client, server: await inbound }
  }

  close (): void {
    this.client.abort(new Error('link closed'))
    this.server.abort(new Error('link closed'))
  }
}

/** What the client side of one exchange saw. */
export interface Exchange {
  /** bytes the server sent before its side ended */
  received: Uint8Array
  /** the server reset (aborted) the stream */
  reset: boolean
  /** the client could not send everything (the server had already refused) */
  cutOff: boolean
}

/**
 * Sends `bytes` on a client stream (in chunks, with backpressure), closes its writable side unless
 * `keepOpen`, and reads until the server's side ends or resets. Never throws.
 */
export async function exchange (client: Stream, bytes: Uint8Array, keepOpen = false): Promise<Exchange> {
  const chunks: Uint8Array[] = []
  let reset = false
  let cutOff = false
  const reading = (async () => {
    try {
      for await (const c of client) chunks.push(c instanceof Uint8Array ? c : c.subarray())
    } catch { reset = true }
  })()
  try {
    for (let i = 0; i < bytes.length; i += 64 * 1024) {
      if (!client.send(bytes.subarray(i, i + 64 * 1024))) await client.onDrain()
    }
    if (!keepOpen) await client.close()
  } catch { cutOff = true }
  await reading
  if (client.status === 'open') client.abort(new Error('exchange done'))
  return { received: concat(chunks), reset, cutOff }
}

/** Splits length-prefixed frames out of received bytes (what a well-behaved server sent). */
export function readFrames (bytes: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = []
  let at = 0
  while (at < bytes.length) {
    let len = 0
    let mul = 1
    let b: number
    do {
      b = bytes[at++]
      len += (b & 0x7f) * mul
      mul *= 128
    } while ((b & 0x80) !== 0 && at < bytes.length)
    out.push(bytes.subarray(at, at + len))
    at += len
  }
  return out
}

/** Rejects when `p` has not settled within `ms`: a bound against hanging, not a speed check. */
export async function within<T> (p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([p, new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`${what}: no end after ${ms} ms (hang)`)) }, ms) })])
  } finally {
    clearTimeout(timer)
  }
}

/** Counts of generated cases by label, for the log. */
export class Tally {
  private readonly counts = new Map<string, number>()
  add (label: string): void { this.counts.set(label, (this.counts.get(label) ?? 0) + 1) }
  get total (): number { let n = 0; for (const v of this.counts.values()) n += v; return n }
  count (label: string): number { return this.counts.get(label) ?? 0 }
  toString (): string { return [...this.counts].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k}=${v}`).join(' ') }
}
