/**
 * Split tasks end to end on real agent processes: the local-process runner (with a splitter written on
 * the SDK and with the built-in one) and the Kubernetes Job runner.
 *
 * No Kubernetes API server can run on this machine: the Kubernetes runner talks to a small fake
 * (test/fixtures/fake-k8s-api.ts) that speaks the real HTTP API for the calls it uses. The test plays
 * the kubelet and the Job controller: it runs the Job's container command (the built-in splitter
 * program) with the Job's environment — the claim mounted at /mnt/splits is a temporary directory
 * here — and then sets the Job's status.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { stringify } from 'yaml'
import S3rver from 's3rver'
import { AgentProcess, stopAll, tempDir, until } from './helpers/agents.ts'
import { generateModel } from '../agent/model/generate.ts'
import { PRESETS } from '../agent/model/spec.ts'
import { startFakeK8s } from './fixtures/fake-k8s-api.ts'
import type { FakeK8s } from './fixtures/fake-k8s-api.ts'
import { pythonMissing } from './helpers/python.ts'
import { PythonEnvs, parsePythonProgram } from '../agent/python/envs.ts'

const missingPython = pythonMissing()

const SDK_SPLITTER = fileURLToPath(new URL('./fixtures/sdk-splitter.ts', import.meta.url))
const BUILTIN = fileURLToPath(new URL('../agent/splitter/program.ts', import.meta.url))

async function finished (agent: AgentProcess, id: string): Promise<any> {
  return await until(async () => {
    const t = (await agent.api(`/tasks/${id}`)).body.data
    return t.status === 'complete' || t.status === 'failed' ? t : undefined
  }, `task ${id} to finish`, 120_000, 200)
}

function job (over: Record<string, unknown> = {}, config: Record<string, unknown> = {}): Record<string, unknown> {
  return { task_data: { model_name: 'fixture-model', model_download_url: 'http://127.0.0.1:1/none', world_size: 2, model_split_config: config }, container_image: 'test/sdk-splitter', storage_size: '1Gi', ...over }
}

describe('split tasks through the local-process runner', () => {
  let agent: AgentProcess
  let files: http.Server
  let fileUrl: string
  const payload = randomBytes(9 * 1024 * 1024 + 123) // more than two 4 MiB chunks
  const dir = tempDir('bm-split-tasks-')
  const tiny = generateModel({ ...PRESETS.tiny, layers: 2, seed: 21 }, join(dir, 'tiny2.onnx'))

  let s3: S3rver
  let s3Url: string

  before(async () => {
    // an S3-compatible store on loopback; the agent (and so its local splitters) gets its credentials
    s3 = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: tempDir('bm-s3-'), configureBuckets: [{ name: 'stages', configs: [] }] })
    s3Url = `http://127.0.0.1:${(await s3.run()).port}`
    process.env.AWS_ACCESS_KEY_ID = 'S3RVER'
    process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER'
    files = http.createServer((req, res) => {
      if (req.url === '/models/fixture.bin') res.end(payload)
      else res.writeHead(404).end()
    })
    await new Promise<void>(resolve => files.listen(0, '127.0.0.1', resolve))
    fileUrl = `http://127.0.0.1:${(files.address() as AddressInfo).port}/models/fixture.bin`
    agent = await AgentProcess.start({ name: 'splits', extra: ['--splitter', `test/sdk-splitter=${SDK_SPLITTER}`] })
  })
  after(async () => {
    await stopAll([agent])
    files.close()
    await s3.close()
  })

  test('a splitter written on the SDK runs begin → main → finish and its result lands on the task', async () => {
    const start = await agent.api('/start_model_split_job', { method: 'POST', body: job({ task_data: { model_name: 'fixture-model', model_download_url: fileUrl, world_size: 2, model_split_config: { mode: 'ok' } } }) })
    assert.equal(start.status, 201, JSON.stringify(start.body))
    assert.equal(start.body.success, true)
    const t = await finished(agent, start.body.task_id)
    assert.equal(t.status, 'complete', t.error)
    assert.equal(t.runner, 'local')
    assert.equal(t.progress, 1)
    assert.equal(t.message, 'done')
    const r = t.result
    assert.equal(r.fixture, true)
    // FileDownloader fetched every byte (into directories it created); LayerHash is the file's MD5
    const md5 = createHash('md5').update(payload).digest('hex')
    assert.equal(r.md5, md5)
    assert.equal(createHash('md5').update(readFileSync(r.path)).digest('hex'), md5)
    // ModelLayerClient: created, read back, found by a Mongo-style query; a second create is 409
    assert.equal(r.created.model_layer_hash, md5)
    assert.equal(r.again.model_asset_id, 'fixture-model')
    assert.deepEqual(r.found, [md5])
    assert.equal(r.duplicate, 409)
    // Blocks.query: no running block has this component and hash
    assert.deepEqual(r.blocks, [])
    // the task token may register layers, not delete them
    assert.equal(r.deleteStatus, 401)
    assert.equal((await agent.api(`/model-layer/${md5}`)).status, 200)
    // the token dies with the task
    const token = readFileSync(join(agent.dir, 'tasks', t.task_id, 'output', 'token'), 'utf8')
    assert.ok(token.length > 20)
    const late = await agent.api(`/tasks/${t.task_id as string}`, { method: 'PUT', body: { status: 'failed', error: 'late' }, token })
    assert.equal(late.status, 401)
    assert.equal((await agent.api(`/tasks/${t.task_id as string}`)).body.data.status, 'complete')
  })

  test('failure in begin, an exception in main, failure in finish: failed, with the stage and the reason', async () => {
    const cases: Array<[string, RegExp]> = [
      ['fail-begin', /^begin: no model here$/],
      ['throw-main', /^error: Error: main exploded/],
      ['fail-finish', /^finish: could not write the plan$/]
    ]
    for (const [mode, error] of cases) {
      const start = await agent.api('/start_model_split_job', { method: 'POST', body: job({ task_data: { model_name: 'fixture-model', model_download_url: fileUrl, world_size: 2, model_split_config: { mode } } }) })
      assert.equal(start.status, 201)
      const t = await finished(agent, start.body.task_id)
      assert.equal(t.status, 'failed', mode)
      assert.match(t.error, error)
      assert.equal(t.result, null)
    }
  })

  test('a splitter that exits without reporting fails the task with the exit status', async () => {
    const start = await agent.api('/start_model_split_job', { method: 'POST', body: job({}, { mode: 'exit-silently' }) })
    const t = await finished(agent, start.body.task_id)
    assert.equal(t.status, 'failed')
    assert.match(t.error, /splitter exited \(0\) without reporting completion/)
  })

  test('the built-in splitter refuses more stages than layers, and a bad download URL, with clear errors', async () => {
    const many = await agent.api('/start_model_split_job', {
      method: 'POST',
      body: { task_data: { model_name: 'tiny2', model_download_url: tiny.path, world_size: 3, model_split_config: {} }, container_image: 'blockmesh/onnx-splitter' }
    })
    assert.equal(many.status, 201)
    const t1 = await finished(agent, many.body.task_id)
    assert.equal(t1.status, 'failed')
    assert.match(t1.error, /^main: world_size 3 exceeds the model's 2 layers$/)
    const md5 = await agent.api('/start_model_split_job', {
      method: 'POST',
      body: { task_data: { model_name: 'tiny2', model_download_url: tiny.path, world_size: 2, model_split_config: { md5: '0'.repeat(32) } }, container_image: 'blockmesh/onnx-splitter' }
    })
    const t2 = await finished(agent, md5.body.task_id)
    assert.equal(t2.status, 'failed')
    assert.match(t2.error, new RegExp(`^begin: model MD5 is ${tiny.md5}, expected 0{32}`))
    const gone = await agent.api('/start_model_split_job', {
      method: 'POST',
      body: { task_data: { model_name: 'tiny2', model_download_url: fileUrl.replace('fixture.bin', 'missing.onnx'), world_size: 2, model_split_config: {} }, container_image: 'blockmesh/onnx-splitter' }
    })
    const t3 = await finished(agent, gone.body.task_id)
    assert.equal(t3.status, 'failed')
    assert.match(t3.error, /^begin: download of http:\/\/127\.0\.0\.1:\d+\/models\/missing\.onnx failed: HTTP 404/)
  })

  test('the built-in splitter\'s options are checked at the start (an unknown cost model, a misspelt option: 400 naming the field, no task); a model too small to time is balanced by bytes, a larger one by measured time, and the result says which', async () => {
    const tasksBefore = (await agent.api('/tasks')).body.data.length
    for (const [config, field] of [[{ cost: 'fastest' }, 'cost'], [{ tolernace: 1e-3 }, '(root)'], [{ balance: 'capacity' }, 'capacity'], [{ tolerance: 'x' }, 'tolerance']] as const) {
      const bad = await agent.api('/start_model_split_job', {
        method: 'POST',
        body: { task_data: { model_name: 'tiny2', model_download_url: tiny.path, world_size: 2, model_split_config: config }, container_image: 'blockmesh/onnx-splitter' }
      })
      assert.equal(bad.status, 400, JSON.stringify(bad.body))
      assert.equal(bad.body.success, false)
      assert.match(String(bad.body.error), /^invalid task_data\.model_split_config: /)
      assert.equal(bad.body.details[0].field, field, `${JSON.stringify(config)}: ${JSON.stringify(bad.body)}`)
    }
    assert.equal((await agent.api('/tasks')).body.data.length, tasksBefore, 'no task was started')
    // a model of its own: its stage layers are registered under their MD5s, which the S3 test below registers anew
    const own = generateModel({ ...PRESETS.tiny, layers: 2, seed: 23 }, join(dir, 'tiny2-cost.onnx'))
    const ok = await agent.api('/start_model_split_job', {
      method: 'POST',
      body: { task_data: { model_name: 'tiny2-cost', model_download_url: own.path, world_size: 2, model_split_config: {} }, container_image: 'blockmesh/onnx-splitter' }
    })
    const t2 = await finished(agent, ok.body.task_id)
    assert.equal(t2.status, 'complete', t2.error)
    // two layers: fewer than the probes need (agent/splitter/calibrate.ts)
    assert.deepEqual(t2.result.balance, { cost: 'params', ranges: [[0, 1], [1, 2]] })
    assert.deepEqual(t2.result.plan.stages.map((s: { layers: [number, number] }) => s.layers), [[0, 1], [1, 2]])
    // six layers: timed; the result says how the parts around the layers weighed, and the plan is cut as it says
    const six = generateModel({ ...PRESETS.tiny, layers: 6, seed: 24 }, join(dir, 'tiny6-cost.onnx'))
    const timed = await agent.api('/start_model_split_job', {
      method: 'POST',
      body: { task_data: { model_name: 'tiny6-cost', model_download_url: six.path, world_size: 2, model_split_config: { block: { maxBatch: 4 } } }, container_image: 'blockmesh/onnx-splitter' }
    })
    const t3 = await finished(agent, timed.body.task_id)
    assert.equal(t3.status, 'complete', t3.error)
    assert.equal(t3.result.balance.cost, 'measured')
    assert.ok(t3.result.balance.pre_layers >= 0 && t3.result.balance.post_layers >= 0, JSON.stringify(t3.result.balance))
    assert.deepEqual(t3.result.plan.stages.map((s: { layers: [number, number] }) => s.layers), t3.result.balance.ranges)
    assert.ok(t3.result.max_abs_diff <= 1e-4)
  })

  test('the built-in splitter uploads the stages to an S3-compatible store; the plan points there and serves', async () => {
    const start = await agent.api('/start_model_split_job', {
      method: 'POST',
      body: {
        task_data: { model_name: 'tiny2-s3', model_download_url: tiny.path, world_size: 2, model_split_config: { s3: { bucket: 'stages', prefix: 'tiny2/', endpoint: s3Url, public_url_base: `${s3Url}/stages` } } },
        container_image: 'blockmesh/onnx-splitter'
      }
    })
    const t = await finished(agent, start.body.task_id)
    assert.equal(t.status, 'complete', t.error)
    for (const st of t.result.plan.stages) {
      assert.equal(st.url, `${s3Url}/stages/tiny2/${st.model_layer_hash as string}.onnx`)
      const bytes = Buffer.from(await (await fetch(st.url)).arrayBuffer())
      assert.equal(createHash('md5').update(bytes).digest('hex'), st.model_layer_hash)
      assert.equal((await agent.api(`/model-layer/${st.model_layer_hash as string}`)).body.data.model_layer_public_url, st.url)
    }
    // deployed, each stage block downloads its file from the store (on one agent: the anti-affinity gives way)
    const deployed = await agent.api('/api/vdags/deploy', { method: 'POST', body: { task_id: t.task_id } })
    assert.equal(deployed.status, 201, JSON.stringify(deployed.body))
    await until(async () => (await agent.api('/v1/models')).body.data.some((d: any) => d.id === 'tiny2-s3-pipeline'), 'the vDAG to serve', 60_000)
    const r = await agent.api('/v1/completions', { method: 'POST', body: { model: 'tiny2-s3-pipeline', prompt: 'The harbour', max_tokens: 8, temperature: 0 } })
    assert.equal(r.status, 200, JSON.stringify(r.body))
    assert.equal(r.body.usage.completion_tokens, 8)
  })

  test('bad requests are 400 in the seed envelope and start nothing; unknown tasks are 404', async () => {
    const before = (await agent.api('/tasks')).body.data.length
    const unknown = await agent.api('/start_model_split_job', { method: 'POST', body: job({ container_image: 'nobody/splitter:1' }) })
    assert.equal(unknown.status, 400)
    assert.equal(unknown.body.success, false)
    assert.match(JSON.stringify(unknown.body), /container_image.*not a splitter program registered here.*no Kubernetes cluster is configured/)
    const bad = [
      {},
      job({ task_data: { model_name: 'x', model_download_url: fileUrl, world_size: 0, model_split_config: {} } }),
      job({ task_data: { model_name: '../etc', model_download_url: fileUrl, world_size: 2 } }),
      job({ storage_size: 'lots' }),
      job({ extra: true })
    ]
    for (const body of bad) {
      const r = await agent.api('/start_model_split_job', { method: 'POST', body })
      assert.equal(r.status, 400, JSON.stringify(body))
      assert.equal(r.body.success, false)
    }
    assert.equal((await agent.api('/start_model_split_job', { method: 'POST', body: job(), token: null })).status, 401)
    assert.equal((await agent.api('/tasks')).body.data.length, before)
    const missing = await agent.api('/tasks/task-000000000000')
    assert.equal(missing.status, 404)
    assert.equal(missing.body.success, false)
    // a splitter's update must be the documented shape
    const id = (await agent.api('/tasks')).body.data[0].task_id
    assert.equal((await agent.api(`/tasks/${id as string}`, { method: 'PUT', body: { status: 'exploded' } })).status, 400)
  })

  test('tasks survive a restart; one interrupted by it is failed with that reason', async () => {
    const hang = await agent.api('/start_model_split_job', { method: 'POST', body: job({}, { mode: 'hang' }) })
    await until(async () => (await agent.api(`/tasks/${hang.body.task_id as string}`)).body.data.message === 'hanging', 'the splitter to report progress')
    const done = (await agent.api('/tasks')).body.data.filter((t: any) => t.status === 'complete' || t.status === 'failed')
    agent.child.kill('SIGKILL')
    await new Promise(resolve => agent.child.once('exit', resolve))
    // the splitter outlives an agent killed with SIGKILL; it is this test's to stop
    process.kill(Number(readFileSync(join(agent.dir, 'tasks', hang.body.task_id, 'output', 'pid'), 'utf8')), 'SIGTERM')
    await agent.launch()
    const after = (await agent.api('/tasks')).body.data
    for (const t of done) assert.deepEqual(after.find((x: any) => x.task_id === t.task_id), t)
    const interrupted = after.find((x: any) => x.task_id === hang.body.task_id)
    assert.equal(interrupted.status, 'failed')
    assert.equal(interrupted.progress, 0.1)
    assert.match(interrupted.error, /^interrupted: the agent restarted while the task was running; start it again$/)
  })
})

describe('split tasks through the Kubernetes Job runner (fake API server: no Kubernetes here)', () => {
  let fake: FakeK8s
  let agent: AgentProcess
  const dir = tempDir('bm-split-k8s-')
  const tiny = generateModel({ ...PRESETS.tiny, layers: 2, seed: 22 }, join(dir, 'tiny2.onnx'))
  const IMAGE = 'registry.example.com/blockmesh/onnx-splitter:0.1'
  const kubeconfig = join(dir, 'kubeconfig.yaml')

  before(async () => {
    fake = await startFakeK8s()
    writeFileSync(kubeconfig, stringify({ ...fake.kubeconfig, contexts: [{ ...fake.kubeconfig.contexts[0], context: { ...fake.kubeconfig.contexts[0].context, namespace: 'splits' } }] }))
    // the Job reports to the public API URL: here "localhost", which the API accepts, unlike the agent's own 127.0.0.1 URL
    const port = await freePort()
    agent = await AgentProcess.start({ name: 'k8s', extra: ['--kubeconfig', kubeconfig, '--api-port', String(port), '--public-api-url', `http://localhost:${port}`] })
  })
  after(async () => {
    await stopAll([agent])
    await fake.close()
  })

  async function startJob (modelName: string): Promise<{ id: string, jobName: string, job: any }> {
    const start = await agent.api('/start_model_split_job', {
      method: 'POST',
      body: { task_data: { model_name: modelName, model_download_url: tiny.path, world_size: 2, model_split_config: {} }, container_image: IMAGE, storage_size: '3Gi' }
    })
    assert.equal(start.status, 201, JSON.stringify(start.body))
    const id = start.body.task_id as string
    const jobName = `blockmesh-split-${id}`
    const job = await until(() => fake.getObject('jobs', 'splits', jobName), 'the Job to be created')
    return { id, jobName, job }
  }

  test('the Job gets the image, the seed\'s environment and a volume of storage_size; the task follows it to completion', async () => {
    const { id, jobName, job } = await startJob('tiny2-k8s')
    const pod = job.spec.template.spec
    const container = pod.containers[0]
    assert.equal(container.image, IMAGE)
    const env = Object.fromEntries(container.env.map((e: any) => [e.name, e.value]))
    assert.equal(env.TASK_ID, id)
    assert.deepEqual(JSON.parse(env.TASK_DATA), { model_name: 'tiny2-k8s', model_download_url: tiny.path, world_size: 2, model_split_config: {} })
    assert.equal(env.TASK_STATUS_UPDATE_URL, `${new URL(agent.url).protocol}//localhost:${new URL(agent.url).port}/tasks/${id}`)
    assert.equal(env.MODEL_LAYERS_REGISTRY_URL, `http://localhost:${new URL(agent.url).port}`)
    assert.equal(env.BLOCK_DB_URL, env.MODEL_LAYERS_REGISTRY_URL)
    assert.ok(env.TASK_TOKEN.length > 20)
    const mount = container.volumeMounts.find((m: any) => m.mountPath === '/mnt/splits')
    assert.ok(mount != null, 'the claim is mounted at /mnt/splits')
    const volume = pod.volumes.find((v: any) => v.name === mount.name)
    const claim = fake.getObject('persistentvolumeclaims', 'splits', volume.persistentVolumeClaim.claimName) as any
    assert.equal(claim.spec.resources.requests.storage, '3Gi')
    await until(async () => (await agent.api(`/tasks/${id}`)).body.data.status === 'running', 'the task to run')
    assert.match((await agent.api(`/tasks/${id}`)).body.data.message, new RegExp(`Kubernetes Job ${jobName}`))

    // kubelet: the pod starts and runs the splitter with the Job's environment (its volume: a temp dir)
    fake.setJobStatus('splits', jobName, { active: 1, startTime: new Date().toISOString() })
    const volumeDir = tempDir('bm-pod-volume-')
    const code = await runPod(BUILTIN, { ...env, OUTPUT_DIR: volumeDir })
    assert.equal(code, 0)
    fake.setJobStatus('splits', jobName, { succeeded: 1, conditions: [{ type: 'Complete', status: 'True', reason: 'CompletionsReached', message: 'Reached expected number of succeeded pods' }] })

    const t = await finished(agent, id)
    assert.equal(t.status, 'complete', t.error)
    assert.equal(t.runner, 'kubernetes')
    assert.equal(t.result.plan.world_size, 2)
    assert.ok(t.result.max_abs_diff <= 1e-4)
    assert.ok(existsSync(join(volumeDir, 'plan.json')), 'the plan is written to the volume')
    for (const s of t.result.plan.stages) assert.equal((await agent.api(`/model-layer/${s.model_layer_hash as string}`)).status, 200)
    // the token died with the task
    const late = await agent.api(`/tasks/${id}`, { method: 'PUT', body: { status: 'failed' }, token: env.TASK_TOKEN })
    assert.equal(late.status, 401)
  })

  test(`a Python splitter's image (the seed's Dockerfile shape, examples/python-splitter) as the Job${missingPython !== false ? ` (skipped: ${missingPython})` : ''}`, { skip: missingPython, timeout: 900_000 }, async () => {
    const image = 'registry.example.com/my-onnx-splitter:0.1'
    const start = await agent.api('/start_model_split_job', {
      method: 'POST',
      body: { task_data: { model_name: 'tiny2-py', model_download_url: tiny.path, world_size: 2, model_split_config: {} }, container_image: image, storage_size: '2Gi' }
    })
    assert.equal(start.status, 201, JSON.stringify(start.body))
    const id = start.body.task_id as string
    const jobName = `blockmesh-split-${id}`
    const job = await until(() => fake.getObject('jobs', 'splits', jobName), 'the Job to be created') as any
    const container = job.spec.template.spec.containers[0]
    assert.equal(container.image, image)
    const env = Object.fromEntries(container.env.map((e: any) => [e.name, e.value]))
    // kubelet: the image's CMD (python3 my_splitter_entrypoint.py in /splitter, the SDK and the requirements
    // installed), here the example folder run with an interpreter that has what the image would have
    const entry = fileURLToPath(new URL('../examples/python-splitter/my_splitter_entrypoint.py', import.meta.url))
    const python = await new PythonEnvs().interpreter(parsePythonProgram(`python:${entry}`))
    fake.setJobStatus('splits', jobName, { active: 1, startTime: new Date().toISOString() })
    const volumeDir = tempDir('bm-pod-volume-')
    assert.equal(await runPod([python, 'my_splitter_entrypoint.py'], { ...env, OUTPUT_DIR: volumeDir }, dirname(entry)), 0)
    fake.setJobStatus('splits', jobName, { succeeded: 1, conditions: [{ type: 'Complete', status: 'True' }] })
    const t = await finished(agent, id)
    assert.equal(t.status, 'complete', t.error)
    assert.equal(t.runner, 'kubernetes')
    assert.equal(t.result.plan.world_size, 2)
    assert.ok(existsSync(join(volumeDir, 'plan.json')))
    for (const st of t.result.plan.stages) assert.equal((await agent.api(`/model-layer/${st.model_layer_hash as string}`)).status, 200)
  })

  test('a failed Job fails the task with the Job\'s reason', async () => {
    const { id, jobName } = await startJob('tiny2-fails')
    fake.setJobStatus('splits', jobName, { failed: 1, conditions: [{ type: 'Failed', status: 'True', reason: 'BackoffLimitExceeded', message: 'Job has reached the specified backoff limit' }] })
    const t = await finished(agent, id)
    assert.equal(t.status, 'failed')
    assert.match(t.error, new RegExp(`Kubernetes Job ${jobName} failed: .*BackoffLimitExceeded`))
  })

  test('a Job that succeeds without the splitter reporting fails the task, said so', async () => {
    const { id, jobName } = await startJob('tiny2-silent')
    fake.setJobStatus('splits', jobName, { succeeded: 1, conditions: [{ type: 'Complete', status: 'True' }] })
    const t = await finished(agent, id)
    assert.equal(t.status, 'failed')
    assert.match(t.error, /finished without the splitter reporting completion/)
  })

  test('a cluster that refuses the Job fails the task with the API\'s message', async () => {
    fake.failNext(1, 403)
    const start = await agent.api('/start_model_split_job', {
      method: 'POST',
      body: { task_data: { model_name: 'refused', model_download_url: tiny.path, world_size: 2, model_split_config: {} }, container_image: IMAGE }
    })
    const t = await finished(agent, start.body.task_id)
    assert.equal(t.status, 'failed')
    assert.match(t.error, /403/)
  })
})

async function freePort (): Promise<number> {
  const s = http.createServer()
  await new Promise<void>(resolve => s.listen(0, '127.0.0.1', resolve))
  const port = (s.address() as AddressInfo).port
  await new Promise(resolve => s.close(resolve))
  return port
}

/** Runs a container command as the kubelet would: the Job's environment, nothing else of ours. */
/** The kubelet's part: runs a pod's container command (a Node program, or `command` as given) with the Job's environment. */
async function runPod (program: string | string[], env: Record<string, string>, cwd?: string): Promise<number | null> {
  const [cmd, ...args] = typeof program === 'string' ? [process.execPath, program] : program
  const child = spawn(cmd, args, { env: { PATH: process.env.PATH ?? '', ...env }, cwd, stdio: ['ignore', 'ignore', 'pipe'] })
  let err = ''
  child.stderr.on('data', (d: Buffer) => { err = (err + d.toString()).slice(-4000) })
  const code = await new Promise<number | null>(resolve => child.once('exit', resolve))
  if (code !== 0) process.stderr.write(err)
  return code
}
