/**
 * Model files from S3 (`s3://BUCKET/KEY`, agent/model/s3.ts) against s3rver, an S3-compatible server from
 * npm run in this process on loopback (no real S3 is reachable here): a download MD5-checked and cached, a
 * second call served from the cache, a part left by an interrupted download resumed with a Range request,
 * and a missing key, a wrong MD5 and a size over the limit refused with their reasons.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import S3rver from 's3rver'
import { PutObjectCommand } from '@aws-sdk/client-s3'
import { cachePathFor, materializeModel } from '../agent/model/source.ts'
import { s3ClientFromEnv } from '../agent/model/s3.ts'
import { tempDir } from './helpers/agents.ts'
import { rejectsWith } from './helpers/rejects.ts'

describe('model files from s3:// (s3rver, local)', () => {
  const dir = tempDir('bm-s3-src-')
  let s3: S3rver
  const saved = { ...process.env }
  const bytes = randomBytes(3 * 1024 * 1024 + 17)
  const md5 = createHash('md5').update(bytes).digest('hex')

  before(async () => {
    mkdirSync(join(dir, 'store'))
    s3 = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: join(dir, 'store'), configureBuckets: [{ name: 'models', configs: [] }] })
    const addr = await s3.run()
    Object.assign(process.env, { AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${addr.port}`, AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1' })
    await s3ClientFromEnv().send(new PutObjectCommand({ Bucket: 'models', Key: 'llm/model.onnx', Body: bytes }))
  })
  after(async () => {
    await s3.close()
    for (const k of ['AWS_ENDPOINT_URL_S3', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_REGION']) {
      if (saved[k] === undefined) delete process.env[k]
      else process.env[k] = saved[k]
    }
  })

  test('downloads, checks the MD5, caches; a second call is a look-up', async () => {
    const cacheDir = join(dir, 'cache1')
    const progress: number[] = []
    const first = await materializeModel({ url: 's3://models/llm/model.onnx', md5 }, { cacheDir, maxBytes: 64 << 20, onProgress: p => { progress.push(p.receivedBytes) } })
    assert.equal(first.downloaded, true)
    assert.equal(first.md5, md5)
    assert.equal(first.sizeBytes, bytes.length)
    assert.ok(readFileSync(first.path).equals(bytes))
    assert.equal(progress.at(-1), bytes.length)
    const again = await materializeModel({ url: 's3://models/llm/model.onnx', md5 }, { cacheDir, maxBytes: 64 << 20 })
    assert.equal(again.downloaded, false)
    assert.equal(again.path, first.path)
  })

  test('a part left by an interrupted download is resumed, not fetched again from the start', async () => {
    const cacheDir = join(dir, 'cache2')
    mkdirSync(cacheDir)
    const finalPath = cachePathFor({ url: 's3://models/llm/model.onnx', md5 }, cacheDir)
    const half = 1024 * 1024 + 3
    writeFileSync(`${finalPath}.part`, bytes.subarray(0, half))
    const seen: number[] = []
    const r = await materializeModel({ url: 's3://models/llm/model.onnx', md5 }, { cacheDir, maxBytes: 64 << 20, onProgress: p => { seen.push(p.receivedBytes) } })
    assert.equal(r.md5, md5)
    assert.ok(readFileSync(r.path).equals(bytes))
    assert.ok(seen.every(n => n >= half), `progress starts from the part already there (${seen.slice(0, 3).join(', ')}…)`)
    assert.equal(existsSync(`${finalPath}.part`), false)
  })

  test('a missing key, a wrong MD5 and a file over the size limit are refused with their reasons', async () => {
    await rejectsWith(materializeModel({ url: 's3://models/llm/nope.onnx' }, { cacheDir: join(dir, 'c3'), maxBytes: 64 << 20 }), 'not_found', /does not exist/)
    const wrong = 'f'.repeat(32)
    await rejectsWith(materializeModel({ url: 's3://models/llm/model.onnx', md5: wrong }, { cacheDir: join(dir, 'c4'), maxBytes: 64 << 20 }), 'md5_mismatch', /MD5/)
    await rejectsWith(materializeModel({ url: 's3://models/llm/model.onnx', md5 }, { cacheDir: join(dir, 'c5'), maxBytes: 1 << 20 }), 'too_large', /limit|over/)
    await rejectsWith(materializeModel({ url: 's3://x/' }, { cacheDir: join(dir, 'c6'), maxBytes: 1 << 20 }), 'not_found', /not an S3 URL/)
  })
})
