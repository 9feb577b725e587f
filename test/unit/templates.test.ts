/**
 * Model templates (issue 16): the built-in catalogue validates; templates and their versions live in the
 * replicated desired state (real SQLite, real keys, changes carried by hand to a second replica); a version
 * is never changed: an update writes the next one and leaves v1 as it was.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { openDatabase } from '../../agent/db/database.ts'
import { DesiredState } from '../../agent/state/replica.ts'
import { tempDir } from '../helpers/agents.ts'
import { CATALOGUE, CatalogueEntrySchema, availability } from '../../agent/templates/catalogue.ts'
import { TemplateStore, builtinVersion } from '../../agent/templates/store.ts'
import { CreateTemplateBodySchema, MLServiceSchema, UpdateTemplateBodySchema, VersionSpecSchema, parseVersionRef, sourceOf, sourceUri } from '../../agent/templates/schemas.ts'
import { existsSync } from 'node:fs'
import { cachedWeightPath } from '../../agent/model/known-models.ts'

async function replica (): Promise<DesiredState> {
  const k = await generateKeyPair('Ed25519')
  const db = openDatabase(join(tempDir('bm-tpl-'), 'agent.db'))
  return new DesiredState({ db, peerId: peerIdFromPrivateKey(k).toString(), epoch: 1, privateKey: k })
}

test('every catalogue entry validates, and the catalogue has the models the issue names', () => {
  for (const e of CATALOGUE) {
    const r = CatalogueEntrySchema.safeParse(e)
    assert.ok(r.success, `${e.name}: ${r.success ? '' : JSON.stringify(r.error.issues)}`)
    // its v1 is a valid version spec that model add can take
    const v1 = builtinVersion(e)
    assert.ok(VersionSpecSchema.safeParse(v1).success)
    assert.match(sourceUri(sourceOf(v1)), /^hf:\/\/[^/]+\/[^/]+\/.+\.gguf$/)
  }
  const names = CATALOGUE.map(e => e.name)
  assert.equal(new Set(names).size, names.length, 'names are unique')
  for (const n of ['smollm2-135m-instruct', 'smollm2-360m-instruct', 'smollm2-1.7b-instruct', 'qwen2.5-0.5b-instruct', 'qwen2.5-1.5b-instruct',
    'qwen2.5-7b-instruct', 'llama-3.2-1b-instruct', 'llama-3.2-3b-instruct', 'mistral-7b-instruct', 'gemma-3-270m-it', 'gemma-3-1b-it']) {
    assert.ok(names.includes(n), `the catalogue has ${n}`)
  }
})

test('availability is computed now: the weight cache, else PyPI for known models, else the hub', () => {
  const smol = CATALOGUE.find(e => e.name === 'smollm2-135m-instruct')!
  const a = availability(smol)
  assert.equal(a.state, existsSync(cachedWeightPath('smollm2')) ? 'cached' : 'pypi')
  assert.equal(availability(CATALOGUE.find(e => e.name === 'qwen2.5-7b-instruct')!).state, 'hub')
})

test('a template and its versions: v1 on create, v2 on update, v1 unchanged; replicated to another agent', async () => {
  const a = await replica()
  const store = new TemplateStore(a)
  const body = CreateTemplateBodySchema.parse({ name: 'tiny-chat', description: 'a test', source: { kind: 'hub', repo: 'acme/tiny-GGUF', quantization: 'Q4_K_M' }, contextLength: 1024, deploymentConfig: { replicas: 1, maxReplicas: 3 } })
  const spec = VersionSpecSchema.parse({ source: body.source, contextLength: body.contextLength, deploymentConfig: body.deploymentConfig })
  const t = await store.create({ name: 'tiny-chat', description: 'a test' }, spec)
  assert.deepEqual(t.versions.map(v => v.name), ['tiny-chat-v1'])
  const v1Before = structuredClone(t.versions[0])
  await assert.rejects(store.create({ name: 'tiny-chat' }, spec), /exists/)

  const u = await store.update('tiny-chat', UpdateTemplateBodySchema.parse({ contextLength: 2048, sampling: { temperature: 0.2 } }))
  assert.equal(u.version.name, 'tiny-chat-v2')
  assert.equal(u.version.spec.contextLength, 2048)
  assert.equal(u.version.spec.sampling.temperature, 0.2)
  assert.equal(u.version.spec.sampling.topP, 0.95, 'fields not named are the latest version\'s')
  assert.equal(u.version.spec.deploymentConfig.maxReplicas, 3)
  const after = store.get('tiny-chat')
  assert.deepEqual(after.versions.map(v => v.name), ['tiny-chat-v1', 'tiny-chat-v2'])
  assert.deepEqual(after.versions[0], v1Before, 'v1 is unchanged by the update')
  assert.equal(store.version('tiny-chat').version.name, 'tiny-chat-v2', 'a bare name is the latest version')
  assert.equal(store.version('tiny-chat-v1').version.spec.contextLength, 1024)
  assert.throws(() => store.version('tiny-chat-v9'), /has no version 9/)
  await store.update('tiny-chat', UpdateTemplateBodySchema.parse({ weights: 'q4' }))
  assert.deepEqual(store.get('tiny-chat').versions.map(v => [v.name, v.spec.weights, v.spec.contextLength]), [['tiny-chat-v1', 'q8', 1024], ['tiny-chat-v2', 'q8', 2048], ['tiny-chat-v3', 'q4', 2048]])

  // another agent learns the same templates from the changes
  const b = await replica()
  for (const f of a.missingFor(b.vector(), 1 << 30, 1 << 20).frames) await b.receive(f)
  assert.deepEqual(new TemplateStore(b).get('tiny-chat').versions.map(v => v.spec), store.get('tiny-chat').versions.map(v => v.spec))
})

test('a built-in template: v1 from the catalogue, an update stores v2, v1 stays the catalogue\'s', async () => {
  const store = new TemplateStore(await replica())
  const list = store.list()
  assert.equal(list.length, CATALOGUE.length)
  assert.ok(list.every(t => t.builtin && t.versions.length === 1 && t.versions[0].builtin))
  await assert.rejects(store.create({ name: 'smollm2-135m-instruct' }, builtinVersion(CATALOGUE[0])), /built-in/)
  const u = await store.update('smollm2-135m-instruct', UpdateTemplateBodySchema.parse({ contextLength: 512, maxConcurrentSequences: 2 }))
  assert.equal(u.version.name, 'smollm2-135m-instruct-v2')
  const t = store.get('smollm2-135m-instruct')
  assert.deepEqual(t.versions.map(v => v.name), ['smollm2-135m-instruct-v1', 'smollm2-135m-instruct-v2'])
  assert.deepEqual(t.versions[0].spec, builtinVersion(CATALOGUE[0]))
  assert.equal(t.versions[1].spec.model.layers, 30, 'the shape is carried to v2')
})

test('names: NAME-vN refs, template names cannot end in -vN, bodies are validated', () => {
  assert.deepEqual(parseVersionRef('mistral-7b-instruct-v2'), { template: 'mistral-7b-instruct', version: 2 })
  assert.deepEqual(parseVersionRef('qwen2.5-7b-instruct'), { template: 'qwen2.5-7b-instruct' })
  assert.equal(CreateTemplateBodySchema.safeParse({ name: 'x-v2', source: { kind: 'uri', uri: '/m.gguf' } }).success, false)
  assert.equal(CreateTemplateBodySchema.safeParse({ name: 'x' }).success, false, 'a source is required')
  assert.equal(CreateTemplateBodySchema.safeParse({ hf: 'acme/tiny-GGUF' }).success, true)
  assert.equal(CreateTemplateBodySchema.safeParse({ name: 'x', engine_config: { hf_model_id: 'mistralai/Mistral-7B-Instruct-v0.2' } }).success, true, 'the seed\'s hf_model_id gives the source')
  assert.equal(UpdateTemplateBodySchema.safeParse({}).success, false)
  assert.equal(VersionSpecSchema.safeParse({ source: { kind: 'uri', uri: '/m.gguf' }, deploymentConfig: { replicas: 3, maxReplicas: 2 } }).success, false)
  assert.equal(MLServiceSchema.safeParse({ apiVersion: 'v1', kind: 'MLService', metadata: { name: 'x' }, spec: { modelTemplateVersionRef: { name: 'y' } } }).success, false)
})
