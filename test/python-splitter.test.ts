/**
 * Python splitters (issue 17) on a real agent process: `--splitter NAME=python:PATH.py` runs the program in a
 * virtual environment of its own with the seed's Python SDK (sdk/python, made once per SDK and requirements
 * in the machine's cache, then reused), through the same split-task lifecycle, status updates, layer
 * registration and token scoping as the TypeScript splitters.
 *
 * - The seed's own sample class and entrypoint (test/fixtures/python-splitters/seed_sample) run unchanged.
 * - test/fixtures/python-splitters/sdk_splitter.py is the twin of test/fixtures/sdk-splitter.ts (the TypeScript
 *   SDK's fixture): every mode is run through both, and the outcomes (task status, progress, message, error,
 *   result, the registry's records, what the task token may and may not do) must be the same.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { pythonMissing } from './helpers/python.ts'
import { AgentProcess, stopAll, until } from './helpers/agents.ts'

const TS_SPLITTER = fileURLToPath(new URL('./fixtures/sdk-splitter.ts', import.meta.url))
const PY_SPLITTER = fileURLToPath(new URL('./fixtures/python-splitters/sdk_splitter.py', import.meta.url))
const SEED_SAMPLE = fileURLToPath(new URL('./fixtures/python-splitters/seed_sample/my_splitter_entrypoint.py', import.meta.url))

const missing = pythonMissing()

async function finished (agent: AgentProcess, id: string, timeoutMs = 120_000): Promise<any> {
  return await until(async () => {
    const t = (await agent.api(`/tasks/${id}`)).body.data
    return t.status === 'complete' || t.status === 'failed' ? t : undefined
  }, `task ${id} to finish`, timeoutMs, 200)
}

describe(missing === false ? 'Python splitters on the seed\'s SDK, run by the agent in their own environment' : `Python splitters: skipped, ${missing}`, { skip: missing, timeout: 900_000 }, () => {
  let agent: AgentProcess
  let files: http.Server
  let base: string
  // one file per language: each registers its own layer (the same MD5 twice would be a 409 for the second)
  const payloads: Record<string, Buffer> = { ts: randomBytes(5 * 1024 * 1024 + 7), py: randomBytes(5 * 1024 * 1024 + 11) }

  const run = async (image: string, mode: string, file = 'py', timeoutMs?: number): Promise<any> => {
    const start = await agent.api('/start_model_split_job', {
      method: 'POST',
      body: { task_data: { model_name: `fixture-${file}`, model_download_url: `${base}/models/${file}.bin`, world_size: 2, model_split_config: { mode } }, container_image: image, storage_size: '1Gi' }
    })
    assert.equal(start.status, 201, JSON.stringify(start.body))
    return await finished(agent, start.body.task_id, timeoutMs)
  }
  const both = async (mode: string): Promise<{ ts: any, py: any }> => {
    const [ts, py] = await Promise.all([run('test/sdk-splitter', mode, 'ts'), run('test/py-sdk-splitter', mode, 'py')])
    return { ts, py }
  }

  before(async () => {
    files = http.createServer((req, res) => {
      const m = /^\/models\/(ts|py)\.bin$/.exec(req.url ?? '')
      if (m != null) res.end(payloads[m[1]])
      else res.writeHead(404).end()
    })
    await new Promise<void>(resolve => files.listen(0, '127.0.0.1', resolve))
    base = `http://127.0.0.1:${(files.address() as AddressInfo).port}`
    agent = await AgentProcess.start({
      name: 'py-splits',
      extra: ['--splitter', `test/sdk-splitter=${TS_SPLITTER}`, '--splitter', `test/py-sdk-splitter=python:${PY_SPLITTER}`, '--splitter', `seed-sample=python:${SEED_SAMPLE}`]
    })
  })
  after(async () => {
    await stopAll([agent])
    files.close()
  })

  test('the seed\'s sample class and entrypoint run unchanged: the task completes with finish()\'s result', async () => {
    // the first Python task makes the environment (pip installs the SDK): minutes on a fresh machine
    const t = await run('seed-sample', 'ok', 'py', 600_000)
    assert.equal(t.status, 'complete', `${t.error as string}\n${readFileSync(join(agent.dir, 'tasks', t.task_id, 'splitter.log'), 'utf8')}`)
    assert.equal(t.runner, 'local')
    assert.equal(t.progress, 1)
    assert.equal(t.message, 'done')
    assert.deepEqual(t.result, { model_plan_data: '' })
  })

  test('the same task through the TypeScript and the Python SDK: the same status, result and registry records', async () => {
    const { ts, py } = await both('ok')
    for (const [lang, t] of Object.entries({ ts, py })) {
      assert.equal(t.status, 'complete', `${lang}: ${t.error as string}`)
      const md5 = createHash('md5').update(payloads[lang]).digest('hex')
      const r = t.result
      // FileDownloader fetched every byte; LayerHash is the file's MD5
      assert.equal(r.md5, md5, lang)
      assert.equal(createHash('md5').update(readFileSync(r.path)).digest('hex'), md5, lang)
      // ModelLayerClient: created, read back, found by a Mongo-style query; a second create is 409
      assert.equal(r.created.model_layer_hash, md5, lang)
      assert.equal(r.again.model_asset_id, `fixture-${lang}`, lang)
      assert.deepEqual(r.found, [md5], lang)
      assert.equal(r.duplicate, 409, lang)
      assert.deepEqual(r.blocks, [], lang)
      // the task token may register layers, not delete them
      assert.equal(r.deleteStatus, 401, lang)
    }
    // field for field, the two tasks and what they registered differ only where their inputs do
    const same = (t: any, lang: string): object => ({
      status: t.status,
      progress: t.progress,
      message: t.message,
      error: t.error,
      resultKeys: Object.keys(t.result).sort(),
      createdKeys: Object.keys(t.result.created).sort(),
      layer: { ...t.result.again, model_layer_hash: lang, model_asset_id: lang, model_layer_public_url: lang, created_at: null, updated_at: null, createdAt: null, updatedAt: null },
      found: t.result.found.length,
      duplicate: t.result.duplicate,
      deleteStatus: t.result.deleteStatus
    })
    assert.deepEqual(same(py, 'x'), same(ts, 'x'))
    for (const lang of ['ts', 'py']) {
      const md5 = createHash('md5').update(payloads[lang]).digest('hex')
      const stored = await agent.api(`/model-layer/${md5}`)
      assert.equal(stored.status, 200, lang)
      assert.equal(stored.body.data.model_component_registry_uri, 'fixture-stage:1')
    }
  })

  test('failing begin, raising main, failing finish, exiting silently: the same failures from both SDKs', async () => {
    const cases: Array<[string, (t: any) => void]> = [
      ['fail-begin', t => { assert.equal(t.error, 'begin: no model here') }],
      ['throw-main', t => { assert.match(t.error, /^error: [\s\S]*main exploded/) }],
      ['fail-finish', t => { assert.equal(t.error, 'finish: could not write the plan') }],
      ['exit-silently', t => { assert.match(t.error, /^splitter exited \(0\) without reporting completion/) }]
    ]
    for (const [mode, check] of cases) {
      const { ts, py } = await both(mode)
      for (const t of [ts, py]) {
        assert.equal(t.status, 'failed', `${mode}: ${JSON.stringify(t)}`)
        assert.equal(t.result, null, mode)
        check(t)
      }
      // the TypeScript error carries "Error: main exploded" and its stack, the Python one the traceback ending in "RuntimeError: main exploded"
      if (mode !== 'throw-main') assert.equal(py.error.split('\n')[0], ts.error.split('\n')[0], mode)
      else assert.match(py.error, /RuntimeError: main exploded/)
    }
  })

  test('a Python splitter\'s task token is refused once its task has ended', async () => {
    const t = await run('test/py-sdk-splitter', 'ok', 'py')
    // (the layer exists from the previous test: this run fails at its create with a 409)
    assert.ok(t.status === 'complete' || t.status === 'failed')
    const token = readFileSync(join(agent.dir, 'tasks', t.task_id, 'output', 'token'), 'utf8')
    assert.ok(token.length > 20)
    const late = await agent.api(`/tasks/${t.task_id as string}`, { method: 'PUT', body: { status: 'complete', result: { late: true } }, token })
    assert.equal(late.status, 401)
    const layer = await agent.api('/model-layer', { method: 'POST', body: { model_layer_hash: 'f'.repeat(32), model_asset_id: 'late', model_component_registry_uri: 'late:1', model_layer_public_url: 'file:///late', model_layer_metadata: [], model_layer_rank: 0, model_world_size: 1 }, token })
    assert.equal(layer.status, 401)
    assert.equal((await agent.api(`/tasks/${t.task_id as string}`)).body.data.status, t.status)
  })
})
