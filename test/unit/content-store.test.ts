// The content store and manifests of issue 15 (agent/content/store.ts, manifest.ts): chunk sizes, the signed
// manifest and every way a received one is refused, imports, chunks read and written, a download resumed after
// a restart, a forged MD5 caught at completion, eviction, and the cap. Real SQLite files, real files, real keys.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { openDatabase } from '../../agent/db/database.ts'
import type { Db } from '../../agent/db/database.ts'
import { ValidationError } from '../../agent/errors.ts'
import { sealPayload } from '../../mesh/envelope.ts'
import { buildManifest, chunkSizeFor, hashFile, openManifest, signManifest } from '../../agent/content/manifest.ts'
import { SqliteContentStore } from '../../agent/content/store.ts'
import { ChunkHashError, ContentCapError, ContentDigestError, ContentInUseError, ContentNotFoundError, ManifestError } from '../../agent/content/errors.ts'
import {
  DEFAULT_CHUNK_BYTES, MANIFEST_CODEC, MANIFEST_DOMAIN, MAX_CHUNKS, MAX_CHUNK_BYTES, MAX_MANIFEST_BYTES, MIN_CHUNK_BYTES
} from '../../agent/content/types.ts'
import type { Manifest, SignedManifest } from '../../agent/content/types.ts'
import { tempDir } from '../helpers/agents.ts'
import { skipNamed } from '../helpers/skip.ts'

const CHUNK = MIN_CHUNK_BYTES

interface Agent {
  dir: string
  dbPath: string
  db: Db
  key: PrivateKey
  peerId: string
  clock: { t: number }
  changes: { n: number }
  store: SqliteContentStore
  /** a new store on the same folder and a reopened database (an agent restart) */
  reopen: (capBytes?: number) => SqliteContentStore
}

async function agent (capBytes = 1 << 30): Promise<Agent> {
  const dir = tempDir('bm-content-')
  const dbPath = join(dir, 'agent.db')
  const key = await generateKeyPair('Ed25519')
  const peerId = peerIdFromPrivateKey(key).toString()
  const clock = { t: 1_000 }
  const changes = { n: 0 }
  const open = (db: Db, cap: number): SqliteContentStore => new SqliteContentStore({
    db, dir: join(dir, 'content'), capBytes: cap, privateKey: key, peerId, now: () => clock.t, onChange: () => { changes.n++ }
  })
  const a: Agent = {
    dir, dbPath, db: openDatabase(dbPath), key, peerId, clock, changes, store: undefined as unknown as SqliteContentStore,
    reopen: (cap = capBytes) => {
      a.db.close()
      a.db = openDatabase(dbPath)
      a.store = open(a.db, cap)
      return a.store
    }
  }
  a.store = open(a.db, capBytes)
  return a
}

function source (dir: string, name: string, size: number): { path: string, data: Buffer, md5: string } {
  const data = randomBytes(size)
  const path = join(dir, name)
  writeFileSync(path, data)
  return { path, data, md5: createHash('md5').update(data).digest('hex') }
}

function chunkOf (data: Buffer, chunkSize: number, i: number): Buffer {
  return data.subarray(i * chunkSize, Math.min(data.length, (i + 1) * chunkSize))
}

function bits (bitmap: Uint8Array | undefined, n: number): number[] {
  assert.ok(bitmap !== undefined)
  const out: number[] = []
  for (let i = 0; i < n; i++) if ((bitmap[i >> 3] & (1 << (i & 7))) !== 0) out.push(i)
  return out
}

test('chunkSizeFor: 1 MiB doubled until at most MAX_CHUNKS chunks; a requested size must be a power of two in bounds', () => {
  assert.equal(chunkSizeFor(1), DEFAULT_CHUNK_BYTES)
  assert.equal(chunkSizeFor(MAX_CHUNKS * DEFAULT_CHUNK_BYTES), DEFAULT_CHUNK_BYTES)
  assert.equal(chunkSizeFor(MAX_CHUNKS * DEFAULT_CHUNK_BYTES + 1), 2 * DEFAULT_CHUNK_BYTES)
  assert.equal(chunkSizeFor(MAX_CHUNKS * MAX_CHUNK_BYTES), MAX_CHUNK_BYTES)
  assert.throws(() => chunkSizeFor(MAX_CHUNKS * MAX_CHUNK_BYTES + 1), ValidationError)
  assert.throws(() => chunkSizeFor(0), ValidationError)
  assert.throws(() => chunkSizeFor(1.5), ValidationError)
  assert.equal(chunkSizeFor(10, MIN_CHUNK_BYTES), MIN_CHUNK_BYTES)
  assert.equal(chunkSizeFor(10, MAX_CHUNK_BYTES), MAX_CHUNK_BYTES)
  assert.throws(() => chunkSizeFor(10, MIN_CHUNK_BYTES / 2), ValidationError)
  assert.throws(() => chunkSizeFor(10, MAX_CHUNK_BYTES * 2), ValidationError)
  assert.throws(() => chunkSizeFor(10, 3 * MIN_CHUNK_BYTES), ValidationError)
  assert.equal(chunkSizeFor(MAX_CHUNKS * MIN_CHUNK_BYTES, MIN_CHUNK_BYTES), MIN_CHUNK_BYTES)
  assert.throws(() => chunkSizeFor(MAX_CHUNKS * MIN_CHUNK_BYTES + 1, MIN_CHUNK_BYTES), ValidationError)
})

test('hashFile: one pass gives MD5, SHA-256 and each chunk\'s SHA-256, the last chunk shorter', async () => {
  const dir = tempDir('bm-content-')
  const size = 5 * CHUNK + 1234
  const { path, data, md5 } = source(dir, 'f.bin', size)
  const d = await hashFile(path, { chunkSize: CHUNK })
  assert.equal(d.size, size)
  assert.equal(d.md5, md5)
  assert.equal(d.sha256, createHash('sha256').update(data).digest('hex'))
  assert.deepEqual(d.chunks, Array.from({ length: 6 }, (_, i) => createHash('sha256').update(chunkOf(data, CHUNK, i)).digest('base64')))
  assert.deepEqual((await hashFile(path)).chunks, [], 'no chunk size, no chunk hashes')
  const ac = new AbortController()
  ac.abort(new Error('stop'))
  await assert.rejects(hashFile(path, { chunkSize: CHUNK, signal: ac.signal }), /stop/)
})

test('a manifest round trip: built from a file, signed by its adder, opened and checked by a receiver', async () => {
  const a = await agent()
  const { path, data, md5 } = source(a.dir, 'model.gguf', 3 * CHUNK + 7)
  const manifest = await buildManifest(path, { name: 'model.gguf', adder: a.peerId, chunkSize: CHUNK })
  assert.equal(manifest.md5, md5)
  assert.equal(manifest.size, data.length)
  assert.equal(manifest.chunks.length, 4)
  assert.equal(manifest.name, 'model.gguf')
  const signed = await signManifest(manifest, a.key)
  const opened = await openManifest(signed.bytes, md5)
  assert.deepEqual(opened.manifest, manifest)
  assert.deepEqual(opened.bytes, signed.bytes)
  assert.deepEqual((await openManifest(signed.bytes, md5.toUpperCase())).manifest, manifest, 'the expected MD5 is case-insensitive')
  // the default chunk size for a small file
  assert.equal((await buildManifest(path, { adder: a.peerId })).chunkSize, DEFAULT_CHUNK_BYTES)
})

test('a tampered, misattributed, unexpected, oversized or malformed manifest is a ManifestError', async () => {
  const a = await agent()
  const other = await generateKeyPair('Ed25519')
  const { path } = source(a.dir, 'model.bin', 2 * CHUNK)
  const manifest = await buildManifest(path, { adder: a.peerId, chunkSize: CHUNK })
  const signed = await signManifest(manifest, a.key)

  // payload changed after signing: one digit of the SHA-256 in the JSON
  const text = Buffer.from(signed.bytes)
  const at = text.indexOf(`"sha256":"${manifest.sha256}"`) + 10
  assert.ok(at > 10)
  const tampered = Buffer.from(text)
  tampered[at] = tampered[at] === 0x61 ? 0x62 : 0x61
  await assert.rejects(openManifest(tampered), ManifestError)

  // signed by another key than the adder's
  const forged = await sealPayload(MANIFEST_DOMAIN, MANIFEST_CODEC, new TextEncoder().encode(JSON.stringify(manifest)), other)
  await assert.rejects(openManifest(forged), (err: unknown) => err instanceof ManifestError && /not by its adder/.test(err.message))
  await assert.rejects(signManifest(manifest, other), ManifestError, 'signing for another adder is refused')

  // not the file asked for
  await assert.rejects(openManifest(signed.bytes, 'f'.repeat(32)), ManifestError)

  // too large, empty, not an envelope
  await assert.rejects(openManifest(new Uint8Array(MAX_MANIFEST_BYTES + 1)), (err: unknown) => err instanceof ManifestError && /more than/.test(err.message))
  await assert.rejects(openManifest(new Uint8Array(0)), ManifestError)
  await assert.rejects(openManifest(randomBytes(200)), ManifestError)

  // a valid envelope of another domain, and a signed payload that is not a manifest
  const otherDomain = await sealPayload('blockmesh-other', new TextEncoder().encode('/blockmesh/other/1'), new TextEncoder().encode(JSON.stringify(manifest)), a.key)
  await assert.rejects(openManifest(otherDomain), ManifestError)
  const notJson = await sealPayload(MANIFEST_DOMAIN, MANIFEST_CODEC, new TextEncoder().encode('{"v":1,'), a.key)
  await assert.rejects(openManifest(notJson), ManifestError)
  const badShape = await sealPayload(MANIFEST_DOMAIN, MANIFEST_CODEC, new TextEncoder().encode(JSON.stringify({ ...manifest, chunks: manifest.chunks.slice(1) })), a.key)
  await assert.rejects(openManifest(badShape), ManifestError)
})

test('import hard-links a file into the store; importing it again is a look-up', async () => {
  const a = await agent()
  const { path, data, md5 } = source(a.dir, 'model.gguf', 2 * CHUNK + 100)
  const entry = await a.store.importFile(path, { chunkSize: CHUNK, pin: false })
  assert.equal(entry.md5, md5)
  assert.equal(entry.state, 'complete')
  assert.equal(entry.have, 3)
  assert.equal(entry.chunks, 3)
  assert.equal(entry.name, 'model.gguf')
  assert.equal(entry.pinned, false)
  assert.equal(entry.path, join(a.dir, 'content', md5))
  assert.equal(a.store.pathOf(md5), entry.path)
  assert.equal(statSync(entry.path).ino, statSync(path).ino, 'hard-linked: one inode')
  assert.deepEqual(readFileSync(entry.path), data)
  assert.deepEqual(bits(a.store.bitmap(md5), 3), [0, 1, 2])
  assert.deepEqual(a.store.usage(), { bytes: data.length, capBytes: 1 << 30 })
  assert.equal(a.changes.n, 1)
  const signed = a.store.manifest(md5)
  assert.ok(signed !== undefined)
  assert.equal((await openManifest(signed.bytes, md5)).manifest.adder, a.peerId, 'the manifest is signed by this agent')

  a.clock.t = 2_000
  const again = await a.store.importFile(path, { chunkSize: CHUNK })
  assert.equal(again.pinned, true, 'pinned by the second import')
  assert.equal(again.addedAt, entry.addedAt)
  assert.equal(again.lastUsed, 2_000)
  assert.equal(a.store.list().length, 1)
  assert.equal(a.store.usage().bytes, data.length, 'not counted twice')
  assert.equal(readdirSync(join(a.dir, 'content')).length, 1, 'no temporary file left')

  await assert.rejects(a.store.importFile(join(a.dir, 'missing.bin')), (err: unknown) => err instanceof Error && /does not exist/.test(err.message))
})

// a file on another filesystem cannot be hard-linked (EXDEV): here /dev/shm (tmpfs) against the temp dir's disk
const SHM = '/dev/shm'
const otherFs = ((): string | false => {
  if (!existsSync(SHM)) return `${SHM} does not exist`
  return statSync(SHM).dev !== statSync(tempDir('bm-content-dev-')).dev ? false : `${SHM} is on the same filesystem as the temp dir`
})()
test(skipNamed('a file on another filesystem (a real EXDEV) is copied into the store', otherFs), { skip: otherFs }, async () => {
  const a = await agent()
  const dir = mkdtempSync(join(SHM, 'bm-content-src-'))
  try {
    const copied = source(dir, 'other.gguf', CHUNK + 1)
    const e = await a.store.importFile(copied.path, { chunkSize: CHUNK })
    assert.ok(e.path !== null)
    assert.notEqual(statSync(e.path).dev, statSync(copied.path).dev, 'the store is on another filesystem than the source')
    assert.deepEqual(readFileSync(e.path), copied.data)
    assert.equal(e.md5, copied.md5)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('readChunk returns the file\'s bytes chunk by chunk; a chunk out of range is not found', async () => {
  const a = await agent()
  const { path, data, md5 } = source(a.dir, 'w.bin', 3 * CHUNK + 5)
  await a.store.importFile(path, { chunkSize: CHUNK })
  for (let i = 0; i < 4; i++) assert.deepEqual(Buffer.from(await a.store.readChunk(md5, i)), chunkOf(data, CHUNK, i))
  assert.equal((await a.store.readChunk(md5, 3)).length, 5)
  await assert.rejects(a.store.readChunk(md5, 4), ContentNotFoundError)
  await assert.rejects(a.store.readChunk(md5, -1), ContentNotFoundError)
  await assert.rejects(a.store.readChunk(md5, 0.5), ContentNotFoundError)
  await assert.rejects(a.store.readChunk('0'.repeat(32), 0), ContentNotFoundError)
})

/** A file imported on `a`, its manifest opened by `b` as a fetcher would. */
async function offered (a: Agent, size: number): Promise<{ data: Buffer, md5: string, signed: SignedManifest }> {
  const { path, data, md5 } = source(a.dir, `src-${randomBytes(4).toString('hex')}.bin`, size)
  await a.store.importFile(path, { chunkSize: CHUNK })
  const held = a.store.manifest(md5)
  assert.ok(held !== undefined)
  return { data, md5, signed: await openManifest(held.bytes, md5) }
}

test('a partial: a good chunk is written and served, a bad one refused with nothing written', async () => {
  const a = await agent()
  const b = await agent()
  const { data, md5, signed } = await offered(a, 3 * CHUNK + 10)
  const entry = b.store.begin(signed)
  assert.equal(entry.state, 'partial')
  assert.equal(entry.have, 0)
  assert.equal(entry.path, null)
  assert.equal(b.store.pathOf(md5), undefined)
  const part = join(b.dir, 'content', `${md5}.part`)
  assert.equal(statSync(part).size, data.length, 'preallocated to its full size')
  assert.equal(b.store.usage().bytes, data.length)
  assert.equal(b.changes.n, 1)

  await b.store.writeChunk(md5, 1, chunkOf(data, CHUNK, 1))
  assert.deepEqual(bits(b.store.bitmap(md5), 4), [1])
  assert.deepEqual(Buffer.from(await b.store.readChunk(md5, 1)), chunkOf(data, CHUNK, 1), 'a partial serves the chunks it holds')
  await assert.rejects(b.store.readChunk(md5, 0), ContentNotFoundError)

  const bad = Buffer.from(chunkOf(data, CHUNK, 0))
  bad[17] ^= 0xff
  await assert.rejects(b.store.writeChunk(md5, 0, bad), (err: unknown) => err instanceof ChunkHashError && err.index === 0 && err.md5 === md5)
  await assert.rejects(b.store.writeChunk(md5, 3, chunkOf(data, CHUNK, 2).subarray(0, 10)), ChunkHashError, 'the last chunk: the right length is not enough')
  await assert.rejects(b.store.writeChunk(md5, 2, chunkOf(data, CHUNK, 2).subarray(1)), ChunkHashError, 'a short chunk')
  await assert.rejects(b.store.writeChunk(md5, 4, chunkOf(data, CHUNK, 3)), ValidationError, 'no chunk 4')
  assert.deepEqual(bits(b.store.bitmap(md5), 4), [1], 'nothing recorded')
  assert.ok(readFileSync(part).subarray(0, CHUNK).every(x => x === 0), 'nothing written')
  await b.store.writeChunk(md5, 1, chunkOf(data, CHUNK, 1))
  assert.equal(b.store.get(md5)?.have, 1, 'writing a chunk held again is a no-op')
  await assert.rejects(b.store.complete(md5), ContentNotFoundError, 'not every chunk held')
  await assert.rejects(b.store.writeChunk('0'.repeat(32), 0, new Uint8Array(1)), ContentNotFoundError)
  assert.equal(b.store.begin(signed).have, 1, 'begin again resumes')
})

test('a download resumes after a restart and completes into the final file', async () => {
  const a = await agent()
  const b = await agent()
  const { data, md5, signed } = await offered(a, 4 * CHUNK + 3)
  b.store.begin(signed)
  await b.store.writeChunk(md5, 0, chunkOf(data, CHUNK, 0))
  await b.store.writeChunk(md5, 3, chunkOf(data, CHUNK, 3))

  const store = b.reopen()
  const entry = store.get(md5)
  assert.equal(entry?.state, 'partial')
  assert.equal(entry?.have, 2)
  assert.deepEqual(bits(store.bitmap(md5), 5), [0, 3])
  assert.deepEqual(store.manifest(md5)?.bytes, signed.bytes)
  for (const i of [1, 2, 4]) await store.writeChunk(md5, i, chunkOf(data, CHUNK, i))
  const done = await store.complete(md5)
  assert.equal(done.state, 'complete')
  assert.equal(done.have, 5)
  assert.equal(done.path, join(b.dir, 'content', md5))
  assert.deepEqual(readFileSync(done.path), data)
  assert.equal(existsSync(join(b.dir, 'content', `${md5}.part`)), false)
  assert.deepEqual(bits(store.bitmap(md5), 5), [0, 1, 2, 3, 4])
  assert.equal((await store.complete(md5)).state, 'complete', 'completing twice is a look-up')
  assert.equal(b.reopen().get(md5)?.state, 'complete', 'complete after another restart')
})

test('a manifest whose chunk hashes match but whose MD5 is forged fails at completion, and the partial is discarded', async () => {
  const a = await agent()
  const b = await agent()
  const { path, data } = source(a.dir, 'real.bin', 2 * CHUNK + 1)
  const real = await buildManifest(path, { adder: a.peerId, chunkSize: CHUNK })
  const forgedMd5 = createHash('md5').update('another model').digest('hex')
  const forged: Manifest = { ...real, md5: forgedMd5 }
  const signed = await openManifest((await signManifest(forged, a.key)).bytes, forgedMd5)
  b.store.begin(signed)
  for (let i = 0; i < 3; i++) await b.store.writeChunk(forgedMd5, i, chunkOf(data, CHUNK, i))
  const before = b.changes.n
  await assert.rejects(b.store.complete(forgedMd5), (err: unknown) => err instanceof ContentDigestError && (err.details as { md5: string }).md5 === forgedMd5)
  assert.equal(b.store.get(forgedMd5), undefined)
  assert.equal(existsSync(join(b.dir, 'content', `${forgedMd5}.part`)), false)
  assert.equal(existsSync(join(b.dir, 'content', forgedMd5)), false)
  assert.equal(b.store.usage().bytes, 0)
  assert.equal(b.changes.n, before + 1)
  assert.equal(b.reopen().get(forgedMd5), undefined, 'the row is gone too')
})

test('eviction: least recently used first, never a file in use, never a pinned one', async () => {
  const size = 2 * CHUNK
  const a = await agent(3 * size + 10)
  const add = async (name: string, pin = false): Promise<string> => {
    a.clock.t += 1_000
    return (await a.store.importFile(source(a.dir, name, size).path, { chunkSize: CHUNK, pin })).md5
  }
  const f1 = await add('1.bin')
  const f2 = await add('2.bin')
  const f3 = await add('3.bin')
  assert.deepEqual(a.store.evict(), [], 'under the cap: nothing evicted')
  a.clock.t += 1_000
  a.store.acquire(f1)() // f1 used: f2 is now the least recently used
  assert.deepEqual(a.store.list().map(e => e.md5), [f1, f3, f2], 'most recently used first')
  a.clock.t += 1_000
  a.store.touch(f3) // served to a peer
  a.clock.t += 1_000
  a.store.acquire(f1)()
  assert.deepEqual(a.store.list().map(e => e.md5), [f1, f3, f2])
  const f4 = await add('4.bin')
  assert.equal(a.store.get(f2), undefined, 'the import went over the cap: f2 evicted')
  assert.equal(existsSync(join(a.dir, 'content', f2)), false)
  assert.deepEqual(a.store.list().map(e => e.md5).sort(), [f1, f3, f4].sort())
  assert.ok(a.store.usage().bytes <= a.store.usage().capBytes)

  // a smaller cap after a restart (lastUsed kept): f3 is the least recently used, but in use
  const store = a.reopen(2 * size)
  const release = store.acquire(f3)
  assert.equal(store.get(f3)?.inUse, 1)
  assert.deepEqual(store.evict(), [f1])
  assert.deepEqual(store.usage(), { bytes: 2 * size, capBytes: 2 * size })
  a.clock.t += 1_000
  const f5 = (await store.importFile(source(a.dir, '5.bin', size).path, { chunkSize: CHUNK })).md5
  assert.equal(store.get(f5)?.pinned, true)
  assert.equal(store.get(f4), undefined, 'the pinned import evicted f4, the only file neither pinned nor in use')
  assert.ok(store.get(f3) !== undefined)
  release()
  assert.equal(store.get(f3)?.inUse, 0)

  // a cap below the pinned file alone: everything else goes, the pinned file stays (above the cap)
  const tiny = a.reopen(size / 2)
  assert.deepEqual(tiny.evict(), [f3])
  assert.deepEqual(tiny.list().map(e => e.md5), [f5])
  assert.deepEqual(tiny.usage(), { bytes: size, capBytes: size / 2 })
  assert.deepEqual(tiny.evict(), [])
})

test('remove: refused while in use, then removes the row and the file', async () => {
  const a = await agent()
  const { path, md5 } = source(a.dir, 'm.bin', CHUNK)
  const entry = await a.store.importFile(path, { chunkSize: CHUNK })
  const release = a.store.acquire(md5)
  const again = a.store.acquire(md5)
  assert.throws(() => a.store.remove(md5), (err: unknown) => err instanceof ContentInUseError && (err.details as { users: number }).users === 2)
  release()
  release() // idempotent
  assert.throws(() => a.store.remove(md5), ContentInUseError)
  again()
  a.store.remove(md5)
  assert.equal(a.store.get(md5), undefined)
  assert.equal(entry.path !== null && existsSync(entry.path), false)
  assert.equal(existsSync(path), true, 'the source stays')
  assert.equal(a.store.usage().bytes, 0)
  assert.throws(() => a.store.remove(md5), ContentNotFoundError)
})

test('begin: ContentCapError when nothing may be evicted to make room; an unused file is evicted instead', async () => {
  const size = 2 * CHUNK
  const src = await agent()
  const big = await offered(src, size)
  const pinned = await agent(size + CHUNK)
  await pinned.store.importFile(source(pinned.dir, 'p.bin', size).path, { chunkSize: CHUNK })
  assert.throws(() => pinned.store.begin(big.signed), (err: unknown) => {
    assert.ok(err instanceof ContentCapError)
    assert.deepEqual(err.details, { md5: big.md5, needed: size, bytes: size, evictable: 0, capBytes: size + CHUNK })
    return true
  })
  assert.equal(pinned.store.get(big.md5), undefined)
  assert.equal(existsSync(join(pinned.dir, 'content', `${big.md5}.part`)), false)

  // an unpinned file in use is not evicted either; once released, it makes room
  const used = await agent(size + CHUNK)
  const u = (await used.store.importFile(source(used.dir, 'u.bin', size).path, { chunkSize: CHUNK, pin: false })).md5
  const release = used.store.acquire(u)
  assert.throws(() => used.store.begin(big.signed), ContentCapError)
  assert.ok(used.store.get(u) !== undefined, 'refused before evicting anything')
  release()
  assert.equal(used.store.begin(big.signed).state, 'partial')
  assert.equal(used.store.get(u), undefined, 'evicted to make room')
  assert.deepEqual(used.store.usage(), { bytes: size, capBytes: size + CHUNK })

  // a file larger than the cap
  const small = await agent(CHUNK)
  assert.throws(() => small.store.begin(big.signed), ContentCapError)
})

test('open reconciles the table with the folder: rows without a file dropped, stray files deleted', async () => {
  const a = await agent()
  const b = await agent()
  const kept = await offered(a, CHUNK + 1)
  const lost = await offered(a, CHUNK + 2)
  b.store.begin(kept.signed)
  b.store.begin(lost.signed)
  const content = join(b.dir, 'content')
  const gone = (await b.store.importFile(source(b.dir, 'gone.bin', CHUNK).path, { chunkSize: CHUNK })).md5
  rmSync(join(content, `${lost.md5}.part`))
  rmSync(join(content, gone))
  writeFileSync(join(content, 'stray.bin'), 'x')
  writeFileSync(join(content, '.import-0123.tmp'), 'half')
  const store = b.reopen()
  assert.deepEqual(store.list().map(e => e.md5), [kept.md5])
  assert.deepEqual(readdirSync(content), [`${kept.md5}.part`])
  assert.equal(store.usage().bytes, CHUNK + 1)
  assert.equal(b.db.prepare('SELECT COUNT(*) FROM content_files').pluck().get(), 1)
})
