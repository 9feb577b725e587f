/**
 * The splitter SDK's parts on their own: Context from the environment, FileDownloader, LayerHash,
 * S3Manager (against s3rver, an S3-compatible server from npm, running in this process on loopback).
 * The lifecycle with a real agent is in split-tasks.test.ts.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import S3rver from 's3rver'
import { Context, ContextError, FileDownloader, LayerHash, S3Manager } from '../agent/splitter/sdk/index.ts'
import { tempDir } from './helpers/agents.ts'

const ENV = {
  TASK_ID: 'task-1',
  TASK_DATA: JSON.stringify({ model_name: 'gpt2', model_download_url: 'https://example.com/gpt2.onnx', world_size: 4, model_split_config: { a: 1 } }),
  TASK_STATUS_UPDATE_URL: 'http://127.0.0.1:7700/tasks/task-1',
  MODEL_LAYERS_REGISTRY_URL: 'http://127.0.0.1:7700',
  BLOCK_DB_URL: 'http://127.0.0.1:7700'
}

describe('Context.fromEnv', () => {
  test('reads the seed\'s variables, the token and the output directory', () => {
    const c = Context.fromEnv({ ...ENV, TASK_TOKEN: 'tok', OUTPUT_DIR: '/tmp/out' })
    assert.equal(c.taskId, 'task-1')
    assert.equal(c.taskData.world_size, 4)
    assert.deepEqual(c.taskData.model_split_config, { a: 1 })
    assert.equal(c.taskStatusUpdateUrl, ENV.TASK_STATUS_UPDATE_URL)
    assert.equal(c.modelLayersRegistryUrl, ENV.MODEL_LAYERS_REGISTRY_URL)
    assert.equal(c.blockDbUrl, ENV.BLOCK_DB_URL)
    assert.equal(c.outputDir, '/tmp/out')
    assert.equal(c.headers().authorization, 'Bearer tok')
    assert.equal(Context.fromEnv(ENV).outputDir, '/mnt/splits')
    assert.equal(Context.fromEnv(ENV).headers().authorization, undefined)
  })

  test('a missing variable or bad TASK_DATA → ContextError naming it', () => {
    for (const name of Object.keys(ENV)) {
      const env: Record<string, string> = { ...ENV }
      delete env[name]
      assert.throws(() => Context.fromEnv(env), (err: Error) => err instanceof ContextError && err.message.includes(name))
    }
    assert.throws(() => Context.fromEnv({ ...ENV, TASK_DATA: '{oops' }), /TASK_DATA is not JSON/)
    assert.throws(() => Context.fromEnv({ ...ENV, TASK_DATA: '42' }), /TASK_DATA must be a JSON object/)
  })
})

describe('FileDownloader and LayerHash', () => {
  const dir = tempDir('bm-sdk-')
  const body = randomBytes(9 * 1024 * 1024 + 7)
  let server: http.Server
  let base: string

  before(async () => {
    server = http.createServer((req, res) => {
      if (req.url === '/m.bin') {
        res.writeHead(200, { 'content-length': String(body.length) })
        res.end(body)
      } else if (req.url === '/cut') {
        res.writeHead(200, { 'content-length': String(body.length) })
        res.write(body.subarray(0, 1000))
        setTimeout(() => { res.destroy() }, 20)
      } else res.writeHead(404).end()
    })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })
  after(() => { server.close() })

  test('downloads over HTTP into directories it creates; the MD5 matches', async () => {
    const d = new FileDownloader()
    const target = join(dir, 'a', 'b', 'c', 'm.bin')
    assert.equal(await d.download(`${base}/m.bin`, target), true, d.lastError ?? '')
    assert.equal(d.lastError, null)
    assert.ok(readFileSync(target).equals(body))
    assert.equal(await new LayerHash().getHash(target), createHash('md5').update(body).digest('hex'))
  })

  test('copies local paths and file:// URLs', async () => {
    const src = join(dir, 'src.bin')
    writeFileSync(src, 'hello layers')
    const d = new FileDownloader()
    assert.equal(await d.download(src, join(dir, 'x', 'copy1.bin')), true)
    assert.equal(await d.download(pathToFileURL(src).toString(), join(dir, 'y', 'copy2.bin')), true)
    assert.equal(readFileSync(join(dir, 'y', 'copy2.bin'), 'utf8'), 'hello layers')
  })

  test('failures return false with the reason: 404, a cut connection, an unreachable host, a missing file', async () => {
    const d = new FileDownloader()
    assert.equal(await d.download(`${base}/nope`, join(dir, 'nope.bin')), false)
    assert.match(d.lastError ?? '', /\/nope failed: HTTP 404/)
    assert.equal(await d.download(`${base}/cut`, join(dir, 'cut.bin')), false)
    assert.match(d.lastError ?? '', /\/cut failed/)
    assert.equal(await d.download('http://127.0.0.1:1/x', join(dir, 'x.bin')), false)
    assert.match(d.lastError ?? '', /127\.0\.0\.1:1\/x failed/)
    assert.equal(await d.download(join(dir, 'missing.bin'), join(dir, 'm2.bin')), false)
    assert.match(d.lastError ?? '', /ENOENT/)
  })

  test('LayerHash: a missing path or a directory → null', async () => {
    assert.equal(await new LayerHash().getHash(join(dir, 'missing')), null)
    assert.equal(await new LayerHash().getHash(dir), null)
    const empty = join(dir, 'empty')
    writeFileSync(empty, '')
    assert.equal(await new LayerHash().getHash(empty), 'd41d8cd98f00b204e9800998ecf8427e')
  })
})

describe('S3Manager against an S3-compatible server (s3rver, local)', () => {
  const dir = tempDir('bm-s3-')
  let s3: S3rver
  let endpoint: string

  before(async () => {
    mkdirSync(join(dir, 'store'))
    s3 = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: join(dir, 'store'), configureBuckets: [{ name: 'layers', configs: [] }] })
    const addr = await s3.run()
    endpoint = `http://127.0.0.1:${addr.port}`
  })
  after(async () => { await s3.close() })

  test('uploads a file and downloads it back, byte for byte, into directories it creates', async () => {
    const m = new S3Manager('S3RVER', 'S3RVER', 'us-east-1', { endpoint })
    const file = join(dir, 'stage-0.onnx')
    const bytes = randomBytes(2 * 1024 * 1024 + 11)
    writeFileSync(file, bytes)
    assert.equal(await m.uploadFile(file, 'layers', 'splits/stage-0.onnx'), true, m.lastError ?? '')
    const back = join(dir, 'down', 'again', 'stage-0.onnx')
    assert.equal(await m.downloadFile('layers', 'splits/stage-0.onnx', back), true, m.lastError ?? '')
    assert.ok(readFileSync(back).equals(bytes))
  })

  test('a missing bucket, a missing key and a missing file → false with the reason', async () => {
    const m = new S3Manager('S3RVER', 'S3RVER', 'us-east-1', { endpoint })
    const file = join(dir, 'f.bin')
    writeFileSync(file, 'x')
    assert.equal(await m.uploadFile(file, 'no-such-bucket', 'k'), false)
    assert.match(m.lastError ?? '', /s3:\/\/no-such-bucket\/k failed: .*bucket/i)
    assert.equal(await m.downloadFile('layers', 'missing/key', join(dir, 'never.bin')), false)
    assert.match(m.lastError ?? '', /s3:\/\/layers\/missing\/key failed: .*key/i)
    assert.equal(existsSync(join(dir, 'never.bin')), false)
    assert.equal(await m.uploadFile(join(dir, 'absent.bin'), 'layers', 'k'), false)
    assert.match(m.lastError ?? '', /ENOENT/)
  })
})
