/**
 * hf:// models. The Hugging Face hub cannot be reached from here, so these tests run a small FAKE hub that
 * speaks the hub's real HTTP API (the paths and headers huggingface_hub uses): GET /api/models/{repo}/revision/{rev},
 * GET /api/models/{repo}/tree/{rev}?recursive=true (paged with a Link header), and GET /{repo}/resolve/{rev}/{path},
 * which answers small files itself and LFS files with a 302 to a second server, the "CDN", carrying X-Repo-Commit,
 * X-Linked-Etag (the SHA-256) and X-Linked-Size. The hub listens as 127.0.0.1 and the CDN is addressed as
 * localhost, a different host, so the rule "the token never leaves the hub" is exercised.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { createServer } from 'node:http'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { downloadFile, ggufQuant, listFiles, parseHubUri, pickHubFiles, resolveHubModel } from '../agent/model/hub.ts'
import type { HubListing } from '../agent/model/hub.ts'
import { ModelSourceError } from '../agent/model/source.ts'
import type { ModelSourceReason } from '../agent/model/source.ts'
import { tempDir, until } from './helpers/agents.ts'
import { rejectsWith } from './helpers/rejects.ts'

const TOKEN = 'hf_testtoken'
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')
const sha1 = (s: string): string => createHash('sha1').update(s).digest('hex')
/** Distinct bytes per file name, so a mix-up shows. */
const bytes = (name: string, n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + name.length * 7 + name.charCodeAt(i % name.length)) & 0xff))

interface FakeFile { data: Buffer, lfs: boolean }
interface FakeRepo { commit: string, files: Map<string, FakeFile>, private?: boolean, lie?: string, cut?: string }
const repos = new Map<string, FakeRepo>()

function repo (name: string, files: Record<string, number | string>, extra: Partial<FakeRepo> = {}): FakeRepo {
  const r: FakeRepo = { commit: sha1(name), files: new Map(), ...extra }
  for (const [path, v] of Object.entries(files)) {
    r.files.set(path, typeof v === 'string' ? { data: Buffer.from(v), lfs: false } : { data: bytes(path, v), lfs: true })
  }
  repos.set(name, r)
  return r
}

const GGUF = repo('acme/tiny-GGUF', { 'README.md': '# tiny', 'tiny-Q2_K.gguf': 900, 'tiny-Q4_K_M.gguf': 1500, 'tiny-Q8_0.gguf': 2600, 'tiny-F16.gguf': 4000, 'mmproj-tiny-f16.gguf': 300 })
const ONNX = repo('acme/tiny-onnx', {
  'README.md': '# onnx',
  'config.json': '{"model_type":"llama"}',
  'generation_config.json': '{"max_length":64}',
  'tokenizer.json': '{"version":"1.0"}',
  'tokenizer_config.json': '{"bos_token":"<s>"}',
  'special_tokens_map.json': '{}',
  'onnx/model.onnx': 700,
  'onnx/model.onnx_data': 5000,
  'onnx/model_fp16.onnx': 650,
  'onnx/model_fp16.onnx_data': 2500,
  'onnx/model_q4.onnx': 1200,
  'onnx/model_quantized.onnx': 1400
})
const BIG = repo('acme/big-GGUF', { 'big-Q4_0.gguf': 512 * 1024 }, { cut: 'big-Q4_0.gguf' })
repo('acme/bad-GGUF', { 'bad-Q4_0.gguf': 2000 }, { lie: 'bad-Q4_0.gguf' })
repo('acme/private', { 'secret-Q4_K_M.gguf': 1000 }, { private: true })

interface Seen { url: string, auth: string | undefined, range: string | undefined }
const hubSeen: Seen[] = []
const cdnSeen: Seen[] = []
let hub: Server
let cdn: Server
let HUB = ''
let CDN = ''
let flaky = 0 // that many revision calls answer 503 first
let cutDone = false

function json (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body))
}

function serveBytes (req: IncomingMessage, res: ServerResponse, data: Buffer, headers: Record<string, string | number>): void {
  const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '')
  const start = m === null ? 0 : Number(m[1])
  if (m !== null) res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${data.length - 1}/${data.length}`, 'content-length': data.length - start })
  else res.writeHead(200, { ...headers, 'content-length': data.length })
  res.end(data.subarray(start))
}

function hubHandler (req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? '/', HUB)
  hubSeen.push({ url: url.pathname + url.search, auth: req.headers.authorization, range: req.headers.range })
  const api = /^\/api\/models\/([^/]+\/[^/]+)\/(revision|tree)\/([^/]+)$/.exec(url.pathname)
  const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname)
  const name = decodeURIComponent(api?.[1] ?? resolve?.[1] ?? '')
  const r = repos.get(name)
  if (r === undefined) { json(res, 404, { error: 'Repository not found' }, { 'x-error-code': 'RepoNotFound' }); return }
  if (r.private === true && req.headers.authorization !== `Bearer ${TOKEN}`) { json(res, 401, { error: 'Invalid credentials' }); return }
  const rev = decodeURIComponent(api?.[3] ?? resolve?.[2] ?? '')
  if (rev !== 'main' && rev !== r.commit) { json(res, 404, { error: 'Revision not found' }, { 'x-error-code': 'RevisionNotFound' }); return }
  const paths = [...r.files.keys()].sort()
  if (api?.[2] === 'revision') {
    if (flaky > 0) { flaky--; json(res, 503, { error: 'busy' }); return }
    json(res, 200, { id: name, sha: r.commit, siblings: paths.map(rfilename => ({ rfilename })) })
  } else if (api?.[2] === 'tree') {
    const dirs = [...new Set(paths.filter(p => p.includes('/')).map(p => p.slice(0, p.lastIndexOf('/'))))]
    const entries = [...dirs.map(path => ({ type: 'directory', oid: sha1(path), size: 0, path })), ...paths.map(path => {
      const f = r.files.get(path) as FakeFile
      return { type: 'file', oid: sha1(path), size: f.lfs ? 133 : f.data.length, path, ...(f.lfs ? { lfs: { oid: sha256(f.data), size: f.data.length, pointerSize: 133 } } : {}) }
    })]
    const cursor = Number(url.searchParams.get('cursor') ?? 0)
    const next = cursor + 4 < entries.length ? { link: `<${HUB}${url.pathname}?recursive=true&cursor=${cursor + 4}>; rel="next"` } : undefined
    json(res, 200, entries.slice(cursor, cursor + 4), next)
  } else if (resolve !== null) {
    const path = resolve[3].split('/').map(decodeURIComponent).join('/')
    const f = r.files.get(path)
    if (f === undefined) { json(res, 404, { error: 'Entry not found' }, { 'x-error-code': 'EntryNotFound' }); return }
    const head = { 'x-repo-commit': r.commit, etag: `"${sha1(path)}"` }
    if (!f.lfs) { serveBytes(req, res, f.data, head); return }
    const claimed = r.lie === path ? sha256(Buffer.from('something else')) : sha256(f.data)
    res.writeHead(302, { ...head, etag: `"${claimed}"`, 'x-linked-etag': `"${claimed}"`, 'x-linked-size': String(f.data.length), location: `${CDN}/repos/${name}/${sha256(f.data)}?X-Amz-Signature=abc` }).end()
  } else json(res, 404, { error: 'no route' })
}

function cdnHandler (req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? '/', CDN)
  cdnSeen.push({ url: url.pathname + url.search, auth: req.headers.authorization, range: req.headers.range })
  const m = /^\/repos\/([^/]+\/[^/]+)\/([0-9a-f]{64})$/.exec(url.pathname)
  const r = repos.get(m?.[1] ?? '')
  const [path, f] = [...(r?.files ?? [])].find(([, f]) => sha256(f.data) === m?.[2]) ?? []
  if (r === undefined || f === undefined || url.searchParams.get('X-Amz-Signature') !== 'abc') { res.writeHead(403).end('AccessDenied'); return }
  if (r.cut === path && !cutDone) {
    // the first transfer breaks half way, once the client has that half on disk
    cutDone = true
    const half = f.data.length / 2
    res.writeHead(200, { 'content-length': f.data.length, etag: `"${m?.[2]}"` })
    res.write(f.data.subarray(0, half))
    const part = join(resumeDir, 'acme--big-GGUF', r.commit, `${path}.part`)
    until(() => existsSync(part) && statSync(part).size === half, 'half the file on disk', 10_000, 5).catch(() => {}).finally(() => res.socket?.destroy())
    return
  }
  serveBytes(req, res, f.data, { etag: `"${m?.[2]}"` })
}
const resumeDir = tempDir('bm-hub-resume-')

before(async () => {
  hub = createServer(hubHandler)
  cdn = createServer(cdnHandler)
  await new Promise<void>(resolve => hub.listen(0, '127.0.0.1', resolve))
  await new Promise<void>(resolve => cdn.listen(0, '127.0.0.1', resolve))
  HUB = `http://127.0.0.1:${(hub.address() as AddressInfo).port}`
  CDN = `http://localhost:${(cdn.address() as AddressInfo).port}`
})

after(async () => {
  for (const s of [hub, cdn]) {
    s.closeAllConnections()
    await new Promise<void>(resolve => s.close(() => resolve()))
  }
})

const base = (): { endpoint: string, token: string, offline: boolean } => ({ endpoint: HUB, token: '', offline: false })


function filesUnder (dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir, { recursive: true, withFileTypes: true }).filter(e => e.isFile()).map(e => join(e.parentPath, e.name).slice(dir.length + 1)).sort() : []
}

test('hf:// URIs parse; bad ones are refused with a clear message', () => {
  assert.deepEqual(parseHubUri('hf://acme/tiny-GGUF'), { repo: 'acme/tiny-GGUF', revision: 'main' })
  assert.deepEqual(parseHubUri('hf://acme/tiny-GGUF@v1.0/sub/tiny-Q4_0.gguf'), { repo: 'acme/tiny-GGUF', revision: 'v1.0', path: 'sub/tiny-Q4_0.gguf' })
  assert.deepEqual(parseHubUri('hf://acme/tiny@refs%2Fpr%2F3/'), { repo: 'acme/tiny', revision: 'refs/pr/3' })
  for (const [bad, msg] of [['https://huggingface.co/acme/tiny', /write hf:\/\/ORG\/REPO/], ['hf://acme', /write hf:/], ['hf://-acme/tiny', /organisation "-acme"/],
    ['hf://acme/ti ny', /repo name/], ['hf://acme/tiny@', /revision after '@' is empty/], ['hf://acme/tiny/../x', /not a plain relative path/], ['hf://acme/tiny?x=1', /query/]] as const) {
    assert.throws(() => parseHubUri(bad), (err: Error) => err.name === 'ValidationError' && msg.test(err.message), bad)
  }
  assert.equal(ggufQuant('Llama-3.2-1B-Instruct-Q4_K_M.gguf'), 'Q4_K_M')
  assert.equal(ggufQuant('qwen2.5-0.5b-instruct-iq3_xs-00001-of-00002.gguf'), 'IQ3_XS')
  assert.equal(ggufQuant('tinyllama-1.1b-chat-v1.0.F16.gguf'), 'F16')
})

test('variant choice without Q4_K_M/Q4_0/Q4_1/Q8_0 takes the smallest; split GGUFs come whole', () => {
  const listing: HubListing = {
    repo: 'a/b', revision: 'main', commit: sha1('x'),
    files: [{ path: 'm-Q6_K.gguf', size: 60 }, { path: 'm-Q5_K_S.gguf', size: 50 }, { path: 'm-F16.gguf', size: 160 },
      { path: 'big/m-Q4_K_M-00002-of-00002.gguf', size: 300 }, { path: 'big/m-Q4_K_M-00001-of-00002.gguf', size: 300 }]
  }
  assert.equal(pickHubFiles({ ...listing, files: listing.files.slice(0, 3) }).model.path, 'm-Q5_K_S.gguf')
  const split = pickHubFiles(listing)
  assert.deepEqual([split.variant, split.model.path, split.extras.map(f => f.path)], ['Q4_K_M', 'big/m-Q4_K_M-00001-of-00002.gguf', ['big/m-Q4_K_M-00002-of-00002.gguf']])
  assert.equal(pickHubFiles(listing, { variant: 'q5_k' }).variant, 'Q5_K_S', 'a unique partial match is enough')
})

test('listFiles: the commit, sizes and LFS SHA-256s over a paged tree; the token goes to the hub', async () => {
  const got = await listFiles('acme/tiny-onnx', 'main', { endpoint: HUB, token: TOKEN })
  assert.equal(got.commit, ONNX.commit)
  assert.equal(got.files.length, ONNX.files.size)
  assert.deepEqual(got.files.find(f => f.path === 'onnx/model.onnx_data'), { path: 'onnx/model.onnx_data', size: 5000, sha256: sha256(ONNX.files.get('onnx/model.onnx_data')?.data as Buffer) })
  assert.deepEqual(got.files.find(f => f.path === 'config.json'), { path: 'config.json', size: 22 })
  assert.ok(hubSeen.filter(s => s.url.includes('/tree/')).length >= 4, 'the tree came in pages')
  assert.ok(hubSeen.every(s => s.auth === `Bearer ${TOKEN}`))
})

test('a GGUF repo: Q4_K_M by default, another variant on request, an unknown variant lists the options; the CDN never sees the token', async () => {
  const destDir = tempDir('bm-hub-')
  const [hubBefore, cdnBefore] = [hubSeen.length, cdnSeen.length]
  const progress: string[] = []
  const got = await resolveHubModel('hf://acme/tiny-GGUF', { ...base(), token: TOKEN, destDir, onProgress: p => progress.push(`${p.file}:${p.receivedBytes}`) })
  const dir = join(destDir, 'acme--tiny-GGUF', GGUF.commit)
  const data = GGUF.files.get('tiny-Q4_K_M.gguf')?.data as Buffer
  assert.deepEqual(got, {
    kind: 'gguf', repo: 'acme/tiny-GGUF', revision: 'main', commit: GGUF.commit, variant: 'Q4_K_M', dir, modelFile: 'tiny-Q4_K_M.gguf',
    files: { model: join(dir, 'tiny-Q4_K_M.gguf') }, sha256: { model: sha256(data) }, sizeBytes: data.length, downloaded: true
  })
  assert.ok(readFileSync(got.files.model).equals(data))
  assert.equal(progress.at(-1), `tiny-Q4_K_M.gguf:${data.length}`)
  assert.equal(readFileSync(join(destDir, 'acme--tiny-GGUF', 'refs', 'main'), 'utf8'), GGUF.commit)
  const hubReqs = hubSeen.slice(hubBefore)
  const cdnReqs = cdnSeen.slice(cdnBefore)
  assert.ok(hubReqs.some(s => s.url.startsWith('/acme/tiny-GGUF/resolve/')), 'the file was resolved on the hub')
  assert.ok(hubReqs.every(s => s.auth === `Bearer ${TOKEN}`), 'the hub saw the token on every request')
  assert.equal(cdnReqs.length, 1)
  assert.equal(cdnReqs[0].auth, undefined, 'the CDN never saw the token')

  const q8 = await resolveHubModel('hf://acme/tiny-GGUF', { ...base(), destDir, variant: 'q8_0' })
  assert.equal(q8.variant, 'Q8_0')
  assert.ok(readFileSync(q8.files.model).equals(GGUF.files.get('tiny-Q8_0.gguf')?.data as Buffer))
  const byPath = await resolveHubModel('hf://acme/tiny-GGUF/tiny-F16.gguf', { ...base(), destDir })
  assert.equal(byPath.variant, 'F16')

  const err = await rejectsWith(resolveHubModel('hf://acme/tiny-GGUF', { ...base(), destDir, variant: 'Q5_K_M' }), 'not_found', /no variant "Q5_K_M": available Q2_K, Q4_K_M, Q8_0, F16/)
  assert.deepEqual((err.details as { available: string[] }).available, ['Q2_K', 'Q4_K_M', 'Q8_0', 'F16'])
  assert.deepEqual(filesUnder(dir), ['tiny-F16.gguf', 'tiny-Q4_K_M.gguf', 'tiny-Q8_0.gguf'])

  // a second call online asks only where main points; offline, nothing at all
  const [h2, c2] = [hubSeen.length, cdnSeen.length]
  const again = await resolveHubModel('hf://acme/tiny-GGUF', { ...base(), destDir })
  assert.deepEqual(again, { ...got, downloaded: false })
  assert.deepEqual(hubSeen.slice(h2).map(s => s.url), ['/api/models/acme/tiny-GGUF/revision/main'])
  const offline = await resolveHubModel('hf://acme/tiny-GGUF', { ...base(), destDir, offline: true, variant: 'Q8_0' })
  assert.deepEqual(offline, { ...q8, downloaded: false })
  assert.equal(hubSeen.length, h2 + 1, 'offline: no request to the hub')
  assert.equal(cdnSeen.length, c2, 'no request to the CDN either')
  await rejectsWith(resolveHubModel('hf://acme/tiny-GGUF', { ...base(), destDir, offline: true, variant: 'Q2_K' }), 'not_found', /offline/)

  const readme = await downloadFile('acme/tiny-GGUF', 'main', 'README.md', destDir, base())
  assert.deepEqual(readme, { path: join(dir, 'README.md'), commit: GGUF.commit, sizeBytes: 6, sha256: sha256(Buffer.from('# tiny')), downloaded: true })
})

test('an ONNX export: fp32 by default with its external data and side files; fp16, int8; unknown dtype lists the options', async () => {
  const destDir = tempDir('bm-hub-')
  const got = await resolveHubModel(`hf://acme/tiny-onnx@${ONNX.commit}`, { ...base(), destDir })
  const dir = join(destDir, 'acme--tiny-onnx', ONNX.commit)
  assert.equal(got.kind, 'onnx')
  assert.equal(got.variant, 'fp32')
  assert.equal(got.modelFile, 'onnx/model.onnx')
  const side = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']
  assert.deepEqual(Object.keys(got.files), ['model', 'onnx/model.onnx_data', ...side])
  assert.deepEqual(Object.keys(got.sha256), Object.keys(got.files))
  for (const [key, path] of Object.entries(got.files)) {
    const data = ONNX.files.get(key === 'model' ? 'onnx/model.onnx' : key)?.data as Buffer
    assert.equal(path, join(dir, key === 'model' ? 'onnx/model.onnx' : key))
    assert.ok(readFileSync(path).equals(data), key)
    assert.equal(got.sha256[key], sha256(data), key)
  }
  assert.equal(existsSync(join(destDir, 'acme--tiny-onnx', 'refs')), false, 'a commit needs no ref')

  const fp16 = await resolveHubModel('hf://acme/tiny-onnx', { ...base(), destDir, variant: 'FP16' })
  assert.deepEqual(Object.keys(fp16.files).slice(0, 2), ['model', 'onnx/model_fp16.onnx_data'])
  assert.equal(fp16.files.model, join(dir, 'onnx/model_fp16.onnx'))
  assert.equal((await resolveHubModel('hf://acme/tiny-onnx', { ...base(), destDir, variant: 'int8' })).modelFile, 'onnx/model_quantized.onnx')
  assert.equal((await resolveHubModel('hf://acme/tiny-onnx', { ...base(), destDir, variant: 'q4' })).modelFile, 'onnx/model_q4.onnx')
  await rejectsWith(resolveHubModel('hf://acme/tiny-onnx', { ...base(), destDir, variant: 'bf16' }), 'not_found', /no variant "bf16": available fp32, fp16, q4, quantized/)
  await assert.rejects(resolveHubModel('hf://acme/tiny-onnx/README.md', { ...base(), destDir }), { name: 'ValidationError', message: /neither a \.gguf nor an \.onnx/ })
})

test('a download cut half way resumes with a Range request through the hub again', async () => {
  const data = BIG.files.get('big-Q4_0.gguf')?.data as Buffer
  const cdnBefore = cdnSeen.length
  const got = await resolveHubModel('hf://acme/big-GGUF', { ...base(), destDir: resumeDir })
  assert.ok(readFileSync(got.files.model).equals(data))
  assert.equal(got.sha256.model, sha256(data))
  const reqs = cdnSeen.slice(cdnBefore)
  assert.deepEqual(reqs.map(s => s.range), [undefined, `bytes=${data.length / 2}-`])
  assert.deepEqual(filesUnder(join(resumeDir, 'acme--big-GGUF', BIG.commit)), ['big-Q4_0.gguf'], 'no .part left')
})

test('an X-Linked-Etag that does not match the bytes: sha256_mismatch and nothing left on disk', async () => {
  const destDir = tempDir('bm-hub-')
  const err = await rejectsWith(resolveHubModel('hf://acme/bad-GGUF', { ...base(), destDir }), 'sha256_mismatch', /X-Linked-Etag/)
  assert.match(err.message, /bad-Q4_0\.gguf/)
  assert.deepEqual(filesUnder(join(destDir, 'acme--bad-GGUF')).filter(p => !p.startsWith('refs') && !p.startsWith('trees')), [])
})

test('HTTP errors: 401 says to set HF_TOKEN; 404 for a repo, a revision or a file; 5xx is retried', async () => {
  const destDir = tempDir('bm-hub-')
  const denied = await rejectsWith(resolveHubModel('hf://acme/private', { ...base(), destDir }), 'http_status', /private or gated: set HF_TOKEN/)
  assert.equal((denied.details as { status: number }).status, 401)
  await rejectsWith(resolveHubModel('hf://acme/private', { ...base(), destDir, token: 'hf_wrong' }), 'http_status', /token in HF_TOKEN is not accepted/)
  const saved = process.env.HF_TOKEN
  process.env.HF_TOKEN = TOKEN
  try {
    const ok = await resolveHubModel('hf://acme/private', { endpoint: HUB, destDir, offline: false })
    assert.equal(ok.variant, 'Q4_K_M')
  } finally {
    if (saved === undefined) delete process.env.HF_TOKEN
    else process.env.HF_TOKEN = saved
  }

  await rejectsWith(resolveHubModel('hf://acme/nothing-here', { ...base(), destDir }), 'not_found', /no model repo acme\/nothing-here/)
  await rejectsWith(resolveHubModel('hf://acme/tiny-GGUF@v9', { ...base(), destDir }), 'not_found', /has no revision "v9"/)
  await rejectsWith(downloadFile('acme/tiny-GGUF', 'main', 'nope.gguf', destDir, base()), 'not_found', /no such file in acme\/tiny-GGUF/)

  flaky = 2
  const before = hubSeen.length
  const listing = await listFiles('acme/tiny-GGUF', 'main', { endpoint: HUB, token: '' })
  assert.equal(listing.commit, GGUF.commit)
  assert.equal(hubSeen.slice(before).filter(s => s.url.endsWith('/revision/main')).length, 3, 'two 503s, then the answer')
})
