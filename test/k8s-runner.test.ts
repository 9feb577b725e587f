// The Kubernetes Job runner for split tasks (agent/tasks/k8s-runner.ts), through the real
// @kubernetes/client-node over real HTTP.
//
// No Kubernetes API server can run on this machine, so the runner talks to a small fake
// (test/fixtures/fake-k8s-api.ts) that speaks the real Kubernetes HTTP API — paths, object shapes,
// Status errors, bearer-token auth — for exactly the calls the runner makes. The Job controller is
// played by the test: it sets the Job's status with setJobStatus.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { stringify } from 'yaml'
import { KubernetesJobRunner, KubernetesRunnerError, jobNameFor, jobPhase } from '../agent/tasks/k8s-runner.ts'
import type { K8sJobPhase, K8sJobRequest } from '../agent/tasks/k8s-runner.ts'
import { startFakeK8s } from './fixtures/fake-k8s-api.ts'
import type { FakeK8s, FakeK8sRequest } from './fixtures/fake-k8s-api.ts'

const JOBS = (ns: string): string => `/apis/batch/v1/namespaces/${ns}/jobs`
const PVCS = (ns: string): string => `/api/v1/namespaces/${ns}/persistentvolumeclaims`

let fake: FakeK8s
let tmp: string
let n = 0

function request (over: Partial<K8sJobRequest> = {}): K8sJobRequest {
  const taskId = `task-${++n}a2b3c`
  return {
    taskId,
    image: 'myregistry/model-split-job:latest',
    storageSize: '2Gi',
    env: {
      TASK_ID: taskId,
      TASK_DATA: JSON.stringify({ model_name: 'gpt2', model_download_url: 'https://example.com/models/gpt2.tar.gz', world_size: 4, model_split_config: { split_strategy: 'tensor_parallel', tp_degree: 2 } }),
      TASK_STATUS_UPDATE_URL: 'http://127.0.0.1:7700/api/tasks/status',
      MODEL_LAYERS_REGISTRY_URL: 'http://127.0.0.1:7700/api/layers',
      BLOCK_DB_URL: 'http://127.0.0.1:7700/api/blocks',
      TASK_TOKEN: 'secret-token'
    },
    ...over
  }
}

function runner (over: Record<string, unknown> = {}): KubernetesJobRunner {
  return new KubernetesJobRunner({ kubeconfig: fake.kubeconfig, pollMs: 5, ...over })
}

function since (i: number): FakeK8sRequest[] {
  return fake.requests.slice(i)
}

/** Asserts that fn rejects with a KubernetesRunnerError of this reason whose message matches every pattern. */
async function rejectsWith (fn: () => Promise<unknown> | unknown, reason: string, ...patterns: RegExp[]): Promise<KubernetesRunnerError> {
  let caught: unknown
  try { await fn() } catch (err) { caught = err }
  assert.ok(caught instanceof KubernetesRunnerError, `expected KubernetesRunnerError, got ${String(caught)}`)
  assert.equal(caught.reason, reason, caught.message)
  for (const p of patterns) assert.match(caught.message, p)
  return caught
}

before(async () => {
  fake = await startFakeK8s()
  tmp = mkdtempSync(join(tmpdir(), 'blockmesh-k8s-'))
})

after(async () => {
  await fake.close()
  rmSync(tmp, { recursive: true, force: true })
})

describe('start()', () => {
  test('creates a Job with image, env, volume, labels, and a claim owned by it', async () => {
    const r = runner({ storageClassName: 'fast-ssd', ttlSeconds: 600 })
    const req = request()
    const first = fake.requests.length
    const { jobName, namespace } = await r.start(req)
    assert.equal(namespace, 'default')
    assert.equal(jobName, `blockmesh-split-${req.taskId}`)

    const posts = since(first).filter(x => x.method === 'POST')
    assert.deepEqual(posts.map(p => p.path), [JOBS('default'), PVCS('default')])
    const job = posts[0].body as any
    const pvc = posts[1].body as any

    assert.equal(job.apiVersion, 'batch/v1')
    assert.equal(job.kind, 'Job')
    assert.equal(job.metadata.name, jobName)
    const labels = { 'app.kubernetes.io/managed-by': 'blockmesh', 'blockmesh.dev/task': req.taskId }
    assert.deepEqual(job.metadata.labels, labels)
    assert.equal(job.spec.backoffLimit, 0)
    assert.equal(job.spec.ttlSecondsAfterFinished, 600)
    const pod = job.spec.template.spec
    assert.deepEqual(job.spec.template.metadata.labels, labels)
    assert.equal(pod.restartPolicy, 'Never')
    assert.equal(pod.containers.length, 1)
    const c = pod.containers[0]
    assert.equal(c.image, req.image)
    const env = Object.fromEntries((c.env as Array<{ name: string, value: string }>).map(e => [e.name, e.value]))
    assert.deepEqual(env, req.env)
    assert.deepEqual(c.volumeMounts, [{ name: 'splits', mountPath: '/mnt/splits' }])
    assert.deepEqual(pod.volumes, [{ name: 'splits', persistentVolumeClaim: { claimName: pvc.metadata.name } }])

    assert.equal(pvc.apiVersion, 'v1')
    assert.equal(pvc.kind, 'PersistentVolumeClaim')
    assert.deepEqual(pvc.spec.accessModes, ['ReadWriteOnce'])
    assert.equal(pvc.spec.resources.requests.storage, '2Gi')
    assert.equal(pvc.spec.storageClassName, 'fast-ssd')
    assert.deepEqual(pvc.metadata.labels, labels)

    // Final state in the "cluster": the claim is owned by the Job that exists there.
    const storedJob = fake.getObject('jobs', 'default', jobName)
    const storedPvc = fake.getObject('persistentvolumeclaims', 'default', pvc.metadata.name)
    assert.ok(storedJob != null && storedPvc != null)
    const owners = (storedPvc.metadata as any).ownerReferences
    assert.equal(owners.length, 1)
    assert.equal(owners[0].uid, storedJob.metadata.uid)
    assert.equal(owners[0].kind, 'Job')
    assert.equal(owners[0].apiVersion, 'batch/v1')
    assert.equal(owners[0].name, jobName)
  })

  test('storage defaults to 1Gi, no storageClassName unless given, ttl defaults to 3600', async () => {
    const first = fake.requests.length
    const req = request()
    delete req.storageSize
    await runner().start(req)
    const posts = since(first).filter(x => x.method === 'POST')
    const job = posts[0].body as any
    const pvc = posts[1].body as any
    assert.equal(pvc.spec.resources.requests.storage, '1Gi')
    assert.equal('storageClassName' in pvc.spec, false)
    assert.equal(job.spec.ttlSecondsAfterFinished, 3600)
  })

  test('namespace: the option, else the kubeconfig context\'s, else default', async () => {
    const kc = fake.kubeconfig
    kc.contexts[0].context.namespace = 'splits'
    assert.equal(new KubernetesJobRunner({ kubeconfig: kc }).namespace, 'splits')
    assert.equal(new KubernetesJobRunner({ kubeconfig: kc, namespace: 'other' }).namespace, 'other')
    const first = fake.requests.length
    const { namespace } = await new KubernetesJobRunner({ kubeconfig: kc, pollMs: 5 }).start(request())
    assert.equal(namespace, 'splits')
    assert.deepEqual(since(first).filter(x => x.method === 'POST').map(p => p.path), [JOBS('splits'), PVCS('splits')])
  })

  test('creating the same task twice → create_failed with the AlreadyExists Status message', async () => {
    const r = runner()
    const req = request()
    const { jobName } = await r.start(req)
    const err = await rejectsWith(() => r.start(req), 'create_failed', /409/, /AlreadyExists/, new RegExp(`jobs\\.batch "${jobName}" already exists`))
    assert.equal(err.httpStatus, 409)
    // The first run's Job is still there (the duplicate did not delete it).
    assert.ok(fake.getObject('jobs', 'default', jobName) != null)
  })

  test('an invalid storage size → bad_config before any request is sent', async () => {
    const r = runner()
    const first = fake.requests.length
    for (const bad of ['lots', '1GB', '-1Gi', '0', '']) {
      await rejectsWith(() => r.start(request({ storageSize: bad })), 'bad_config', /storage size/)
    }
    await rejectsWith(() => r.start(request({ taskId: 'not a label!' })), 'bad_config', /task id/)
    await rejectsWith(() => r.start(request({ image: '' })), 'bad_config', /image/)
    await rejectsWith(() => r.start(request({ env: { 'BAD=NAME': 'x' } })), 'bad_config', /environment variable/)
    assert.equal(fake.requests.length, first, 'no request may reach the API server')
  })

  test('a wrong token → api_error mentioning 401 Unauthorized', async () => {
    const kc = fake.kubeconfig
    kc.users[0].user.token = 'wrong-token'
    const r = new KubernetesJobRunner({ kubeconfig: kc })
    const first = fake.requests.length
    const err = await rejectsWith(() => r.start(request()), 'api_error', /401/, /Unauthorized/)
    assert.equal(err.httpStatus, 401)
    assert.equal(since(first).length, 1, 'the request did reach the fake')
  })

  test('a refused claim → create_failed, and the Job is deleted again', async () => {
    const r = runner()
    const req = request()
    const jobName = jobNameFor(req.taskId)
    // The API server refuses the claim (e.g. a quota or storage class rule): 422 Invalid.
    fake.setHook(rq => { if (rq.method === 'POST' && rq.path === PVCS('default')) fake.failNext(1, 422) })
    const first = fake.requests.length
    try {
      await rejectsWith(() => r.start(req), 'create_failed', /create persistentvolumeclaim/, /422/, /Invalid/)
    } finally { fake.setHook(undefined) }
    assert.deepEqual(since(first).map(x => x.method), ['POST', 'POST', 'DELETE', 'DELETE'])
    assert.equal(fake.getObject('jobs', 'default', jobName), undefined)
  })

  test('abort during start() cancels the request in flight and deletes the Job again', async () => {
    const r = runner()
    const req = request()
    const jobName = jobNameFor(req.taskId)
    const ac = new AbortController()
    // Abort while the claim's POST is at the server (after the Job was created).
    fake.setHook(rq => { if (rq.method === 'POST' && rq.path === PVCS('default')) ac.abort() })
    const first = fake.requests.length
    let err: unknown
    try {
      await r.start(req, ac.signal)
    } catch (e) { err = e } finally { fake.setHook(undefined) }
    assert.ok(err instanceof Error && err.name === 'AbortError', `rejects with AbortError, got ${String(err)}`)
    const seen = since(first).map(x => `${x.method} ${x.path}`)
    assert.deepEqual(seen, [
      `POST ${JOBS('default')}`, `POST ${PVCS('default')}`,
      `DELETE ${JOBS('default')}/${jobName}`, `DELETE ${PVCS('default')}/${jobName}-splits`
    ])
    assert.equal(fake.getObject('jobs', 'default', jobName), undefined)
  })

  test('an already aborted signal sends nothing', async () => {
    const first = fake.requests.length
    await assert.rejects(runner().start(request(), AbortSignal.abort()), { name: 'AbortError' })
    assert.equal(fake.requests.length, first)
  })

  test('an unreachable server → api_error naming the failure', async () => {
    const kc = fake.kubeconfig
    kc.clusters[0].cluster.server = 'http://127.0.0.1:1' // nothing listens on port 1
    await rejectsWith(() => new KubernetesJobRunner({ kubeconfig: kc }).start(request()), 'api_error', /create job/)
  })
})

describe('kubeconfig', () => {
  test('as a file path, as YAML text and as an object all reach the cluster', async () => {
    const yamlText = stringify(fake.kubeconfig)
    assert.match(yamlText, /current-context: fake/)
    const file = join(tmp, 'kubeconfig.yaml')
    writeFileSync(file, yamlText)
    for (const [label, kubeconfig] of [['file', file], ['yaml', yamlText], ['object', fake.kubeconfig]] as const) {
      const first = fake.requests.length
      const r = new KubernetesJobRunner({ kubeconfig, pollMs: 5 })
      const { jobName } = await r.start(request())
      assert.ok(fake.getObject('jobs', 'default', jobName) != null, `${label}: job created`)
      assert.equal(since(first).length, 2, `${label}: two requests`)
    }
  })

  test('unusable kubeconfigs → bad_config with a clear message', async () => {
    const noClusters = { ...fake.kubeconfig, clusters: [] }
    await rejectsWith(() => new KubernetesJobRunner({ kubeconfig: noClusters }), 'bad_config', /no clusters/)
    await rejectsWith(() => new KubernetesJobRunner({ kubeconfig: stringify(noClusters) }), 'bad_config', /no clusters/)
    await rejectsWith(() => new KubernetesJobRunner({ kubeconfig: join(tmp, 'missing.yaml') }), 'bad_config', /not found/)
    await rejectsWith(() => new KubernetesJobRunner({ kubeconfig: 'clusters: [\n  {' }), 'bad_config', /cannot load kubeconfig/)
    const badContext = { ...fake.kubeconfig, 'current-context': 'nope' }
    await rejectsWith(() => new KubernetesJobRunner({ kubeconfig: badContext }), 'bad_config', /current-context "nope"/)
    const plainHttp = fake.kubeconfig
    plainHttp.clusters[0].cluster['insecure-skip-tls-verify'] = false
    await rejectsWith(() => new KubernetesJobRunner({ kubeconfig: plainHttp }), 'bad_config', /plain http/)
    await rejectsWith(() => new KubernetesJobRunner({ kubeconfig: fake.kubeconfig, pollMs: 0 }), 'bad_config', /pollMs/)
  })
})

describe('follow()', () => {
  test('pending → running → succeeded, onPhase in that order', async () => {
    const r = runner()
    const { jobName } = await r.start(request())
    const seen: Array<[K8sJobPhase, string | undefined]> = []
    // The test plays the Job controller: each phase it is told about, it moves the Job on.
    const result = await r.follow(jobName, (p, msg) => {
      seen.push([p, msg])
      if (p === 'pending') fake.setJobStatus('default', jobName, { active: 1, startTime: new Date().toISOString() })
      if (p === 'running') {
        fake.setJobStatus('default', jobName, {
          succeeded: 1,
          conditions: [{ type: 'Complete', status: 'True', reason: 'CompletionsReached', message: 'Reached expected number of succeeded pods' }]
        })
      }
    })
    assert.equal(result, 'succeeded')
    assert.deepEqual(seen.map(s => s[0]), ['pending', 'running', 'succeeded'])
    const gets = fake.requests.filter(x => x.method === 'GET' && x.path === `${JOBS('default')}/${jobName}`)
    assert.ok(gets.length >= 3, 'polled with GET on the job')
  })

  test('a failed Job → failed, with the condition\'s message', async () => {
    const r = runner()
    const { jobName } = await r.start(request())
    fake.setJobStatus('default', jobName, {
      failed: 1,
      conditions: [{ type: 'Failed', status: 'True', reason: 'BackoffLimitExceeded', message: 'Job has reached the specified backoff limit' }]
    })
    const seen: Array<[K8sJobPhase, string | undefined]> = []
    const result = await r.follow(jobName, (p, msg) => seen.push([p, msg]))
    assert.equal(result, 'failed')
    assert.equal(seen.length, 1)
    assert.equal(seen[0][0], 'failed')
    assert.match(seen[0][1] ?? '', /Job has reached the specified backoff limit/)
    assert.match(seen[0][1] ?? '', /BackoffLimitExceeded/)
  })

  test('rides out transient API errors, but a deleted Job → api_error NotFound', async () => {
    const r = runner()
    const { jobName } = await r.start(request())
    fake.setJobStatus('default', jobName, { succeeded: 1 })
    fake.failNext(2, 503)
    assert.equal(await r.follow(jobName, () => {}), 'succeeded')

    await rejectsWith(() => r.follow('blockmesh-split-no-such-task', () => {}), 'api_error', /404/, /NotFound/, /jobs\.batch "blockmesh-split-no-such-task" not found/)
  })

  test('abort stops polling and deletes the Job and its claim', async () => {
    const r = runner()
    const { jobName } = await r.start(request())
    const ac = new AbortController()
    const phases: K8sJobPhase[] = []
    const first = fake.requests.length
    let err: unknown
    try {
      await r.follow(jobName, p => {
        phases.push(p)
        if (p === 'pending') ac.abort()
      }, ac.signal)
    } catch (e) { err = e }
    assert.ok(err instanceof Error && err.name === 'AbortError', `rejects with AbortError, got ${String(err)}`)
    assert.deepEqual(phases, ['pending'])
    const after = since(first)
    const del = after.filter(x => x.method === 'DELETE')
    assert.deepEqual(del.map(d => d.path), [`${JOBS('default')}/${jobName}`, `${PVCS('default')}/${jobName}-splits`])
    assert.equal(del[0].query.propagationPolicy, 'Background')
    assert.equal(fake.getObject('jobs', 'default', jobName), undefined)
    // No poll after the delete, even several poll intervals later.
    const count = fake.requests.length
    await sleep(50)
    assert.equal(fake.requests.length, count, 'polling stopped')
    assert.equal(after.filter(x => x.method === 'GET').length, 1, 'one poll, then the abort')
  })
})

describe('delete()', () => {
  test('DELETEs the Job (propagationPolicy Background) and its claim; twice is fine', async () => {
    const r = runner()
    const { jobName } = await r.start(request())
    const claim = `${jobName}-splits`
    assert.ok(fake.getObject('persistentvolumeclaims', 'default', claim) != null)
    const first = fake.requests.length
    await r.delete(jobName)
    const del = since(first).filter(x => x.method === 'DELETE')
    assert.deepEqual(del.map(d => d.path), [`${JOBS('default')}/${jobName}`, `${PVCS('default')}/${claim}`])
    assert.equal(del[0].query.propagationPolicy, 'Background')
    assert.equal(fake.getObject('jobs', 'default', jobName), undefined)
    assert.equal(fake.getObject('persistentvolumeclaims', 'default', claim), undefined)
    await r.delete(jobName) // both 404 now: already gone is not an error
  })

  test('a wrong token → api_error', async () => {
    const kc = fake.kubeconfig
    kc.users[0].user.token = 'wrong-token'
    await rejectsWith(() => new KubernetesJobRunner({ kubeconfig: kc }).delete('blockmesh-split-x'), 'api_error', /401/, /Unauthorized/)
  })
})

describe('names and phases', () => {
  test('job names are DNS-1123 labels of at most 63 characters, distinct for long task ids', () => {
    assert.equal(jobNameFor('task-1a2b3c'), 'blockmesh-split-task-1a2b3c')
    assert.equal(jobNameFor('Task_A.b'), 'blockmesh-split-task-a-b')
    const a = jobNameFor('t'.repeat(60) + 'a')
    const b = jobNameFor('t'.repeat(60) + 'b')
    for (const name of [a, b]) {
      assert.ok(name.length <= 63, name)
      assert.match(name, /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/)
    }
    assert.notEqual(a, b)
  })

  test('phase mapping', () => {
    const job = (status: object): any => ({ status })
    assert.deepEqual(jobPhase(job({})), { phase: 'pending' })
    assert.deepEqual(jobPhase(job({ active: 1 })), { phase: 'running' })
    assert.equal(jobPhase(job({ succeeded: 1 })).phase, 'succeeded')
    assert.equal(jobPhase(job({ active: 1, conditions: [{ type: 'Complete', status: 'True' }] })).phase, 'succeeded')
    assert.equal(jobPhase(job({ failed: 1 })).phase, 'failed')
    assert.equal(jobPhase(job({ conditions: [{ type: 'Failed', status: 'False' }] })).phase, 'pending')
    assert.deepEqual(jobPhase(job({ conditions: [{ type: 'Failed', status: 'True', message: 'DeadlineExceeded' }] })), { phase: 'failed', message: 'DeadlineExceeded' })
  })
})
