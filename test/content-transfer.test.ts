// Model files travel peer to peer (issue 15): real libp2p nodes in this process, each with a real content
// store (SQLite file and folder in a temp dir) and the content service; a fetcher brings a file from the
// peers a test directory names. Nothing here asserts on wall-clock time.
import { describe, test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { MeshNode } from '../mesh/node.ts'
import type { Offence } from '../mesh/errors.ts'
import { lengthPrefixed } from '../mesh/rpc.ts'
import { openDatabase } from '../agent/db/database.ts'
import type { Db } from '../agent/db/database.ts'
import { SqliteContentStore } from '../agent/content/store.ts'
import { contentService } from '../agent/content/service.ts'
import type { ContentService, ContentServiceInit } from '../agent/content/service.ts'
import { MeshContentFetcher } from '../agent/content/fetcher.ts'
import type { MeshContentFetcherInit } from '../agent/content/fetcher.ts'
import { CONTENT_PROTOCOL, ContentBusyError, requestChunk } from '../agent/content/protocol.ts'
import { NoSourceError, ContentTooLargeError } from '../agent/content/errors.ts'
import type { ContentDirectory, ContentStore, TransferProgress } from '../agent/content/types.ts'

const CHUNK = 64 * 1024
const FILE_BYTES = 2 * 1024 * 1024 + 12_345 // 33 chunks, the last one short

interface Agent {
  name: string
  id: string
  node: MeshNode
  store: SqliteContentStore
  service: ContentService
  fetcher: MeshContentFetcher
  strikes: Array<{ peer: string, offence: Offence }>
  db: Db
}

const root = mkdtempSync(join(tmpdir(), 'bm-content-'))
const agents: Agent[] = []
/** The test's directory: md5 → who holds it. */
const holders = new Map<string, { complete: string[], partial: string[] }>()
const directory: ContentDirectory = { holders: (md5) => holders.get(md5) ?? { complete: [], partial: [] } }

/** An agent: a started node, its store in a temp dir, the content service (serving `serveStore(store)`) and a fetcher. */
async function agent (name: string, opts: { service?: Partial<ContentServiceInit>, serveStore?: (s: ContentStore) => ContentStore, fetcher?: Partial<MeshContentFetcherInit> } = {}): Promise<Agent> {
  const privateKey = await generateKeyPair('Ed25519')
  const node = await MeshNode.create({ privateKey, listen: ['/ip4/127.0.0.1/tcp/0'] })
  await node.start()
  const id = node.peerId.toString()
  const dir = join(root, name)
  const db = openDatabase(join(root, `${name}.db`))
  const store = new SqliteContentStore({ db, dir, capBytes: 1 << 30, privateKey, peerId: id })
  const service = contentService({ store: opts.serveStore?.(store) ?? store, ...opts.service })({ registrar: node.libp2p, score: node.score })
  await service.start()
  const fetcher = new MeshContentFetcher({ node, store, directory, haveRefreshMs: 100, holderWaitMs: 3000, ...opts.fetcher })
  const strikes: Agent['strikes'] = []
  node.score.observe({ onStrike: (peer, _reason, offence) => { strikes.push({ peer, offence }) } })
  const a = { name, id, node, store, service, fetcher, strikes, db }
  for (const b of agents) {
    const addr = b.node.libp2p.getMultiaddrs()[0]
    if (b.node.libp2p.status === 'started' && addr != null) await node.libp2p.dial(addr)
  }
  agents.push(a)
  return a
}

/** A file of random bytes, added to each of `into` (same bytes, each its own signed manifest); its MD5 and SHA-256. */
async function randomFile (into: Agent[], bytes = FILE_BYTES): Promise<{ md5: string, sha256: string, size: number }> {
  const path = join(root, `file-${randomBytes(4).toString('hex')}.bin`)
  const data = randomBytes(bytes)
  writeFileSync(path, data)
  let md5 = ''
  for (const a of into) md5 = (await a.store.importFile(path, { chunkSize: CHUNK })).md5
  return { md5, sha256: createHash('sha256').update(data).digest('hex'), size: bytes }
}

function sha256Of (a: Agent, md5: string): string {
  const path = a.store.pathOf(md5)
  assert.ok(path != null, `${a.name} holds ${md5} complete`)
  return createHash('sha256').update(readFileSync(path)).digest('hex')
}

/** Stands for a misbehaving peer: its service serves every chunk with one byte flipped. */
function corrupting (store: ContentStore): ContentStore {
  return new Proxy(store, {
    get (target, prop) {
      if (prop === 'readChunk') {
        return async (md5: string, index: number, signal?: AbortSignal) => {
          const b = (await target.readChunk(md5, index, signal)).slice()
          b[b.length >> 1] ^= 0x5a
          return b
        }
      }
      const v = Reflect.get(target, prop) as unknown
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
    }
  })
}

/** A store whose chunk reads wait for `open()`; `entered` counts reads begun. */
function gated (store: ContentStore): { store: ContentStore, entered: () => number, open: () => void, until: (n: number) => Promise<void> } {
  let entered = 0
  let open!: () => void
  const gate = new Promise<void>(resolve => { open = resolve })
  const waiters: Array<() => void> = []
  const proxy = new Proxy(store, {
    get (target, prop) {
      if (prop === 'readChunk') {
        return async (md5: string, index: number, signal?: AbortSignal) => {
          entered++
          for (const w of waiters.splice(0)) w()
          await gate
          return await target.readChunk(md5, index, signal)
        }
      }
      const v = Reflect.get(target, prop) as unknown
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
    }
  })
  const until = async (n: number): Promise<void> => { while (entered < n) await new Promise<void>(resolve => { waiters.push(resolve) }) }
  return { store: proxy, entered: () => entered, open, until }
}

describe('content transfer between real libp2p nodes', () => {
  after(async () => {
    for (const a of agents) {
      await a.service.stop().catch(() => {})
      await a.node.stop().catch(() => {})
      a.db.close()
    }
    rmSync(root, { recursive: true, force: true })
  })

  test('a multi-chunk file fetched from one holder arrives whole', async () => {
    const h = await agent('one-holder')
    const f = await agent('one-fetcher')
    const file = await randomFile([h])
    holders.set(file.md5, { complete: [h.id], partial: [] })
    const seen: TransferProgress[] = []
    const listed: string[][] = []
    const entry = await f.fetcher.fetch(file.md5, { onProgress: p => { seen.push(p); listed.push(f.fetcher.transfers().map(t => t.md5)) } })
    assert.deepEqual(listed[0], [file.md5], 'the transfer is listed while in progress')
    assert.equal(entry.state, 'complete')
    assert.equal(entry.size, file.size)
    assert.equal(sha256Of(f, file.md5), file.sha256)
    const last = seen.at(-1) as TransferProgress
    assert.equal(last.receivedBytes, file.size)
    assert.deepEqual(last.bySource, { [h.id]: file.size })
    assert.equal(h.service.stats().byPeer[f.id], file.size)
    assert.equal(h.service.stats().byMd5[file.md5], file.size)
    assert.deepEqual(f.fetcher.transfers(), [], 'no transfer left in progress')
    // complete here now: a second fetch is a look-up
    assert.equal((await f.fetcher.fetch(file.md5)).md5, file.md5)
  })

  test('a file over the fetcher\'s --max-model-bytes is refused from its manifest: nothing fetched, no partial kept', async () => {
    const h = await agent('big-holder')
    const f = await agent('small-fetcher', { fetcher: { maxFileBytes: 100_000 } })
    const file = await randomFile([h])
    holders.set(file.md5, { complete: [h.id], partial: [] })
    await assert.rejects(f.fetcher.fetch(file.md5), (e: unknown) => e instanceof ContentTooLargeError && e.status === 413 && /over this agent's limit/.test(e.message))
    assert.equal(f.store.get(file.md5), undefined, 'no partial begun')
    assert.equal(h.service.stats().byPeer[f.id] ?? 0, 0, 'no chunk served')
  })

  test('concurrent fetches of one file share one transfer', async () => {
    const h = await agent('shared-holder')
    const f = await agent('shared-fetcher')
    const file = await randomFile([h], 512 * 1024)
    holders.set(file.md5, { complete: [h.id], partial: [] })
    const [a, b] = await Promise.all([f.fetcher.fetch(file.md5), f.fetcher.fetch(file.md5)])
    assert.equal(a.md5, b.md5)
    assert.equal(sha256Of(f, file.md5), file.sha256)
    assert.equal(h.service.stats().byPeer[f.id], file.size, 'every chunk was sent once')
  })

  test('from two complete holders, bytes come from both', async () => {
    const h1 = await agent('two-holder-1')
    const h2 = await agent('two-holder-2')
    const f = await agent('two-fetcher')
    const file = await randomFile([h1, h2])
    holders.set(file.md5, { complete: [h1.id, h2.id], partial: [] })
    let last: TransferProgress | undefined
    await f.fetcher.fetch(file.md5, { onProgress: p => { last = p } })
    assert.equal(sha256Of(f, file.md5), file.sha256)
    assert.ok((last?.bySource[h1.id] ?? 0) > 0 && (last?.bySource[h2.id] ?? 0) > 0, `both holders sent bytes: ${JSON.stringify(last?.bySource)}`)
    assert.equal((last?.bySource[h1.id] ?? 0) + (last?.bySource[h2.id] ?? 0), file.size)
  })

  test('three fetchers of one capped holder trade chunks among themselves', async () => {
    const h = await agent('swarm-holder', { service: { uploadBytesPerSecond: 512 * 1024 } })
    const fs = [await agent('swarm-1'), await agent('swarm-2'), await agent('swarm-3')]
    const file = await randomFile([h])
    holders.set(file.md5, { complete: [h.id], partial: fs.map(f => f.id) })
    const progress = new Map<string, TransferProgress>()
    await Promise.all(fs.map(async f => await f.fetcher.fetch(file.md5, { onProgress: p => { progress.set(f.id, p) } })))
    for (const f of fs) {
      assert.equal(sha256Of(f, file.md5), file.sha256)
      const by = progress.get(f.id)?.bySource ?? {}
      const fromPeers = fs.filter(o => o !== f).reduce((n, o) => n + (by[o.id] ?? 0), 0)
      assert.ok(fromPeers > 0, `${f.name} got bytes from another fetcher: ${JSON.stringify(by)}`)
      assert.equal(Object.values(by).reduce((a, b) => a + b, 0), file.size)
    }
    const served = fs.reduce((n, f) => n + f.service.stats().bytes, 0)
    assert.ok(served > 0, 'the fetchers served chunks they had')
    assert.deepEqual(new Set(h.service.fetchers(file.md5)), new Set(fs.map(f => f.id)), 'the holder names its recent fetchers (the have answer\'s tracker hint)')
  })

  test('a holder that stops mid-transfer: the fetch completes from the other', async () => {
    const dying = await agent('dying-holder', { service: { uploadBytesPerSecond: 512 * 1024 } })
    const other = await agent('other-holder', { service: { uploadBytesPerSecond: 512 * 1024 } })
    const f = await agent('survivor-fetcher')
    const file = await randomFile([dying, other])
    holders.set(file.md5, { complete: [dying.id, other.id], partial: [] })
    let stoppedAt: number | undefined
    let stopping: Promise<void> | undefined
    let last: TransferProgress | undefined
    await f.fetcher.fetch(file.md5, {
      onProgress: p => {
        last = p
        if (stopping == null && (p.bySource[dying.id] ?? 0) > 0) {
          stoppedAt = p.receivedBytes
          stopping = dying.node.stop()
        }
      }
    })
    await stopping
    assert.ok(stoppedAt != null && stoppedAt < file.size, 'the holder stopped before the file was complete')
    assert.equal(sha256Of(f, file.md5), file.sha256)
    assert.ok((last?.bySource[other.id] ?? 0) > 0)
    assert.ok((last?.bySource[dying.id] ?? 0) < file.size)
    assert.deepEqual(f.strikes, [], 'a peer that went away is not struck')
  })

  test('an aborted fetch keeps its partial, and the next fetch resumes it', async () => {
    const h = await agent('slow-holder', { service: { uploadBytesPerSecond: 512 * 1024 } })
    const f = await agent('impatient-fetcher')
    const file = await randomFile([h], 1024 * 1024)
    holders.set(file.md5, { complete: [h.id], partial: [] })
    const ac = new AbortController()
    const reason = new Error('the test aborts')
    await assert.rejects(f.fetcher.fetch(file.md5, { signal: ac.signal, onProgress: p => { if (p.receivedBytes > 0) ac.abort(reason) } }), (e: unknown) => e === reason)
    const partial = f.store.get(file.md5)
    assert.equal(partial?.state, 'partial')
    assert.ok((partial?.have ?? 0) > 0 && (partial?.have ?? 0) < (partial?.chunks ?? 0), `some chunks kept: ${partial?.have} of ${partial?.chunks}`)
    assert.deepEqual(f.fetcher.transfers(), [])
    let last: TransferProgress | undefined
    await f.fetcher.fetch(file.md5, { onProgress: p => { last = p } })
    assert.equal(sha256Of(f, file.md5), file.sha256)
    assert.equal(last?.receivedBytes, file.size)
    assert.ok((last?.bySource[h.id] ?? 0) < file.size, 'only the missing chunks were fetched again')
    assert.deepEqual(h.strikes, [], 'a fetcher cancelling its requests (streams reset) is not struck')
  })

  test('a holder serving corrupt chunks is struck forged and the fetch completes from the honest one', async () => {
    const bad = await agent('corrupt-holder', { serveStore: corrupting })
    const good = await agent('honest-holder')
    const f = await agent('careful-fetcher')
    const file = await randomFile([bad, good])
    holders.set(file.md5, { complete: [bad.id, good.id], partial: [] })
    let last: TransferProgress | undefined
    await f.fetcher.fetch(file.md5, { onProgress: p => { last = p } })
    assert.equal(sha256Of(f, file.md5), file.sha256)
    assert.equal(last?.bySource[bad.id] ?? 0, 0, 'no byte of the corrupt holder was kept')
    assert.equal(last?.bySource[good.id], file.size)
    assert.deepEqual(f.strikes, [{ peer: bad.id, offence: 'forged' }], 'struck once, for forged bytes')
    assert.ok(f.node.score.score(bad.id) > 0)
    assert.ok(bad.service.stats().byPeer[f.id] > 0, 'the corrupt holder did send chunks')
  })

  test('a malformed request is answered bad_request and struck', async () => {
    const h = await agent('strict-holder')
    const rogue = await agent('rogue')
    const ask = async (frame: Uint8Array): Promise<{ ok: boolean, error?: { code: string } }> => {
      const stream = await rogue.node.libp2p.dialProtocol(h.node.peerId, CONTENT_PROTOCOL)
      const lp = lengthPrefixed(stream, 64 * 1024)
      await lp.write(frame)
      const answer = await lp.readFrame()
      assert.ok(answer != null)
      await stream.close().catch(() => {})
      return JSON.parse(new TextDecoder().decode(answer))
    }
    const notJson = await ask(new TextEncoder().encode('{"op": "chunk", '))
    assert.equal(notJson.ok, false)
    assert.equal(notJson.error?.code, 'bad_request')
    const badSchema = await ask(new TextEncoder().encode(JSON.stringify({ op: 'chunk', md5: 'not-an-md5', index: -1 })))
    assert.equal(badSchema.error?.code, 'bad_request')
    assert.deepEqual(h.strikes, [{ peer: rogue.id, offence: 'malformed' }, { peer: rogue.id, offence: 'malformed' }])
    // a valid request for a file not held is no offence
    const missing = await ask(new TextEncoder().encode(JSON.stringify({ op: 'have', md5: '0'.repeat(32) })))
    assert.equal(missing.error?.code, 'not_found')
    assert.equal(h.strikes.length, 2)
    // a request cancelled before it was sent (the stream reset) is no offence either
    const cancelled = await rogue.node.libp2p.dialProtocol(h.node.peerId, CONTENT_PROTOCOL)
    cancelled.abort(new Error('the fetcher no longer needs it'))
    const after = await ask(new TextEncoder().encode(JSON.stringify({ op: 'have', md5: '0'.repeat(32) })))
    assert.equal(after.error?.code, 'not_found')
    assert.equal(h.strikes.length, 2)
  })

  test('over maxConcurrentPerPeer chunk requests, the holder answers busy', async () => {
    let gate!: ReturnType<typeof gated>
    const h = await agent('busy-holder', { service: { maxConcurrentPerPeer: 2 }, serveStore: s => { gate = gated(s); return gate.store } })
    const f = await agent('eager-fetcher')
    const file = await randomFile([h], 4 * CHUNK)
    const first = [0, 1].map(async i => await requestChunk(f.node.libp2p, h.id, file.md5, i, CHUNK, CHUNK))
    await gate.until(2)
    await assert.rejects(requestChunk(f.node.libp2p, h.id, file.md5, 2, CHUNK, CHUNK), (e: unknown) => e instanceof ContentBusyError)
    gate.open()
    const got = await Promise.all(first)
    assert.deepEqual(got.map(b => b.length), [CHUNK, CHUNK])
    assert.deepEqual(h.strikes, [], 'being busy is no fault of the asker')
    // the slots are free again
    assert.equal((await requestChunk(f.node.libp2p, h.id, file.md5, 2, CHUNK, CHUNK)).length, CHUNK)
  })

  test('no holder and no origin: NoSourceError; an origin: the file comes from there', async () => {
    const file = join(root, 'origin.bin')
    const data = randomBytes(300_000)
    writeFileSync(file, data)
    const md5 = createHash('md5').update(data).digest('hex')
    const f = await agent('origin-fetcher', { fetcher: { holderWaitMs: 200, origin: async () => file } })
    await assert.rejects(f.fetcher.fetch(md5), (e: unknown) => e instanceof NoSourceError)
    let last: TransferProgress | undefined
    const entry = await f.fetcher.fetch(md5, { origin: { url: 'file:///origin.bin' }, onProgress: p => { last = p } })
    assert.equal(entry.state, 'complete')
    assert.equal(entry.pinned, false)
    assert.deepEqual(last?.bySource, { origin: data.length })
  })
})
