/**
 * The Python splitter SDK (sdk/python, seed 002's `aios_model_splitter`, issue 17): its pytest suite, run in the venv
 * scripts/python-sdk.sh makes (run by .ci/run), with s3rver — an S3-compatible server from npm, run in this process
 * on loopback — as the store for S3Manager's tests. The suite checks the lifecycle against the shared vectors in
 * sdk/test-vectors/splitter-lifecycle.json, the registry clients, FileDownloader and LayerHash against a local HTTP
 * server, and S3Manager's round trip and failures against s3rver. The tree's sdk/python comes first on PYTHONPATH,
 * so a venv installed before the SDK last changed still tests the code in the tree.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync } from 'node:fs'
import { homedir } from 'node:os'
import { join, resolve } from 'node:path'
import S3rver from 's3rver'
import { tempDir } from './helpers/agents.ts'

/** The venv with the SDK and pytest (scripts/python-sdk.sh makes it; it writes .sdk-hash once the install succeeded). */
const VENV = join(process.env.BLOCKMESH_CACHE ?? join(homedir(), '.cache', 'blockmesh'), 'py-sdk')
const PY = join(VENV, 'bin', 'python')
const noPython = existsSync(PY) && existsSync(join(VENV, '.sdk-hash')) ? false : `no Python SDK venv at ${VENV} (scripts/python-sdk.sh makes it)`
const ROOT = resolve(import.meta.dirname, '..')
/** How many tests the suite has now (it may grow, not shrink). */
const AT_LEAST = 74

describe(`the Python splitter SDK (sdk/python) passes its pytest suite${noPython !== false ? ` (skipped: ${noPython})` : ''}`, { skip: noPython, timeout: 300_000 }, () => {
  const dir = tempDir('bm-py-sdk-')
  let s3: S3rver
  let endpoint = ''

  before(async () => {
    mkdirSync(join(dir, 'store'))
    s3 = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: join(dir, 'store'), configureBuckets: [{ name: 'sdk-test', configs: [] }] })
    const addr = await s3.run()
    endpoint = `http://127.0.0.1:${addr.port}`
  })
  after(async () => { await s3?.close() })

  test('python -m pytest sdk/python/tests: every test passes, none skipped, S3Manager against s3rver', async () => {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PYTHONPATH: [join(ROOT, 'sdk', 'python'), process.env.PYTHONPATH].filter(p => p != null && p !== '').join(':'),
      BLOCKMESH_TEST_S3_ENDPOINT: endpoint,
      BLOCKMESH_TEST_S3_BUCKET: 'sdk-test',
      BLOCKMESH_TEST_S3_ACCESS_KEY: 'S3RVER',
      BLOCKMESH_TEST_S3_SECRET_KEY: 'S3RVER',
      PYTHONDONTWRITEBYTECODE: '1'
    }
    for (const k of ['TASK_ID', 'TASK_DATA', 'TASK_STATUS_UPDATE_URL', 'MODEL_LAYERS_REGISTRY_URL', 'BLOCK_DB_URL', 'TASK_TOKEN', 'OUTPUT_DIR', 'AWS_ENDPOINT_URL', 'AWS_ENDPOINT_URL_S3']) delete env[k]
    // spawned, not execFileSync: s3rver answers from this process's event loop
    const child = spawn(PY, ['-m', 'pytest', 'sdk/python/tests', '-q', '-rs', '-p', 'no:cacheprovider'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    child.stderr.on('data', (d: Buffer) => { out += d.toString() })
    const code = await new Promise<number | null>(resolve => child.once('close', c => { resolve(c) }))
    assert.equal(code, 0, `pytest exited ${String(code)}:\n${out}`)
    const summary = out.trim().split('\n').at(-1) ?? ''
    const count = (what: string): number => Number(new RegExp(`(\\d+) ${what}`).exec(summary)?.[1] ?? 0)
    assert.ok(count('passed') >= AT_LEAST, `expected at least ${AT_LEAST} tests to pass, the summary says: ${summary}\n${out}`)
    assert.equal(count('skipped'), 0, `no test may be skipped (S3 has an endpoint): ${summary}\n${out}`)
    assert.equal(count('failed') + count('error'), 0, summary)
  })
})
