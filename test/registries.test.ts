import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import pino from 'pino'
import { openDatabase } from '../agent/db/database.ts'
import type { Db } from '../agent/db/database.ts'
import { AgentError, NotFoundError, UnauthorizedError } from '../agent/errors.ts'
import { registerRegistryRoutes } from '../agent/api/routes/registries.ts'
import { SplitRunnerRegistry } from '../agent/registry/split-runners.ts'
import { ModelLayerRegistry } from '../agent/registry/model-layers.ts'

const TOKEN = 'test-token'

/** A small kubeconfig; its secrets must never come back in an answer. */
const KUBECONFIG = {
  apiVersion: 'v1',
  kind: 'Config',
  clusters: [{ name: 'gpu-cluster', cluster: { server: 'https://10.9.8.7:6443', 'certificate-authority-data': 'Q0EtREFUQS1TRUNSRVQ=' } }],
  users: [{ name: 'splitter', user: { token: 'KUBE-TOKEN-SECRET-123' } }],
  contexts: [{ name: 'splitter@gpu-cluster', context: { cluster: 'gpu-cluster', user: 'splitter' } }],
  'current-context': 'splitter@gpu-cluster'
}
const SECRETS = ['KUBE-TOKEN-SECRET-123', 'Q0EtREFUQS1TRUNSRVQ=', '10.9.8.7', 'certificate-authority-data']

/** Seed 002, POST /split-runner (the "Kubernetes config dict" filled with the kubeconfig above). */
const SEED_RUNNER_BODY = {
  cluster_k8s_config: KUBECONFIG,
  split_runner_public_host: '192.168.0.106',
  split_runner_metadata: { key: 'value' },
  split_runner_tags: ['tag1', 'tag2']
}
/** Seed 002, PUT /split-runner/{runner_id}. */
const SEED_RUNNER_UPDATE = {
  $set: { 'split_runner_metadata.version': '2.0' },
  $addToSet: { split_runner_tags: 'auto-scaled' }
}
/** Seed 002, POST /split-runners. */
const SEED_RUNNER_FILTER = {
  'split_runner_metadata.framework': 'transformers',
  split_runner_tags: { $in: ['llm'] }
}

/** MD5 of a made-up serialized layer: the seed's "abc123..." is not an MD5, and the registry requires 32 hex digits. */
function md5 (text: string): string {
  return createHash('md5').update(text).digest('hex')
}
const SEED_LAYER_HASH = md5('gpt2-base layer 0 of 4')
/** Seed 002, POST /model-layer (with a real MD5 in place of "abc123..."). */
const SEED_LAYER_BODY = {
  model_layer_hash: SEED_LAYER_HASH,
  model_asset_id: 'gpt2-base',
  model_component_registry_uri: 'registry://component/decoder',
  model_layer_public_url: 'https://example.com/layers/abc123',
  model_layer_metadata: [{ precision: 'fp16' }],
  model_layer_rank: 0,
  model_world_size: 4
}
/** Seed 002, PUT /model-layer/<hash>. */
const SEED_LAYER_UPDATE = {
  $set: {
    model_layer_public_url: 'https://example.com/layers/abc123-v2',
    model_layer_metadata: [{ precision: 'fp32' }]
  }
}
/** Seed 002, POST /model-layers. */
const SEED_LAYER_FILTER = { model_asset_id: 'gpt2-base', model_layer_rank: 0 }

interface Reply { status: number, body: any, text: string }

interface Server { app: FastifyInstance, db: Db, url: string }

/**
 * A real Fastify server on 127.0.0.1:0 with the registry routes, plus what the agent's server
 * adds around them: a bearer-token hook on every non-GET route, a root error handler with the
 * rest of the API's shape, and one other route that uses it.
 */
async function startServer (dbPath: string): Promise<Server> {
  const db = openDatabase(dbPath)
  const app = Fastify({ bodyLimit: 1024 * 1024 })
  app.addHook('onRequest', async (req) => {
    if (req.method !== 'GET' && req.headers.authorization !== `Bearer ${TOKEN}`) throw new UnauthorizedError()
  })
  app.setErrorHandler((err: AgentError | Error, _req, reply) => {
    const status = err instanceof AgentError ? err.status : 500
    void reply.status(status).send({ error: { code: err instanceof AgentError ? err.code : 'internal_error', message: err.message } })
  })
  app.get('/api/other/:id', async () => { throw new NotFoundError('no such other') })
  registerRegistryRoutes(app, { runners: new SplitRunnerRegistry(db), layers: new ModelLayerRegistry(db), log: pino({ level: 'silent' }) })
  await app.listen({ host: '127.0.0.1', port: 0 })
  return { app, db, url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}` }
}

async function stopServer (s: Server): Promise<void> {
  await s.app.close()
  s.db.close()
}

function client (s: () => Server) {
  return async (method: string, path: string, body?: unknown, headers: Record<string, string> = { authorization: `Bearer ${TOKEN}` }): Promise<Reply> => {
    const h: Record<string, string> = { ...headers }
    if (body !== undefined) h['content-type'] = 'application/json'
    const init: RequestInit = { method, headers: h }
    if (body !== undefined) init.body = typeof body === 'string' ? body : JSON.stringify(body)
    const res = await fetch(`${s().url}${path}`, init)
    const text = await res.text()
    let parsed: unknown
    try { parsed = JSON.parse(text) } catch { parsed = text }
    return { status: res.status, body: parsed, text }
  }
}

/** The stored row, straight from SQLite. */
function runnerRow (db: Db, id: string): { doc: string, updated_at: number } | undefined {
  return db.prepare('SELECT doc, updated_at FROM split_runners WHERE id = ?').get(id) as { doc: string, updated_at: number } | undefined
}
function layerRow (db: Db, hash: string): { doc: string, updated_at: number } | undefined {
  return db.prepare('SELECT doc, updated_at FROM model_layers WHERE hash = ?').get(hash) as { doc: string, updated_at: number } | undefined
}

function assertNoSecrets (text: string): void {
  for (const s of SECRETS) assert.ok(!text.includes(s), `answer leaks ${s}: ${text}`)
}

function assertError (r: Reply, status: number, code: string): void {
  assert.equal(r.status, status, r.text)
  assert.equal(r.body.success, false, r.text)
  assert.equal(r.body.code, code, r.text)
  assert.equal(typeof r.body.error, 'string', r.text)
}

describe('split runners registry (seed 002)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'bm-registries-'))
  let server: Server
  const api = client(() => server)

  before(async () => { server = await startServer(join(dir, 'agent.db')) })
  after(async () => {
    await stopServer(server)
    rmSync(dir, { recursive: true, force: true })
  })

  async function createRunner (body: unknown): Promise<string> {
    const r = await api('POST', '/split-runner', body)
    assert.equal(r.status, 201, r.text)
    return r.body.data.id
  }

  test('POST /split-runner with the seed body answers the seed body; GET shows the runner with the kubeconfig redacted', async () => {
    const r = await api('POST', '/split-runner', SEED_RUNNER_BODY)
    assert.equal(r.status, 201, r.text)
    assert.deepEqual(Object.keys(r.body).sort(), ['data', 'success'])
    assert.equal(r.body.success, true)
    assert.equal(r.body.data.message, 'SplitRunner created')
    assert.match(r.body.data.id, /^runner-[0-9a-f]{16}$/)
    const id = r.body.data.id

    const got = await api('GET', `/split-runner/${id}`, undefined, {})
    assert.equal(got.status, 200, got.text)
    assert.equal(got.body.success, true)
    const { created_at: createdAt, ...rest } = got.body.data
    assert.ok(!Number.isNaN(Date.parse(createdAt)), 'created_at is an ISO date')
    assert.deepEqual(rest, {
      split_runner_id: id,
      split_runner_public_url: 'http://192.168.0.106:7700',
      split_runner_public_host: '192.168.0.106',
      split_runner_metadata: { key: 'value' },
      split_runner_tags: ['tag1', 'tag2'],
      cluster_k8s_config: { redacted: true, clusters: ['gpu-cluster'] }
    })
    assertNoSecrets(got.text)

    // the kubeconfig is kept, whole, for the Job runner
    const row = runnerRow(server.db, id)
    assert.ok(row != null)
    assert.deepEqual(JSON.parse(row.doc).cluster_k8s_config, KUBECONFIG)
  })

  test('an explicit split_runner_public_url is kept; no kubeconfig means no cluster_k8s_config in answers', async () => {
    const id = await createRunner({ split_runner_public_host: 'runner-7.example.net', split_runner_public_url: 'http://runner-7.example.net:32286' })
    const got = await api('GET', `/split-runner/${id}`)
    assert.equal(got.body.data.split_runner_public_url, 'http://runner-7.example.net:32286')
    assert.deepEqual(got.body.data.split_runner_metadata, {}, 'metadata defaults to {}')
    assert.deepEqual(got.body.data.split_runner_tags, [], 'tags default to []')
    assert.ok(!('cluster_k8s_config' in got.body.data))
  })

  test('PUT with the seed update ($set on a dotted path, $addToSet) answers the seed body and changes exactly that', async () => {
    const id = await createRunner(SEED_RUNNER_BODY)
    const r = await api('PUT', `/split-runner/${id}`, SEED_RUNNER_UPDATE)
    assert.equal(r.status, 200, r.text)
    assert.deepEqual(r.body, { success: true, data: { message: 'SplitRunner updated' } })
    const got = (await api('GET', `/split-runner/${id}`)).body.data
    assert.deepEqual(got.split_runner_metadata, { key: 'value', version: '2.0' })
    assert.deepEqual(got.split_runner_tags, ['tag1', 'tag2', 'auto-scaled'])
    // $addToSet again: a set, no duplicate
    assert.equal((await api('PUT', `/split-runner/${id}`, SEED_RUNNER_UPDATE)).status, 200)
    assert.deepEqual((await api('GET', `/split-runner/${id}`)).body.data.split_runner_tags, ['tag1', 'tag2', 'auto-scaled'])
    // other operators through mingo: $push, $pull, $inc, $unset
    const more = await api('PUT', `/split-runner/${id}`, { $push: { split_runner_tags: 'gpu' }, $inc: { 'split_runner_metadata.restarts': 2 }, $unset: { 'split_runner_metadata.key': '' } })
    assert.equal(more.status, 200, more.text)
    assert.equal((await api('PUT', `/split-runner/${id}`, { $pull: { split_runner_tags: 'tag1' } })).status, 200)
    const after = (await api('GET', `/split-runner/${id}`)).body.data
    assert.deepEqual(after.split_runner_tags, ['tag2', 'auto-scaled', 'gpu'])
    assert.deepEqual(after.split_runner_metadata, { version: '2.0', restarts: 2 })
    // the kubeconfig is untouched by updates elsewhere
    assert.deepEqual(JSON.parse(runnerRow(server.db, id)!.doc).cluster_k8s_config, KUBECONFIG)
  })

  test('the kubeconfig can be replaced with $set or removed with $unset, but never moved into view or read back', async () => {
    const id = await createRunner(SEED_RUNNER_BODY)
    const before = runnerRow(server.db, id)!.doc
    for (const update of [
      { $rename: { cluster_k8s_config: 'split_runner_metadata.leak' } },
      { $rename: { 'cluster_k8s_config.users': 'split_runner_metadata.users' } },
      { $push: { 'cluster_k8s_config.clusters': { name: 'x' } } }
    ]) {
      const r = await api('PUT', `/split-runner/${id}`, update)
      assertError(r, 400, 'invalid_request')
      assert.match(r.body.error, /cluster_k8s_config can only be replaced/)
      assertNoSecrets(r.text)
    }
    assert.equal(runnerRow(server.db, id)!.doc, before, 'nothing stored')

    const newKube = { clusters: [{ name: 'edge-a', cluster: { server: 'https://edge-a:6443' } }, { name: 'edge-b', cluster: { server: 'https://edge-b:6443' } }] }
    assert.equal((await api('PUT', `/split-runner/${id}`, { $set: { cluster_k8s_config: newKube } })).status, 200)
    assert.deepEqual((await api('GET', `/split-runner/${id}`)).body.data.cluster_k8s_config, { redacted: true, clusters: ['edge-a', 'edge-b'] })
    assert.equal((await api('PUT', `/split-runner/${id}`, { $unset: { cluster_k8s_config: '' } })).status, 200)
    assert.ok(!('cluster_k8s_config' in (await api('GET', `/split-runner/${id}`)).body.data))
    assert.ok(!('cluster_k8s_config' in JSON.parse(runnerRow(server.db, id)!.doc)))
  })

  test('DELETE answers the seed body; the runner is gone (404 after)', async () => {
    const id = await createRunner(SEED_RUNNER_BODY)
    const r = await api('DELETE', `/split-runner/${id}`)
    assert.equal(r.status, 200, r.text)
    assert.deepEqual(r.body, { success: true, data: { message: 'SplitRunner deleted' } })
    assertError(await api('GET', `/split-runner/${id}`), 404, 'not_found')
    assert.equal(runnerRow(server.db, id), undefined)
    assertError(await api('DELETE', `/split-runner/${id}`), 404, 'not_found')
  })

  test('unknown runner ids are 404 in the seed envelope on GET, PUT and DELETE', async () => {
    for (const [method, body] of [['GET', undefined], ['PUT', SEED_RUNNER_UPDATE], ['DELETE', undefined]] as const) {
      const r = await api(method, '/split-runner/runner-doesnotexist', body)
      assertError(r, 404, 'not_found')
      assert.match(r.body.error, /runner-doesnotexist/)
    }
  })

  test('bad POST bodies are 400 with one detail per bad field, and nothing is stored', async () => {
    const count = (): number => server.db.prepare('SELECT COUNT(*) FROM split_runners').pluck().get() as number
    const n = count()
    const cases: Array<[unknown, string[]]> = [
      [{ split_runner_metadata: { key: 'value' } }, ['split_runner_public_host']],
      [{ split_runner_public_host: '<server-url>', split_runner_tags: 'llm' }, ['split_runner_public_host', 'split_runner_tags']],
      [{ split_runner_public_host: 'h1', split_runner_metadata: ['not', 'an', 'object'], split_runner_public_url: 'ftp://h1' }, ['split_runner_metadata', 'split_runner_public_url']],
      [{ split_runner_public_host: 'h1', split_runner_id: 'mine', colour: 'red' }, ['(root)']],
      [{ split_runner_public_host: 'h1', cluster_k8s_config: { clusters: [{ cluster: {} }] } }, ['cluster_k8s_config.clusters.0.name']],
      [{ split_runner_public_host: 'h1', split_runner_metadata: { 'a.b': 1 } }, ['split_runner_metadata.a.b']],
      [{ split_runner_public_host: 'h1', split_runner_metadata: { $gt: 1 } }, ['split_runner_metadata.$gt']]
    ]
    for (const [body, fields] of cases) {
      const r = await api('POST', '/split-runner', body)
      assertError(r, 400, 'invalid_request')
      assert.deepEqual(r.body.details.map((d: any) => d.field).sort(), fields, r.text)
      for (const d of r.body.details) assert.equal(typeof d.message, 'string')
    }
    assertError(await api('POST', '/split-runner', '{"split_runner_public_host": '), 400, 'invalid_request')
    assert.equal(count(), n)
  })

  test('update documents that are not operators, run code, use unknown operators or break the schema are 400; the runner is unchanged', async () => {
    const id = await createRunner({ split_runner_public_host: 'keep.example', split_runner_tags: ['a'] })
    const before = runnerRow(server.db, id)!
    const cases: Array<[unknown, RegExp]> = [
      [{ split_runner_tags: ['x'] }, /made of update operators.*"split_runner_tags"/],
      [{ $set: { split_runner_tags: ['x'] }, split_runner_public_host: 'y' }, /"split_runner_public_host" is not/],
      [{ $where: 'this.split_runner_tags.length > 0' }, /\$where runs code/],
      [{ $set: { 'split_runner_metadata.f': { $function: { body: 'function () { return 1 }', args: [], lang: 'js' } } } }, /\$function runs code/],
      [{ $frobnicate: { split_runner_tags: 1 } }, /Unknown update operator/],
      [{ $set: 5 }, /\$set takes an object/],
      [{}, /no update operators/],
      [[{ $set: { a: 1 } }], /an update is a JSON object/],
      [{ $set: { split_runner_id: 'runner-other' } }, /split_runner_id is the primary key/],
      [{ $unset: { split_runner_id: '' } }, /split_runner_id is the primary key/],
      [{ $set: { created_at: '2020-01-01T00:00:00.000Z' } }, /created_at is set by the registry/],
      [{ $set: { split_runner_tags: 'not-a-list' } }, /split_runner_tags/],
      [{ $set: { split_runner_public_url: 'not a url' } }, /split_runner_public_url/],
      [{ $unset: { split_runner_public_host: '' } }, /split_runner_public_host/],
      [{ $set: { unexpected_field: 1 } }, /unexpected_field|Unrecognized key/],
      [{ $set: { 'split_runner_metadata.__proto__.polluted': 1 } }, /not allowed/],
      [{ $set: { split_runner_tags: ['a'] }, $push: { split_runner_tags: 'b' } }, /conflict/]
    ]
    for (const [update, message] of cases) {
      const r = await api('PUT', `/split-runner/${id}`, update)
      assertError(r, 400, 'invalid_request')
      assert.match(r.body.error, message, JSON.stringify(update))
      assert.ok(Array.isArray(r.body.details) && r.body.details.length > 0, r.text)
    }
    assert.equal(({} as any).polluted, undefined)
    const row = runnerRow(server.db, id)!
    assert.equal(row.doc, before.doc, 'document unchanged')
    assert.equal(row.updated_at, before.updated_at, 'not rewritten')
  })

  test('POST /split-runners with the seed filter returns exactly the matching runners, in the seed shape', async () => {
    const a = await createRunner({ split_runner_public_host: 'q-a', split_runner_public_url: 'http://host:32286', split_runner_metadata: { framework: 'transformers', gpus: 1 }, split_runner_tags: ['llm', 'split'], cluster_k8s_config: KUBECONFIG })
    const b = await createRunner({ split_runner_public_host: 'q-b', split_runner_metadata: { framework: 'transformers', gpus: 4 }, split_runner_tags: ['vision'] })
    const c = await createRunner({ split_runner_public_host: 'q-c', split_runner_metadata: { framework: 'vllm', gpus: 8 }, split_runner_tags: ['llm'] })
    const r = await api('POST', '/split-runners', SEED_RUNNER_FILTER)
    assert.equal(r.status, 200, r.text)
    assert.equal(r.body.success, true)
    assert.deepEqual(r.body.data.map((d: any) => d.split_runner_id), [a])
    const { created_at: _, ...found } = r.body.data[0]
    assert.deepEqual(found, {
      split_runner_id: a,
      split_runner_public_url: 'http://host:32286',
      split_runner_metadata: { framework: 'transformers', gpus: 1 },
      split_runner_public_host: 'q-a',
      split_runner_tags: ['llm', 'split'],
      cluster_k8s_config: { redacted: true, clusters: ['gpu-cluster'] }
    })
    assertNoSecrets(r.text)

    const ids = async (filter: unknown, query = ''): Promise<string[]> => {
      const res = await api('POST', `/split-runners${query}`, filter)
      assert.equal(res.status, 200, res.text)
      assertNoSecrets(res.text)
      return res.body.data.map((d: any) => d.split_runner_id)
    }
    const mine = { split_runner_public_host: { $in: ['q-a', 'q-b', 'q-c'] } }
    assert.deepEqual(await ids(mine), [a, b, c], '$in on a field, oldest first')
    assert.deepEqual(await ids({ ...mine, split_runner_tags: { $in: ['vision', 'nothing'] } }), [b], '$in on an array')
    assert.deepEqual(await ids({ ...mine, 'split_runner_metadata.gpus': { $gt: 1 } }), [b, c], '$gt on a dotted path')
    assert.deepEqual(await ids({ ...mine, 'split_runner_metadata.framework': 'vllm' }), [c], 'dotted path equality')
    assert.deepEqual(await ids({ ...mine, split_runner_tags: 'llm' }), [a, c], 'a scalar matches array members')
    assert.deepEqual(await ids({ ...mine, split_runner_tags: ['llm', 'split'] }), [a], 'an array matches the whole array')
    assert.deepEqual(await ids({ ...mine, split_runner_tags: { $size: 1 } }), [b, c], '$size')
    assert.deepEqual(await ids({ $and: [mine, { $or: [{ 'split_runner_metadata.gpus': { $lte: 1 } }, { split_runner_tags: 'vision' }] }] }), [a, b], '$and / $or')
    assert.deepEqual(await ids({ ...mine, 'cluster_k8s_config.clusters': 'gpu-cluster' }), [a], 'filters see the redacted kubeconfig (cluster names)')
    assert.deepEqual(await ids({ ...mine, 'cluster_k8s_config.users.user.token': 'KUBE-TOKEN-SECRET-123' }), [], 'filters cannot probe the kubeconfig')
    assert.deepEqual(await ids({ ...mine, 'cluster_k8s_config.users.user.token': { $regex: '^KUBE' } }), [], 'not even by pattern')
    assert.deepEqual(await ids(mine, '?limit=2'), [a, b], 'limit')
    assert.equal((await ids({})).length >= 3, true, 'an empty filter matches all')
  })

  test('bad filters are 400: code-executing, unknown operators, not an object, too large, too deep, bad limit', async () => {
    const cases: Array<[unknown, RegExp, string?]> = [
      [{ $where: 'this.split_runner_tags.length > 0' }, /\$where runs code/],
      [{ $expr: { $function: { body: 'function () { return true }', args: [], lang: 'js' } } }, /\$function runs code/],
      [{ split_runner_tags: { $frobnicate: 1 } }, /unknown query operator \$frobnicate/],
      [{ $nonsense: 1 }, /unknown top level operator/],
      [['split_runner_tags'], /a filter is a JSON object/],
      [{ split_runner_tags: { $in: Array.from({ length: 8000 }, (_, i) => `tag-${i}`) } }, /limit is 65536/],
      [JSON.parse('{"a":'.repeat(40) + '1' + '}'.repeat(40)), /deeper than 32/],
      [{}, /limit must be|limit/, '?limit=0'],
      [{}, /limit/, '?limit=5000']
    ]
    for (const [filter, message, query] of cases) {
      const r = await api('POST', `/split-runners${query ?? ''}`, filter)
      assertError(r, 400, 'invalid_request')
      assert.match(r.body.error, message, r.text)
    }
  })

  test('errors from the surrounding server keep their shapes: the seed envelope here, the API shape elsewhere', async () => {
    const noToken = await api('POST', '/split-runner', SEED_RUNNER_BODY, {})
    assertError(noToken, 401, 'unauthorized')
    const other = await api('GET', '/api/other/1')
    assert.equal(other.status, 404)
    assert.deepEqual(other.body, { error: { code: 'not_found', message: 'no such other' } })
  })
})

describe('model layers registry (seed 002)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'bm-registries-'))
  let server: Server
  const api = client(() => server)

  before(async () => { server = await startServer(join(dir, 'agent.db')) })
  after(async () => {
    await stopServer(server)
    rmSync(dir, { recursive: true, force: true })
  })

  function layer (asset: string, rank: number, worldSize: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
    const hash = md5(`${asset} layer ${rank} of ${worldSize}`)
    return { ...SEED_LAYER_BODY, model_layer_hash: hash, model_asset_id: asset, model_layer_public_url: `https://example.com/layers/${hash}`, model_layer_rank: rank, model_world_size: worldSize, ...extra }
  }

  test('POST /model-layer with the seed body answers 201 with the layer; GET finds it by hash, in any case', async () => {
    const r = await api('POST', '/model-layer', SEED_LAYER_BODY)
    assert.equal(r.status, 201, r.text)
    assert.deepEqual(r.body, { success: true, data: SEED_LAYER_BODY })
    for (const h of [SEED_LAYER_HASH, SEED_LAYER_HASH.toUpperCase()]) {
      const got = await api('GET', `/model-layer/${h}`)
      assert.equal(got.status, 200, got.text)
      assert.deepEqual(got.body, { success: true, data: SEED_LAYER_BODY })
    }
  })

  test('an uppercase hash is stored lowercase; the same hash twice (any case) is 409', async () => {
    const l = layer('dup-asset', 0, 1)
    const up = { ...l, model_layer_hash: (l.model_layer_hash as string).toUpperCase() }
    const r = await api('POST', '/model-layer', up)
    assert.equal(r.status, 201, r.text)
    assert.equal(r.body.data.model_layer_hash, l.model_layer_hash)
    assert.ok(layerRow(server.db, l.model_layer_hash as string) != null, 'keyed by the lowercase hash')
    for (const again of [l, up, { ...l, model_asset_id: 'something-else' }]) {
      const d = await api('POST', '/model-layer', again)
      assertError(d, 409, 'conflict')
      assert.match(d.body.error, new RegExp(l.model_layer_hash as string))
    }
    assert.equal((await api('GET', `/model-layer/${l.model_layer_hash as string}`)).body.data.model_asset_id, 'dup-asset', 'the first one is kept')
  })

  test('PUT with the seed $set answers success and changes the layer; DELETE removes it', async () => {
    const l = layer('put-asset', 1, 2)
    assert.equal((await api('POST', '/model-layer', l)).status, 201)
    const r = await api('PUT', `/model-layer/${l.model_layer_hash as string}`, SEED_LAYER_UPDATE)
    assert.equal(r.status, 200, r.text)
    assert.deepEqual(r.body, { success: true, data: { message: 'ModelLayer updated' } })
    const got = (await api('GET', `/model-layer/${l.model_layer_hash as string}`)).body.data
    assert.deepEqual(got, { ...l, model_layer_public_url: 'https://example.com/layers/abc123-v2', model_layer_metadata: [{ precision: 'fp32' }] })

    const d = await api('DELETE', `/model-layer/${(l.model_layer_hash as string).toUpperCase()}`)
    assert.equal(d.status, 200, d.text)
    assert.deepEqual(d.body, { success: true, data: { message: 'ModelLayer deleted' } })
    assertError(await api('GET', `/model-layer/${l.model_layer_hash as string}`), 404, 'not_found')
    assert.equal(layerRow(server.db, l.model_layer_hash as string), undefined)
  })

  test('unknown hashes are 404 on GET, PUT and DELETE', async () => {
    const unknown = md5('never registered')
    for (const [method, body] of [['GET', undefined], ['PUT', SEED_LAYER_UPDATE], ['DELETE', undefined]] as const) {
      assertError(await api(method, `/model-layer/${unknown}`, body), 404, 'not_found')
    }
    assertError(await api('GET', '/model-layer/abc123...'), 404, 'not_found')
  })

  test('bad bodies are 400 with one detail per bad field, and nothing is stored', async () => {
    const count = (): number => server.db.prepare('SELECT COUNT(*) FROM model_layers').pluck().get() as number
    const n = count()
    const cases: Array<[unknown, string[]]> = [
      [{ ...SEED_LAYER_BODY, model_layer_hash: 'abc123...' }, ['model_layer_hash']],
      [{ ...layer('bad', 4, 4) }, ['model_layer_rank']],
      [{ ...layer('bad', 0, 4), model_layer_rank: -1, model_world_size: 0 }, ['model_layer_rank', 'model_world_size']],
      [{ ...layer('bad', 0, 4), model_layer_rank: 1.5 }, ['model_layer_rank']],
      [{ model_layer_hash: md5('bad') }, ['model_asset_id', 'model_component_registry_uri', 'model_layer_public_url', 'model_layer_rank', 'model_world_size']],
      [{ ...layer('bad', 0, 4), model_layer_metadata: { precision: 'fp16' } }, ['model_layer_metadata']],
      [{ ...layer('bad', 0, 4), model_layer_public_url: 'not a url' }, ['model_layer_public_url']],
      [{ ...layer('bad', 0, 4), colour: 'red' }, ['(root)']]
    ]
    for (const [body, fields] of cases) {
      const r = await api('POST', '/model-layer', body)
      assertError(r, 400, 'invalid_request')
      assert.deepEqual(r.body.details.map((d: any) => d.field).sort(), fields, r.text)
    }
    assert.equal(count(), n)
  })

  test('an update that breaks the schema, changes the hash, is not operators or runs code is 400; the layer is unchanged', async () => {
    const l = layer('strict-asset', 2, 4)
    const hash = l.model_layer_hash as string
    assert.equal((await api('POST', '/model-layer', l)).status, 201)
    const before = layerRow(server.db, hash)!
    const cases: Array<[unknown, string]> = [
      [{ $set: { model_layer_rank: -1 } }, 'model_layer_rank'],
      [{ $inc: { model_layer_rank: 2 } }, 'model_layer_rank'],
      [{ $set: { model_world_size: 2 } }, 'model_layer_rank'],
      [{ $set: { model_layer_hash: md5('another layer') } }, 'model_layer_hash'],
      [{ $set: { model_layer_hash: hash.toUpperCase() } }, 'model_layer_hash'],
      [{ $unset: { model_asset_id: '' } }, 'model_asset_id'],
      [{ $set: { model_layer_metadata: 'fp16' } }, 'model_layer_metadata'],
      [{ $push: { model_layer_metadata: 'fp16' } }, 'model_layer_metadata.1'],
      [{ $set: { extra: 1 } }, '(root)'],
      [{ model_layer_rank: 1 }, 'model_layer_rank'],
      [{ $where: 'true' }, '$where']
    ]
    for (const [update, field] of cases) {
      const r = await api('PUT', `/model-layer/${hash}`, update)
      assertError(r, 400, 'invalid_request')
      assert.ok(r.body.details.some((d: any) => d.field === field), `${JSON.stringify(update)} → ${r.text}`)
    }
    const row = layerRow(server.db, hash)!
    assert.equal(row.doc, before.doc, 'document unchanged')
    assert.equal(row.updated_at, before.updated_at)
    assert.deepEqual((await api('GET', `/model-layer/${hash}`)).body.data, l)
  })

  test('POST /model-layers with the seed filter returns exactly the rank-0 layer of gpt2-base; $in, $gt, dotted and array queries are exact', async () => {
    const gpt = [1, 2, 3].map(rank => layer('gpt2-base', rank, 4, { model_layer_metadata: [{ precision: rank % 2 === 0 ? 'fp16' : 'fp32', shape: [768, 768] }] }))
    const other = [0, 1].map(rank => layer('llama-mini', rank, 2, { model_layer_metadata: [{ precision: 'int8' }, { quantized: true }] }))
    if ((await api('GET', `/model-layer/${SEED_LAYER_HASH}`)).status === 404) assert.equal((await api('POST', '/model-layer', SEED_LAYER_BODY)).status, 201)
    for (const l of [...gpt, ...other]) assert.equal((await api('POST', '/model-layer', l)).status, 201)

    const r = await api('POST', '/model-layers', SEED_LAYER_FILTER)
    assert.equal(r.status, 200, r.text)
    assert.deepEqual(r.body, { success: true, data: [SEED_LAYER_BODY] })

    const hashes = async (filter: unknown): Promise<string[]> => {
      const res = await api('POST', '/model-layers', filter)
      assert.equal(res.status, 200, res.text)
      return res.body.data.map((d: any) => d.model_layer_hash)
    }
    const h = (ls: Array<Record<string, unknown>>): string[] => ls.map(l => l.model_layer_hash as string)
    assert.deepEqual(await hashes({ model_asset_id: 'gpt2-base', model_layer_rank: { $gt: 1 } }), h(gpt.slice(1)), '$gt')
    assert.deepEqual(await hashes({ model_asset_id: { $in: ['llama-mini', 'nope'] } }), h(other), '$in')
    assert.deepEqual(await hashes({ model_asset_id: 'gpt2-base', 'model_layer_metadata.precision': 'fp32' }), h([gpt[0], gpt[2]]), 'dotted path through an array of objects')
    assert.deepEqual(await hashes({ model_layer_metadata: { $elemMatch: { quantized: true } } }), h(other), '$elemMatch')
    assert.deepEqual(await hashes({ 'model_layer_metadata.shape': [768, 768], model_layer_rank: { $ne: 2 } }), h([gpt[0], gpt[2]]), 'array value equality')
    assert.deepEqual(await hashes({ model_world_size: 2, model_layer_rank: { $in: [1] } }), h([other[1]]), 'several conditions')
    assert.deepEqual(await hashes({ model_layer_hash: SEED_LAYER_HASH }), [SEED_LAYER_HASH])
    assert.deepEqual(await hashes({ model_asset_id: 'nothing-like-this' }), [])
    const limited = await api('POST', '/model-layers?limit=2', {})
    assert.equal(limited.body.data.length, 2)
  })
})

describe('registries on disk', () => {
  test('documents survive closing and reopening the database file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bm-registries-'))
    const path = join(dir, 'agent.db')
    let server = await startServer(path)
    const api = client(() => server)
    try {
      const created = await api('POST', '/split-runner', SEED_RUNNER_BODY)
      assert.equal(created.status, 201, created.text)
      const id = created.body.data.id
      assert.equal((await api('PUT', `/split-runner/${id}`, SEED_RUNNER_UPDATE)).status, 200)
      assert.equal((await api('POST', '/model-layer', SEED_LAYER_BODY)).status, 201)
      assert.equal((await api('PUT', `/model-layer/${SEED_LAYER_HASH}`, SEED_LAYER_UPDATE)).status, 200)
      const runner = (await api('GET', `/split-runner/${id}`)).body.data
      const layerBefore = (await api('GET', `/model-layer/${SEED_LAYER_HASH}`)).body.data
      await stopServer(server)

      server = await startServer(path)
      assert.deepEqual((await api('GET', `/split-runner/${id}`)).body.data, runner)
      assert.deepEqual((await api('GET', `/model-layer/${SEED_LAYER_HASH}`)).body.data, layerBefore)
      assert.deepEqual((await api('POST', '/split-runners', { 'split_runner_metadata.version': '2.0', split_runner_tags: { $in: ['auto-scaled'] } })).body.data, [runner])
      assert.deepEqual((await api('POST', '/model-layers', SEED_LAYER_FILTER)).body.data, [layerBefore])
      assert.deepEqual(JSON.parse(runnerRow(server.db, id)!.doc).cluster_k8s_config, KUBECONFIG, 'the kubeconfig too')
      assertError(await api('POST', '/model-layer', SEED_LAYER_BODY), 409, 'conflict')
    } finally {
      await stopServer(server)
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
