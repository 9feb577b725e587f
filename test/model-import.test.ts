/**
 * `model add` sources end to end, in process (importModel), on files the test lays out: a Hugging Face
 * ONNX export directory (the optimum / transformers.js layout), an Ollama store, and hf:// against a small
 * fake hub that speaks the hub's real HTTP paths (the hub cannot be reached from here; test/model-hub.test.ts
 * covers the hub client itself in depth). Each yields a component whose model and tokenizer serve.
 */
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { importModel } from '../agent/model/import.ts'
import { convertGguf } from '../agent/model/gguf/convert.ts'
import { TokenizerError, loadTokenizerBundle } from '../agent/model/tokenizers/bundle.ts'
import { ComponentSpecSchema } from '../agent/registry/components.ts'
import { MEDIA_MODEL } from '../agent/model/ollama.ts'
import { tinyLlama, writeExportSideFiles } from './helpers/tiny-gguf.ts'
import { tempDir } from './helpers/agents.ts'

const dir = tempDir('bm-import-')
after(() => { if (process.env.BM_KEEP_TEST_DIRS !== "1") rmSync(dir, { recursive: true, force: true }) })
const gguf = join(dir, 'tiny.gguf')
tinyLlama(gguf)
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')
const opts = { cacheDir: join(dir, 'cache'), maxBytes: 1 << 30 }

/** An export directory made from the tiny model: the converted ONNX under onnx/, its tokenizer.json and configs. */
async function exportDir (): Promise<string> {
  const c = await convertGguf(gguf, { cacheDir: join(dir, 'conv') })
  const root = join(dir, 'export')
  writeExportSideFiles(root, c.tokenizerPath)
  copyFileSync(c.onnxPath, join(root, 'onnx', 'model.onnx'))
  copyFileSync(c.onnxPath, join(root, 'onnx', 'model_q4.onnx'))
  return root
}

test('a Hugging Face ONNX export directory: the chosen variant served in place, its tokenizer, template and stop ids', async () => {
  const root = await exportDir()
  const { spec } = await importModel(root, { ...opts, name: 'tiny-export' })
  const c = ComponentSpecSchema.parse(spec)
  assert.equal(c.model?.url, join(root, 'onnx', 'model.onnx'), 'fp32 by default, read in place')
  assert.equal(c.modelInfo?.format, 'onnx')
  assert.equal(c.modelInfo?.architecture, 'llama')
  assert.equal(c.modelInfo?.chatTemplate, true)
  assert.equal(c.contextLength, 256)
  assert.equal(c.tokenizer.type, 'bundle')
  const tok = await loadTokenizerBundle((c.tokenizer as { url: string }).url)
  assert.deepEqual([...tok.eosIds].sort(), [0, 2], 'generation_config.json\'s eos_token_id list')
  assert.equal(tok.decode(tok.chatPrompt([{ role: 'user', content: 'hello' }])), 'user\nhello\nassistant\n')

  const q4 = await importModel(root, { ...opts, variant: 'q4' })
  assert.equal(ComponentSpecSchema.parse(q4.spec).model?.url, join(root, 'onnx', 'model_q4.onnx'))
  await assert.rejects(importModel(root, { ...opts, variant: 'fp16' }), /no variant "fp16"; available: fp32, q4/)
  writeFileSync(join(root, 'tokenizer.json'), '{"model": ')
  await assert.rejects(importModel(root, opts), (err: unknown) => err instanceof TokenizerError && err.reason === 'invalid_tokenizer' && /not JSON/.test(err.message))
})

test('ollama://NAME:TAG: the GGUF blob of a pulled model, read in place and converted', async () => {
  const root = join(dir, 'ollama')
  const data = readFileSync(gguf)
  mkdirSync(join(root, 'blobs'), { recursive: true })
  writeFileSync(join(root, 'blobs', `sha256-${sha256(data)}`), data)
  mkdirSync(join(root, 'manifests', 'registry.ollama.ai', 'library', 'tiny'), { recursive: true })
  writeFileSync(join(root, 'manifests', 'registry.ollama.ai', 'library', 'tiny', 'q4'), JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
    config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: `sha256:${sha256(Buffer.from('c'))}`, size: 1 },
    layers: [{ mediaType: MEDIA_MODEL, digest: `sha256:${sha256(data)}`, size: data.length }]
  }))
  process.env.OLLAMA_MODELS = root
  try {
    const { spec } = await importModel('ollama://tiny:q4', opts)
    const c = ComponentSpecSchema.parse(spec)
    assert.equal(c.name, 'tiny-q4', 'name and tag, as Ollama names the model')
    assert.equal(c.modelInfo?.format, 'gguf')
    assert.equal(c.modelInfo?.source, 'ollama://tiny:q4')
    assert.equal(c.modelInfo?.digest, `sha256:${sha256(data)}`)
  } finally {
    delete process.env.OLLAMA_MODELS
  }
})

test('hf://ORG/REPO picks the GGUF from the repo listing, downloads it over the hub\'s paths and converts it', async () => {
  const data = readFileSync(gguf)
  const commit = 'a'.repeat(40)
  const seen: string[] = []
  // a fake hub speaking the real paths: revision and tree APIs, resolve with the LFS headers
  const hub = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x')
    seen.push(url.pathname)
    if (url.pathname === '/api/models/acme/tiny-GGUF/revision/main') {
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ id: 'acme/tiny-GGUF', sha: commit, siblings: [{ rfilename: 'README.md' }, { rfilename: 'tiny-F32.gguf' }] }))
    } else if (url.pathname === `/api/models/acme/tiny-GGUF/tree/${commit}`) {
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify([{ type: 'file', path: 'README.md', size: 5, oid: 'x' }, { type: 'file', path: 'tiny-F32.gguf', size: data.length, oid: 'y', lfs: { oid: sha256(data), size: data.length } }]))
    } else if (url.pathname === `/acme/tiny-GGUF/resolve/${commit}/tiny-F32.gguf`) {
      res.writeHead(200, { 'content-length': data.length, etag: `"${sha256(data)}"`, 'x-linked-etag': `"${sha256(data)}"`, 'x-linked-size': String(data.length), 'x-repo-commit': commit })
      res.end(data)
    } else {
      res.writeHead(404, { 'x-error-code': 'EntryNotFound' })
      res.end('not found')
    }
  })
  await new Promise<void>(resolve => hub.listen(0, '127.0.0.1', resolve))
  process.env.HF_ENDPOINT = `http://127.0.0.1:${(hub.address() as AddressInfo).port}`
  try {
    const { spec } = await importModel('hf://acme/tiny-GGUF', opts)
    const c = ComponentSpecSchema.parse(spec)
    assert.equal(c.name, 'tiny-gguf')
    assert.equal(c.modelInfo?.source, 'hf://acme/tiny-GGUF')
    assert.equal(c.modelInfo?.digest, `sha256:${sha256(data)}`)
    assert.ok(seen.includes(`/acme/tiny-GGUF/resolve/${commit}/tiny-F32.gguf`), seen.join(', '))
  } finally {
    delete process.env.HF_ENDPOINT
    hub.close()
  }
})
