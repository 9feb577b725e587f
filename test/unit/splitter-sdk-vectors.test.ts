/**
 * The TypeScript splitter SDK against the shared lifecycle vectors (sdk/test-vectors/splitter-lifecycle.json),
 * the same file the Python SDK's tests check (sdk/python/tests/test_lifecycle_vectors.py): for a splitter class
 * that behaves as each case says, executeModelSplitter must PUT exactly the expected status bodies, call the
 * lifecycle methods with the expected extra data, and return the expected exit code. A real HTTP server on
 * loopback takes the status updates.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { readFileSync } from 'node:fs'
import { Context, executeModelSplitter } from '../../agent/splitter/sdk/index.ts'
import type { StepResult, TaskData } from '../../agent/splitter/sdk/index.ts'

interface Step { outcome: 'ok' | 'fail' | 'raise', data?: Record<string, unknown>, merge_extra?: boolean, error?: string }
interface Case {
  name: string
  seed_sample_class?: boolean
  behaviour: { constructor?: Step, begin?: Step, main?: Step, finish?: Step }
  server?: { refuse: number[], refuse_status: number, refuse_body: unknown }
  calls: Array<{ method: string, extra_data?: unknown }>
  expected: Array<Record<string, unknown>>
  exit_code: number
}
interface Vectors {
  task: { task_id: string, task_data: TaskData, token: string, output_dir: string }
  request: { method: string, path: string, headers: Record<string, string> }
  cases: Case[]
}

const vectors = JSON.parse(readFileSync(new URL('../../sdk/test-vectors/splitter-lifecycle.json', import.meta.url), 'utf8')) as Vectors

/** A splitter class that behaves as the case says and records its calls. */
function splitterOf (c: Case, calls: Array<{ method: string, extra_data?: unknown }>): new (ctx: Context) => any {
  const step = (method: string, s: Step | undefined, extra?: unknown): StepResult<unknown> => {
    calls.push(method === 'begin' ? { method } : { method, extra_data: extra })
    if (s == null) throw new Error(`${method} was not expected to be called`)
    if (s.outcome === 'raise') throw new Error(s.error)
    if (s.outcome === 'fail') return [false, s.error as string]
    return [true, s.merge_extra === true ? { ...(extra as object), ...s.data } : s.data]
  }
  return class {
    constructor (_ctx: Context) {
      if (c.behaviour.constructor?.outcome === 'raise') throw new Error(c.behaviour.constructor.error)
    }

    begin (): StepResult<unknown> { return step('begin', c.behaviour.begin) }
    main (extra: unknown): StepResult<unknown> { return step('main', c.behaviour.main, extra) }
    finish (extra: unknown): StepResult<unknown> { return step('finish', c.behaviour.finish, extra) as StepResult<Record<string, unknown>> }
  }
}

test('the shared lifecycle vectors hold for the TypeScript SDK', async (t) => {
  assert.ok(vectors.cases.length >= 8, 'the vector file has its cases')
  for (const c of vectors.cases) {
    await t.test(c.name, async () => {
      const bodies: Array<Record<string, unknown>> = []
      const problems: string[] = []
      const server = http.createServer((req, res) => {
        let text = ''
        req.on('data', (d: Buffer) => { text += d.toString() })
        req.on('end', () => {
          if (req.method !== vectors.request.method || req.url !== vectors.request.path) problems.push(`${req.method ?? ''} ${req.url ?? ''}`)
          for (const [k, v] of Object.entries(vectors.request.headers)) if (req.headers[k] !== v) problems.push(`header ${k}: ${String(req.headers[k])}`)
          const i = bodies.length
          bodies.push(JSON.parse(text))
          if (c.server?.refuse.includes(i) === true) res.writeHead(c.server.refuse_status, { 'content-type': 'application/json' }).end(JSON.stringify(c.server.refuse_body))
          else res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ success: true, data: {} }))
        })
      })
      await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
      try {
        const ctx = Context.fromEnv({
          TASK_ID: vectors.task.task_id,
          TASK_DATA: JSON.stringify(vectors.task.task_data),
          TASK_STATUS_UPDATE_URL: base + vectors.request.path,
          MODEL_LAYERS_REGISTRY_URL: base,
          BLOCK_DB_URL: base,
          TASK_TOKEN: vectors.task.token,
          OUTPUT_DIR: vectors.task.output_dir
        })
        const calls: Array<{ method: string, extra_data?: unknown }> = []
        const code = await executeModelSplitter(splitterOf(c, calls), ctx)
        assert.equal(code, c.exit_code)
        assert.deepEqual(calls, c.calls)
        assert.deepEqual(problems, [])
        assert.equal(bodies.length, c.expected.length, JSON.stringify(bodies))
        c.expected.forEach((want, i) => {
          const got = bodies[i]
          const { error_prefix: prefix, error_contains: contains, ...exact } = want as { error_prefix?: string, error_contains?: string[] }
          const keys = Object.keys(exact).concat(prefix != null || contains != null ? ['error'] : []).sort()
          assert.deepEqual(Object.keys(got).sort(), keys, `body ${i}: ${JSON.stringify(got)}`)
          for (const [k, v] of Object.entries(exact)) assert.deepEqual(got[k], v, `body ${i}.${k}`)
          if (prefix != null) assert.ok(String(got.error).startsWith(prefix), `body ${i}.error starts with ${prefix}: ${String(got.error)}`)
          for (const s of contains ?? []) assert.ok(String(got.error).includes(s), `body ${i}.error contains ${s}`)
        })
      } finally {
        server.close()
      }
    })
  }
})
