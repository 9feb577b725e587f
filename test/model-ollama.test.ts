/**
 * ollama:// models: each test lays out an Ollama store (manifests/ + blobs/) in a temp dir, the way
 * `ollama pull` leaves it, with a small stand-in GGUF blob (the magic, then arbitrary bytes).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { displayOllamaName, MEDIA_MODEL, MEDIA_PARAMS, MEDIA_SYSTEM, MEDIA_TEMPLATE, parseOllamaUri, resolveOllamaModel } from '../agent/model/ollama.ts'
import { ModelSourceError } from '../agent/model/source.ts'
import type { ModelSourceReason } from '../agent/model/source.ts'
import { tempDir } from './helpers/agents.ts'
import { rejectsWith } from './helpers/rejects.ts'

const GGUF = Buffer.concat([Buffer.from('GGUF'), Buffer.from([3, 0, 0, 0]), Buffer.alloc(4096, 7)])
const TEMPLATE = '{{ if .System }}<|system|>{{ .System }}{{ end }}<|user|>{{ .Prompt }}<|assistant|>'
const PARAMS = { stop: ['<|user|>'], temperature: 0.7 }

const sha256 = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex')

interface Layer { mediaType: string, digest: string, size: number }

/** Writes a blob and returns its layer. */
function blob (root: string, mediaType: string, data: Buffer | string): Layer {
  const buf = Buffer.from(data)
  mkdirSync(join(root, 'blobs'), { recursive: true })
  writeFileSync(join(root, 'blobs', `sha256-${sha256(buf)}`), buf)
  return { mediaType, digest: `sha256:${sha256(buf)}`, size: buf.length }
}

function manifest (root: string, path: string, layers: Layer[] | string): string {
  const dir = join(root, 'manifests', ...path.split('/').slice(0, -1))
  mkdirSync(dir, { recursive: true })
  const file = join(root, 'manifests', ...path.split('/'))
  writeFileSync(file, typeof layers === 'string' ? layers : JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
    config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: `sha256:${sha256('config')}`, size: 6 },
    layers
  }))
  return file
}

/** A store with a library model (two tags), a user model and a model from another registry. */
function store (): { root: string, model: Layer } {
  const root = tempDir('bm-ollama-')
  const model = blob(root, MEDIA_MODEL, GGUF)
  const layers = [model, blob(root, MEDIA_TEMPLATE, TEMPLATE), blob(root, MEDIA_SYSTEM, 'You are terse.'), blob(root, MEDIA_PARAMS, JSON.stringify(PARAMS))]
  manifest(root, 'registry.ollama.ai/library/tinyllama/latest', layers)
  manifest(root, 'registry.ollama.ai/library/tinyllama/1.1b', [model])
  manifest(root, 'registry.ollama.ai/someone/tiny-chat/q4', [model, blob(root, MEDIA_TEMPLATE, '{{ .Prompt }}')])
  manifest(root, 'example.org:5000/team/tiny/v1', [model])
  return { root, model }
}


test('names: model, model:tag, user/model, host/ns/model:tag; bad names are refused', () => {
  assert.deepEqual(parseOllamaUri('ollama://llama3.2'), { host: 'registry.ollama.ai', namespace: 'library', model: 'llama3.2', tag: 'latest' })
  assert.deepEqual(parseOllamaUri('ollama://llama3.2:1b'), { host: 'registry.ollama.ai', namespace: 'library', model: 'llama3.2', tag: '1b' })
  assert.deepEqual(parseOllamaUri('ollama://user/model:q4'), { host: 'registry.ollama.ai', namespace: 'user', model: 'model', tag: 'q4' })
  const full = parseOllamaUri('ollama://example.org:5000/team/tiny:v1')
  assert.deepEqual(full, { host: 'example.org:5000', namespace: 'team', model: 'tiny', tag: 'v1' })
  assert.equal(displayOllamaName(full), 'example.org:5000/team/tiny:v1')
  for (const bad of ['hf://a/b', 'ollama://', 'ollama://../x', 'ollama://a/b/c/d', 'ollama://model:', 'ollama://model:../x', 'ollama://a/../b']) {
    assert.throws(() => parseOllamaUri(bad), { name: 'ValidationError' }, bad)
  }
})

test('a library model by name: the GGUF in place, verified, with template, system and params', async () => {
  const { root, model } = store()
  const got = await resolveOllamaModel('ollama://tinyllama', { modelsDir: root })
  assert.deepEqual(got, {
    name: 'tinyllama:latest',
    manifestPath: join(root, 'manifests', 'registry.ollama.ai', 'library', 'tinyllama', 'latest'),
    path: join(root, 'blobs', `sha256-${sha256(GGUF)}`),
    digest: model.digest,
    sizeBytes: GGUF.length,
    verified: true,
    template: TEMPLATE,
    system: 'You are terse.',
    params: PARAMS
  })
})

test('name:tag, user/name and a full host name; OLLAMA_MODELS is the default store', async () => {
  const { root } = store()
  const tagged = await resolveOllamaModel('ollama://tinyllama:1.1b', { modelsDir: root })
  assert.equal(tagged.name, 'tinyllama:1.1b')
  assert.equal(tagged.template, undefined)
  const user = await resolveOllamaModel('ollama://someone/tiny-chat:q4', { modelsDir: root, verify: false })
  assert.equal(user.name, 'someone/tiny-chat:q4')
  assert.equal(user.template, '{{ .Prompt }}')
  assert.equal(user.verified, false)
  const full = await resolveOllamaModel('ollama://example.org:5000/team/tiny:v1', { modelsDir: root })
  assert.equal(full.path, tagged.path)

  const saved = process.env.OLLAMA_MODELS
  process.env.OLLAMA_MODELS = root
  try {
    assert.equal((await resolveOllamaModel('ollama://tinyllama:1.1b')).path, tagged.path)
  } finally {
    if (saved === undefined) delete process.env.OLLAMA_MODELS
    else process.env.OLLAMA_MODELS = saved
  }
})

test('a missing tag lists the tags present; a missing model lists the store', async () => {
  const { root } = store()
  const tag = await rejectsWith(resolveOllamaModel('ollama://tinyllama:7b', { modelsDir: root }), 'not_found', /tinyllama:7b is not in .*tags present for tinyllama are 1\.1b, latest/)
  assert.deepEqual((tag.details as { tags: string[] }).tags, ['1.1b', 'latest'])
  await rejectsWith(resolveOllamaModel('ollama://mistral', { modelsDir: root }), 'not_found', /ollama pull mistral:latest.*holds example\.org:5000\/team\/tiny:v1, tinyllama:1\.1b, tinyllama:latest, someone\/tiny-chat:q4/)
  await rejectsWith(resolveOllamaModel('ollama://mistral', { modelsDir: tempDir() }), 'not_found', /holds no models/)
})

test('a corrupt manifest: not JSON, not a manifest, no model layer, too big', async () => {
  const { root, model } = store()
  manifest(root, 'registry.ollama.ai/library/broken/a', '{"schemaVersion": 2, "layers": [')
  await rejectsWith(resolveOllamaModel('ollama://broken:a', { modelsDir: root }), 'corrupt', /manifest .* is not JSON/)
  manifest(root, 'registry.ollama.ai/library/broken/b', JSON.stringify({ schemaVersion: 2, layers: [{ ...model, digest: 'sha256:xyz' }] }))
  await rejectsWith(resolveOllamaModel('ollama://broken:b', { modelsDir: root }), 'corrupt', /is not a manifest: layers\.0\.digest/)
  manifest(root, 'registry.ollama.ai/library/broken/c', [blob(root, MEDIA_TEMPLATE, 'x')])
  await rejectsWith(resolveOllamaModel('ollama://broken:c', { modelsDir: root }), 'corrupt', /has no application\/vnd\.ollama\.image\.model layer/)
  manifest(root, 'registry.ollama.ai/library/broken/d', ' '.repeat(1024 * 1024 + 1))
  await rejectsWith(resolveOllamaModel('ollama://broken:d', { modelsDir: root }), 'corrupt', /more than a manifest can be/)
})

test('blob missing, wrong size, not a GGUF, SHA-256 mismatch (and verify: false skips the hash)', async () => {
  const { root, model } = store()
  const path = join(root, 'blobs', `sha256-${sha256(GGUF)}`)

  manifest(root, 'registry.ollama.ai/library/gone/latest', [{ ...model, digest: `sha256:${sha256('not there')}` }])
  await rejectsWith(resolveOllamaModel('ollama://gone', { modelsDir: root }), 'not_found', /blob sha256:[0-9a-f]{64} .* is missing/)

  manifest(root, 'registry.ollama.ai/library/short/latest', [{ ...model, size: model.size + 1 }])
  await rejectsWith(resolveOllamaModel('ollama://short', { modelsDir: root }), 'corrupt', new RegExp(`is ${GGUF.length} bytes but the manifest says ${GGUF.length + 1}`))

  const notGguf = blob(root, MEDIA_MODEL, Buffer.from('PK\u0003\u0004 a zip, not a model'))
  manifest(root, 'registry.ollama.ai/library/zip/latest', [notGguf])
  await rejectsWith(resolveOllamaModel('ollama://zip', { modelsDir: root }), 'corrupt', /is not a GGUF file/)

  const damaged = Buffer.from(GGUF)
  damaged[100] ^= 0xff // same size, same magic, different bytes
  writeFileSync(path, damaged)
  const err = await rejectsWith(resolveOllamaModel('ollama://tinyllama:1.1b', { modelsDir: root }), 'sha256_mismatch')
  assert.equal((err.details as { expected: string }).expected, sha256(GGUF))
  assert.equal((err.details as { actual: string }).actual, sha256(damaged))
  const unchecked = await resolveOllamaModel('ollama://tinyllama:1.1b', { modelsDir: root, verify: false })
  assert.equal(unchecked.verified, false)
  assert.equal(unchecked.path, path)
})
