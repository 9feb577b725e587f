import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { pathToFileURL } from 'node:url'
import { cachePathFor, materializeModel, md5File, ModelSourceError } from '../agent/model/source.ts'
import type { ModelSourceReason } from '../agent/model/source.ts'
import { tempDir, until } from './helpers/agents.ts'
import { rejectsWith } from './helpers/rejects.ts'

const MiB = 1024 * 1024

/** Deterministic bytes (xorshift32), deliberately not a multiple of any chunk size. */
function makeData (n: number): Buffer {
  const buf = Buffer.alloc(n)
  let x = 0x9e3779b9
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0
    x ^= x >>> 17
    x ^= x << 5; x >>>= 0
    buf[i] = x & 0xff
  }
  return buf
}

const DATA = makeData(3 * MiB + 12_345)
const N = DATA.length
const HALF = Math.floor(N / 2)
const MD5 = createHash('md5').update(DATA).digest('hex')
const WRONG_MD5 = createHash('md5').update('something else').digest('hex')

type Handler = (req: IncomingMessage, res: ServerResponse, hit: number) => void | Promise<void>
interface Seen { path: string, range: string | undefined, hit: number, partSize: number | null }

const routes = new Map<string, { handler: Handler, partPath?: string }>()
const seen: Seen[] = []
let server: Server
let base: string

function hits (path: string): Seen[] {
  return seen.filter(s => s.path === path)
}

/** Registers a route; `partPath` lets the server record the size of the client's .part when each request arrives. */
function route (path: string, handler: Handler, partPath?: string): string {
  routes.set(path, { handler, partPath })
  return base + path
}

function serveFull (res: ServerResponse): void {
  res.writeHead(200, { 'content-length': N })
  res.end(DATA)
}

function serveRange (req: IncomingMessage, res: ServerResponse): void {
  const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '')
  if (m === null) { serveFull(res); return }
  const start = Number(m[1])
  if (start >= N) {
    res.writeHead(416, { 'content-range': `bytes */${N}` })
    res.end()
    return
  }
  res.writeHead(206, { 'content-range': `bytes ${start}-${N - 1}/${N}`, 'content-length': N - start })
  res.end(DATA.subarray(start))
}

async function serveChunked (res: ServerResponse): Promise<void> {
  res.writeHead(200, { 'content-type': 'application/octet-stream' }) // no Content-Length: chunked
  const pieces: Buffer[] = []
  for (let i = 0; i < N; i += 256 * 1024) pieces.push(DATA.subarray(i, i + 256 * 1024))
  await pipeline(Readable.from(pieces), res).catch(() => {})
}

/** Sends half the body under a full Content-Length, waits until the client has it on disk, then drops the connection. */
async function dropAfterHalf (res: ServerResponse, partPath: string): Promise<void> {
  res.writeHead(200, { 'content-length': N })
  res.write(DATA.subarray(0, HALF))
  await until(() => statSync(partPath).size === HALF, 'the client to write half the body', 10_000, 10).catch(() => {})
  res.socket?.destroy()
}

/** Sends half the body and then nothing, until the client goes away. */
function stallAfterHalf (res: ServerResponse): void {
  res.writeHead(200, { 'content-length': N })
  res.write(DATA.subarray(0, HALF))
}


before(async () => {
  server = createServer((req, res) => {
    const path = req.url ?? '/'
    const r = routes.get(path)
    let partSize: number | null = null
    if (r?.partPath !== undefined && existsSync(r.partPath)) partSize = statSync(r.partPath).size
    const hit = hits(path).length + 1
    seen.push({ path, range: req.headers.range, hit, partSize })
    if (r === undefined) { res.writeHead(404).end('no such route'); return }
    Promise.resolve(r.handler(req, res, hit)).catch(err => res.destroy(err as Error))
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
})

after(async () => {
  server.closeAllConnections()
  await new Promise<void>(resolve => server.close(() => resolve()))
})

test('a download completes with its MD5 verified and progress reported; the second call uses the cache without a request', async () => {
  const cacheDir = join(tempDir(), 'cache') // created by the call
  const url = route('/full/one', (_req, res) => serveFull(res))
  const progress: Array<{ receivedBytes: number, totalBytes: number | null }> = []
  const got = await materializeModel({ url, md5: MD5.toUpperCase() }, { cacheDir, maxBytes: 8 * MiB, onProgress: p => progress.push(p) })
  assert.deepEqual(got, { path: join(cacheDir, `${MD5}.bin`), md5: MD5, sizeBytes: N, downloaded: true })
  assert.equal(cachePathFor({ url, md5: MD5 }, cacheDir), got.path)
  assert.ok(readFileSync(got.path).equals(DATA))
  assert.deepEqual(readdirSync(cacheDir), [`${MD5}.bin`], 'no .part left behind')

  assert.ok(progress.length >= 2, `progress was reported during and at the end (${progress.length} calls)`)
  for (let i = 1; i < progress.length; i++) assert.ok(progress[i].receivedBytes > progress[i - 1].receivedBytes, 'receivedBytes increases')
  assert.equal(progress.at(-1)?.receivedBytes, N)
  assert.ok(progress.every(p => p.totalBytes === N), 'totalBytes is the Content-Length')

  const again = await materializeModel({ url, md5: MD5 }, { cacheDir, maxBytes: 8 * MiB })
  assert.deepEqual(again, { path: got.path, md5: MD5, sizeBytes: N, downloaded: false })
  assert.equal(hits('/full/one').length, 1, 'the cached file is used without any request')
})

test('a chunked download without an expected MD5 is cached under a hash of its URL', async () => {
  const cacheDir = tempDir()
  const url = route('/chunked/ok', async (_req, res) => await serveChunked(res))
  const progress: Array<{ receivedBytes: number, totalBytes: number | null }> = []
  const got = await materializeModel({ url }, { cacheDir, maxBytes: 8 * MiB, onProgress: p => progress.push(p) })
  const name = createHash('sha256').update(url).digest('hex').slice(0, 32)
  assert.deepEqual(got, { path: join(cacheDir, `${name}.bin`), md5: MD5, sizeBytes: N, downloaded: true })
  assert.ok(progress.slice(0, -1).every(p => p.totalBytes === null), 'total is unknown while a chunked body arrives')
  assert.deepEqual(progress.at(-1), { receivedBytes: N, totalBytes: N })
  const again = await materializeModel({ url }, { cacheDir, maxBytes: 8 * MiB })
  assert.equal(again.downloaded, false)
  assert.equal(hits('/chunked/ok').length, 1)
})

test('an interrupted download resumes from the .part with a Range request', async () => {
  const cacheDir = tempDir()
  const partPath = join(cacheDir, `${MD5}.bin.part`)
  const url = route('/resume/one', async (req, res, hit) => {
    if (hit === 1) await dropAfterHalf(res, partPath)
    else serveRange(req, res)
  }, partPath)
  const got = await materializeModel({ url, md5: MD5 }, { cacheDir, maxBytes: 8 * MiB })
  assert.equal(got.md5, MD5)
  assert.equal(got.downloaded, true)
  assert.ok(readFileSync(got.path).equals(DATA))
  const reqs = hits('/resume/one')
  assert.equal(reqs.length, 2)
  assert.equal(reqs[0].range, undefined, 'the first request asks for the whole file')
  assert.equal(reqs[1].partSize, HALF, 'the .part held what arrived before the drop')
  assert.equal(reqs[1].range, `bytes=${HALF}-`, 'the retry asks only for the rest')
  assert.deepEqual(readdirSync(cacheDir), [`${MD5}.bin`])
})

test('a server that ignores Range: the client starts over cleanly', async () => {
  const cacheDir = tempDir()
  const partPath = join(cacheDir, `${MD5}.bin.part`)
  const url = route('/norange/one', async (_req, res, hit) => {
    if (hit === 1) await dropAfterHalf(res, partPath)
    else serveFull(res)
  }, partPath)
  const got = await materializeModel({ url, md5: MD5 }, { cacheDir, maxBytes: 8 * MiB })
  assert.equal(got.sizeBytes, N, 'the body was not appended to the old .part')
  assert.equal(got.md5, MD5)
  assert.ok(readFileSync(got.path).equals(DATA))
  const reqs = hits('/norange/one')
  assert.equal(reqs.length, 2)
  assert.equal(reqs[1].range, `bytes=${HALF}-`, 'the client did try to resume')
})

test('a .part that already holds the whole file (416) is verified, not downloaded again', async () => {
  const cacheDir = tempDir()
  writeFileSync(join(cacheDir, `${MD5}.bin.part`), DATA)
  const url = route('/range416/one', (req, res) => serveRange(req, res))
  const got = await materializeModel({ url, md5: MD5 }, { cacheDir, maxBytes: 8 * MiB })
  assert.deepEqual(got, { path: join(cacheDir, `${MD5}.bin`), md5: MD5, sizeBytes: N, downloaded: true })
  assert.deepEqual(hits('/range416/one').map(s => s.range), [`bytes=${N}-`])
})

test('a wrong MD5 is refused and nothing is left behind', async () => {
  const cacheDir = tempDir()
  const url = route('/full/md5', (_req, res) => serveFull(res))
  const err = await rejectsWith(materializeModel({ url, md5: WRONG_MD5 }, { cacheDir, maxBytes: 8 * MiB }), 'md5_mismatch')
  assert.ok(err.message.includes(MD5) && err.message.includes(WRONG_MD5), err.message)
  assert.deepEqual(readdirSync(cacheDir), [])
})

test('too large: by Content-Length before reading, and by counting a chunked body', async () => {
  const cacheDir = tempDir()
  const sized = route('/full/large', (_req, res) => serveFull(res))
  await rejectsWith(materializeModel({ url: sized, md5: MD5 }, { cacheDir, maxBytes: 2 * MiB }), 'too_large', /is 3\.0 MiB: the limit is 2\.0 MiB/)
  assert.deepEqual(readdirSync(cacheDir), [])
  assert.equal(hits('/full/large').length, 1, 'too large is not retried')

  const chunked = route('/chunked/large', async (_req, res) => await serveChunked(res))
  const err = await rejectsWith(materializeModel({ url: chunked }, { cacheDir, maxBytes: 2 * MiB }), 'too_large', /stopped at .* MiB: the limit is 2\.0 MiB/)
  assert.ok((err.details as { receivedBytes: number }).receivedBytes > 2 * MiB)
  assert.deepEqual(readdirSync(cacheDir), [])
  assert.equal(hits('/chunked/large').length, 1)
})

test('HTTP errors: 404 fails at once; 500 is retried up to the attempt limit', async () => {
  const cacheDir = tempDir()
  await rejectsWith(materializeModel({ url: `${base}/missing/one`, md5: MD5 }, { cacheDir, maxBytes: 8 * MiB }), 'http_status', /HTTP 404/)
  assert.equal(hits('/missing/one').length, 1, '4xx is not retried')

  const flaky = route('/flaky/one', (_req, res, hit) => {
    if (hit <= 2) res.writeHead(500).end('try later')
    else serveFull(res)
  })
  const got = await materializeModel({ url: flaky, md5: MD5 }, { cacheDir, maxBytes: 8 * MiB })
  assert.equal(got.md5, MD5)
  assert.equal(hits('/flaky/one').length, 3)

  const broken = route('/broken/one', (_req, res) => { res.writeHead(503).end() })
  await rejectsWith(materializeModel({ url: broken, md5: MD5 }, { cacheDir: tempDir(), maxBytes: 8 * MiB, attempts: 2 }), 'http_status', /after 2 attempts.*HTTP 503/)
  assert.equal(hits('/broken/one').length, 2)
  assert.deepEqual(readdirSync(cacheDir), [`${MD5}.bin`])
})

test('a disk error while writing is not retried as a network error', async () => {
  const cacheDir = tempDir()
  mkdirSync(join(cacheDir, `${MD5}.bin.part`)) // the .part cannot be opened for writing
  const url = route('/full/disk', (req, res) => serveRange(req, res))
  await assert.rejects(materializeModel({ url, md5: MD5 }, { cacheDir, maxBytes: 8 * MiB }), { code: 'EISDIR' })
  assert.equal(hits('/full/disk').length, 1)
})

test('a refused connection is a network error after every attempt', async () => {
  const probe = createServer()
  await new Promise<void>(resolve => probe.listen(0, '127.0.0.1', resolve))
  const port = (probe.address() as AddressInfo).port
  await new Promise<void>(resolve => probe.close(() => resolve()))
  await rejectsWith(materializeModel({ url: `http://127.0.0.1:${port}/m.onnx` }, { cacheDir: tempDir(), maxBytes: MiB, attempts: 2 }), 'network', /after 2 attempts/)
})

test('local files: path and file:// URL, right and wrong MD5, missing file, unsupported scheme', async () => {
  const dir = tempDir()
  const path = join(dir, 'model.onnx')
  writeFileSync(path, DATA)
  const opts = { cacheDir: join(dir, 'cache'), maxBytes: 8 * MiB }
  assert.deepEqual(await materializeModel({ url: path, md5: MD5 }, opts), { path, md5: MD5, sizeBytes: N, downloaded: false })
  assert.deepEqual(await materializeModel({ url: pathToFileURL(path).href, md5: MD5.toUpperCase() }, opts), { path, md5: MD5, sizeBytes: N, downloaded: false })
  assert.deepEqual(await materializeModel({ url: path }, opts), { path, md5: MD5, sizeBytes: N, downloaded: false })
  assert.equal(await md5File(path), MD5)
  assert.equal(existsSync(opts.cacheDir), false, 'local files are never copied')

  const bad = await rejectsWith(materializeModel({ url: path, md5: WRONG_MD5 }, opts), 'md5_mismatch')
  assert.equal(bad.message, `model file ${path} has MD5 ${MD5} but the component expects ${WRONG_MD5}`)
  await rejectsWith(materializeModel({ url: pathToFileURL(path).href, md5: WRONG_MD5 }, opts), 'md5_mismatch')
  await rejectsWith(materializeModel({ url: path }, { ...opts, maxBytes: MiB }), 'too_large', /the limit is 1\.0 MiB/)
  await rejectsWith(materializeModel({ url: join(dir, 'nope.onnx') }, opts), 'not_found', /does not exist/)
  await rejectsWith(materializeModel({ url: pathToFileURL(join(dir, 'nope.onnx')).href }, opts), 'not_found')
  // s3:// is a source now (test/model-source-s3.test.ts); other schemes are refused by name
  await rejectsWith(materializeModel({ url: 'ftp://example.org/model.onnx' }, opts), 'unsupported_scheme', /"ftp"/)
  await assert.rejects(materializeModel({ url: path, md5: '../../etc/passwd' }, opts), { name: 'ValidationError' })
})

test('abort mid-download keeps the .part, and a later call resumes from it', async () => {
  const cacheDir = tempDir()
  const partPath = join(cacheDir, `${MD5}.bin.part`)
  const url = route('/stall/one', (req, res, hit) => {
    if (hit === 1) stallAfterHalf(res)
    else serveRange(req, res)
  }, partPath)
  const ac = new AbortController()
  const pending = materializeModel({ url, md5: MD5 }, { cacheDir, maxBytes: 8 * MiB, signal: ac.signal })
  await until(() => existsSync(partPath) && statSync(partPath).size === HALF, 'half the body on disk', 10_000, 10)
  ac.abort()
  const err = await rejectsWith(pending, 'aborted')
  assert.equal(err.status, 499)
  assert.equal(statSync(partPath).size, HALF, 'the .part is kept for a later resume')
  assert.equal(hits('/stall/one').length, 1, 'an abort is not retried')

  const got = await materializeModel({ url, md5: MD5 }, { cacheDir, maxBytes: 8 * MiB })
  assert.equal(got.md5, MD5)
  assert.ok(readFileSync(got.path).equals(DATA))
  const reqs = hits('/stall/one')
  assert.equal(reqs.length, 2)
  assert.equal(reqs[1].range, `bytes=${HALF}-`)
  assert.deepEqual(readdirSync(cacheDir), [`${MD5}.bin`])
})

test('an aborted signal stops hashing too', async () => {
  const dir = tempDir()
  const path = join(dir, 'model.onnx')
  writeFileSync(path, DATA)
  await rejectsWith(md5File(path, AbortSignal.abort()), 'aborted')
  await rejectsWith(materializeModel({ url: path }, { cacheDir: dir, maxBytes: 8 * MiB, signal: AbortSignal.abort() }), 'aborted')
})
