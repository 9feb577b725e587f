// External systems and init processes, with real processes and sockets.
//
// vLLM cannot run on this machine (no GPU, no downloads), so an
// OpenAI-compatible fixture server (test/fixtures/openai-server.ts), run as its
// own process, stands in for it: ExternalBackend proxies to it through a real
// node:http server, and startInitProcess starts it next to a "block".
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import http from 'node:http'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { ExternalBackend, ExternalError } from '../agent/openai/external.ts'
import type { ExternalTarget } from '../agent/openai/external.ts'
import { InitProcessError, freeLoopbackPort, startInitProcess } from '../agent/blocks/init-process.ts'
import { until } from './helpers/agents.ts'

const FIXTURE = fileURLToPath(new URL('./fixtures/openai-server.ts', import.meta.url))
const INIT_MODULE = fileURLToPath(new URL('../agent/blocks/init-process.ts', import.meta.url))
const PUBLIC = 'my-block'

/** The fixture server as a real process. */
interface Fixture { url: string, pid: number, child: ChildProcess, stop: () => Promise<void> }

async function startFixture (args: string[] = []): Promise<Fixture> {
  const child = spawn(process.execPath, [FIXTURE, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })
  const first = await new Promise<string>((resolve, reject) => {
    lines.once('line', resolve)
    child.once('exit', code => { reject(new Error(`fixture exited (${code}) before printing its URL`)) })
  })
  lines.close()
  const { url, pid } = JSON.parse(first) as { url: string, pid: number }
  const stop = async (): Promise<void> => {
    if (child.exitCode != null || child.signalCode != null) return
    const done = new Promise(resolve => child.once('exit', resolve))
    child.kill('SIGTERM')
    await done
  }
  return { url, pid, child, stop }
}

async function stats (f: Fixture): Promise<{ requests: number, aborted: number }> {
  return await (await fetch(`${f.url}/stats`)).json() as { requests: number, aborted: number }
}

/** A real node:http server whose handler hands each POST to `backend.forward`, as the agent's /v1 route would. */
interface Proxy { url: string, results: Array<{ status: number, streamed: boolean }>, close: () => Promise<void> }

async function startProxy (backend: ExternalBackend): Promise<Proxy> {
  const results: Proxy['results'] = []
  const server = http.createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>
      const gone = new AbortController()
      res.on('close', () => { if (!res.writableFinished) gone.abort() })
      backend.forward(req.url as '/v1/chat/completions', body, PUBLIC, res, gone.signal)
        .then(r => { results.push(r) }, (err: Error) => { results.push({ status: -1, streamed: false }); res.destroy(err) })
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  return {
    url: `http://127.0.0.1:${port}`,
    results,
    close: async () => {
      server.closeAllConnections()
      await new Promise(resolve => server.close(resolve))
    }
  }
}

async function post (url: string, body: unknown): Promise<{ status: number, type: string, text: string }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  return { status: res.status, type: res.headers.get('content-type') ?? '', text: await res.text() }
}

/** SSE text → the data of each event, in order (each event must be exactly one data line). */
function events (text: string): string[] {
  assert.ok(text.endsWith('\n\n'), 'the stream ends with a complete event')
  return text.slice(0, -2).split('\n\n').map(e => {
    assert.match(e, /^data: [^\n]*$/, 'one data line per event')
    return e.slice(6)
  })
}

function isGone (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return false
  } catch {
    return true
  }
}

async function deadPort (): Promise<number> {
  return await freeLoopbackPort()
}

function chat (content: string, over: Record<string, unknown> = {}): Record<string, unknown> {
  return { model: PUBLIC, messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content }], ...over }
}

describe('ExternalBackend against an OpenAI-compatible server in its own process', () => {
  let fixture: Fixture
  let backend: ExternalBackend
  let proxy: Proxy
  const target = (f: Fixture, over: Partial<ExternalTarget> = {}): ExternalTarget => ({ url: f.url, model: 'fixture-model', ...over })

  before(async () => {
    fixture = await startFixture()
    backend = new ExternalBackend(target(fixture))
    proxy = await startProxy(backend)
  })
  after(async () => {
    await proxy?.close()
    await fixture?.stop()
  })

  test('health: a live server passes (with or without /v1 in the URL)', async () => {
    await backend.health()
    await new ExternalBackend(target(fixture, { url: `${fixture.url}/v1/` })).health()
    await new ExternalBackend(target(fixture, { healthPath: '/health' })).health()
  })

  test('health: a dead port is unreachable; a non-2xx answer is unhealthy', async () => {
    const port = await deadPort()
    await assert.rejects(new ExternalBackend({ url: `http://127.0.0.1:${port}`, model: 'x' }).health(), (err: unknown) => {
      assert.ok(err instanceof ExternalError)
      assert.equal(err.reason, 'unreachable')
      assert.equal(err.name, 'ExternalError')
      assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${port}`))
      assert.match(err.message, /ECONNREFUSED/)
      return true
    })
    await assert.rejects(new ExternalBackend(target(fixture, { healthPath: '/nowhere' })).health(), (err: unknown) => {
      assert.ok(err instanceof ExternalError)
      assert.equal(err.reason, 'unhealthy')
      assert.match(err.message, /answered 404/)
      return true
    })
  })

  test('chat, not streamed: the fixture gets its own model name, the client sees the block id', async () => {
    // the fixture 404s any model but its own, so success proves the request was rewritten
    const r = await post(`${proxy.url}/v1/chat/completions`, chat('hello there world', { max_tokens: 3 }))
    assert.equal(r.status, 200, r.text)
    assert.match(r.type, /application\/json/)
    const body = JSON.parse(r.text)
    assert.equal(body.model, PUBLIC)
    assert.equal(body.object, 'chat.completion')
    assert.equal(body.choices[0].message.content, 'echo: hello there')
    assert.equal(body.choices[0].finish_reason, 'length')
    assert.deepEqual(body.usage, { prompt_tokens: 3, completion_tokens: 3, total_tokens: 6 })
    assert.deepEqual(proxy.results.at(-1), { status: 200, streamed: false })
  })

  test('text completion, not streamed', async () => {
    const r = await post(`${proxy.url}/v1/completions`, { model: PUBLIC, prompt: 'the boats sail' })
    assert.equal(r.status, 200, r.text)
    const body = JSON.parse(r.text)
    assert.equal(body.model, PUBLIC)
    assert.equal(body.object, 'text_completion')
    assert.equal(body.choices[0].text, 'echo: the boats sail')
    assert.equal(body.choices[0].finish_reason, 'stop')
  })

  test('chat, streamed: separate events, model rewritten in each, usage, then [DONE]', async () => {
    const r = await post(`${proxy.url}/v1/chat/completions`, chat('hello there world', { stream: true, stream_options: { include_usage: true } }))
    assert.equal(r.status, 200, r.text)
    assert.match(r.type, /^text\/event-stream/)
    const data = events(r.text)
    // role chunk, 4 words, finish chunk, usage chunk, [DONE]
    assert.equal(data.length, 8, r.text)
    assert.equal(data.at(-1), '[DONE]')
    const chunks = data.slice(0, -1).map(d => JSON.parse(d))
    for (const c of chunks) assert.equal(c.model, PUBLIC)
    assert.equal(chunks.map(c => c.choices[0]?.delta?.content ?? '').join(''), 'echo: hello there world')
    assert.deepEqual(chunks.slice(1, 5).map(c => c.choices[0].delta.content), ['echo:', ' hello', ' there', ' world'])
    assert.equal(chunks[5].choices[0].finish_reason, 'stop')
    assert.deepEqual(chunks[6].choices, [])
    assert.deepEqual(chunks[6].usage, { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 })
    assert.deepEqual(proxy.results.at(-1), { status: 200, streamed: true })
  })

  test('text completion, streamed', async () => {
    const r = await post(`${proxy.url}/v1/completions`, { model: PUBLIC, prompt: 'a b', stream: true })
    assert.equal(r.status, 200, r.text)
    const data = events(r.text)
    assert.equal(data.at(-1), '[DONE]')
    const chunks = data.slice(0, -1).map(d => JSON.parse(d))
    assert.ok(chunks.every(c => c.model === PUBLIC))
    assert.equal(chunks.map(c => c.choices[0].text).join(''), 'echo: a b')
  })

  test('upstream errors pass through with their status and OpenAI-shaped body', async () => {
    const locked = await startFixture(['--api-key', 'sekret'])
    const withoutKey = await startProxy(new ExternalBackend(target(locked)))
    const withKey = await startProxy(new ExternalBackend(target(locked, { apiKey: 'sekret' })))
    const wrongModel = await startProxy(new ExternalBackend(target(fixture, { model: 'not-served' })))
    try {
      const denied = await post(`${withoutKey.url}/v1/chat/completions`, chat('hi'))
      assert.equal(denied.status, 401)
      assert.equal(JSON.parse(denied.text).error.code, 'invalid_api_key')
      const allowed = await post(`${withKey.url}/v1/chat/completions`, chat('hi'))
      assert.equal(allowed.status, 200, allowed.text)
      assert.equal(JSON.parse(allowed.text).choices[0].message.content, 'echo: hi')
      await assert.rejects(new ExternalBackend(target(locked)).health(), (err: unknown) => err instanceof ExternalError && err.reason === 'unhealthy' && /401/.test(err.message))
      await new ExternalBackend(target(locked, { apiKey: 'sekret' })).health()
      const missing = await post(`${wrongModel.url}/v1/chat/completions`, chat('hi'))
      assert.equal(missing.status, 404)
      assert.equal(JSON.parse(missing.text).error.code, 'model_not_found')
      const bad = await post(`${proxy.url}/v1/chat/completions`, { model: PUBLIC, messages: 'nope' })
      assert.equal(bad.status, 400)
      assert.equal(JSON.parse(bad.text).error.param, 'messages')
    } finally {
      await Promise.all([withoutKey.close(), withKey.close(), wrongModel.close()])
      await locked.stop()
    }
  })

  test('an unreachable upstream gives 502 upstream_unreachable', async () => {
    const dead = await startProxy(new ExternalBackend({ url: `http://127.0.0.1:${await deadPort()}`, model: 'x' }))
    try {
      const r = await post(`${dead.url}/v1/chat/completions`, chat('hi'))
      assert.equal(r.status, 502)
      const body = JSON.parse(r.text)
      assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type'])
      assert.equal(body.error.type, 'server_error')
      assert.equal(body.error.code, 'upstream_unreachable')
      assert.equal(body.error.param, null)
      assert.match(body.error.message, /ECONNREFUSED/)
    } finally {
      await dead.close()
    }
  })

  test('a client that disconnects mid-stream aborts the upstream request', async () => {
    const slow = await startFixture(['--delay-ms', '100'])
    const slowProxy = await startProxy(new ExternalBackend(target(slow)))
    try {
      const many = Array.from({ length: 200 }, (_, i) => `w${i}`).join(' ')
      const payload = JSON.stringify(chat(many, { stream: true, max_tokens: 200 }))
      // read two events (so the proxy streams rather than buffers), then hang up
      await new Promise<void>((resolve, reject) => {
        const req = http.request(`${slowProxy.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' } }, res => {
          assert.equal(res.statusCode, 200)
          let text = ''
          res.on('data', (c: Buffer) => {
            text += c.toString('utf8')
            if (text.split('\n\n').length > 2) { req.destroy(); resolve() }
          })
          res.on('end', () => { reject(new Error('the stream ended before the client hung up: the proxy buffered it')) })
        })
        req.on('error', err => { if (!req.destroyed) reject(err) })
        req.end(payload)
      })
      const s = await until(async () => { const v = await stats(slow); return v.aborted >= 1 ? v : null }, 'the fixture to see its request aborted', 10_000)
      assert.equal(s.requests, 1)
      assert.equal(s.aborted, 1)
      await until(() => slowProxy.results.length > 0, 'forward to return', 10_000)
      assert.deepEqual(slowProxy.results[0], { status: 200, streamed: true })
    } finally {
      await slowProxy.close()
      await slow.stop()
    }
  })

  test('answers over the bounds are refused with a clear error', async () => {
    // an in-process upstream that answers far too much
    const big = http.createServer((req, res) => {
      req.resume()
      req.on('end', () => {
        if (req.url === '/v1/completions') {
          res.writeHead(200, { 'content-type': 'text/event-stream' })
          res.write(`data: {"model":"x","choices":[]}\n\ndata: ${'x'.repeat(2 * 1024 * 1024)}`)
          res.end()
        } else {
          res.writeHead(200, { 'content-type': 'application/json' })
          const piece = Buffer.alloc(1024 * 1024, 'a')
          for (let i = 0; i < 17; i++) res.write(piece)
          res.end()
        }
      })
    })
    await new Promise<void>(resolve => big.listen(0, '127.0.0.1', resolve))
    const bigProxy = await startProxy(new ExternalBackend({ url: `http://127.0.0.1:${(big.address() as AddressInfo).port}`, model: 'x' }))
    try {
      const r = await post(`${bigProxy.url}/v1/chat/completions`, chat('hi'))
      assert.equal(r.status, 502)
      assert.equal(JSON.parse(r.text).error.code, 'upstream_response_too_large')
      const s = await post(`${bigProxy.url}/v1/completions`, { model: PUBLIC, prompt: 'hi', stream: true })
      assert.equal(s.status, 200)
      const data = events(s.text)
      assert.equal(data.length, 2)
      assert.equal(JSON.parse(data[0]).model, PUBLIC)
      assert.equal(JSON.parse(data[1]).error.code, 'upstream_event_too_large')
    } finally {
      await bigProxy.close()
      big.closeAllConnections()
      await new Promise(resolve => big.close(resolve))
    }
  })
})

describe('init processes: a third-party system started next to a block', () => {
  let logDir: string
  before(() => { logDir = mkdtempSync(join(tmpdir(), 'bm-init-')) })
  after(() => { rmSync(logDir, { recursive: true, force: true }) })

  test('starts the fixture server, waits until ready, serves, and stop() ends it', async () => {
    const ip = await startInitProcess({
      command: 'node',
      args: [FIXTURE, '--ready-after-ms', '500'],
      env: {},
      readiness: '/health',
      timeoutMs: 20_000
    }, { logDir })
    try {
      assert.match(ip.url, /^http:\/\/127\.0\.0\.1:\d+$/)
      assert.equal(ip.url, `http://127.0.0.1:${ip.port}`)
      const models = await (await fetch(`${ip.url}/v1/models`)).json() as { data: Array<{ id: string }> }
      assert.deepEqual(models.data.map(m => m.id), ['fixture-model'])
      // the block can proxy to it
      await new ExternalBackend({ url: ip.url, model: 'fixture-model' }).health()
      // its stdout went to the log file named after its pid (no --port: it took env PORT)
      const printed = JSON.parse(readFileSync(join(logDir, `init-${ip.pid}.log`), 'utf8').split('\n')[0]) as { url: string, pid: number }
      assert.equal(printed.url, ip.url)
      assert.equal(printed.pid, ip.pid)
    } finally {
      await ip.stop()
    }
    assert.ok(isGone(ip.pid), 'the process is gone after stop()')
    const exit = await ip.exited
    assert.equal(exit.code, 0, 'the fixture exits 0 on SIGTERM')
    await ip.stop() // idempotent
  })

  test('${PORT} is substituted in args, env and readiness', async () => {
    const ip = await startInitProcess({
      command: 'node',
      args: [FIXTURE, '--port', '${PORT}', '--model', 'm-${PORT}'],
      env: { PORT: '1', GREETING: 'port ${PORT}' },
      readiness: 'http://127.0.0.1:${PORT}/health',
      timeoutMs: 20_000
    }, { logDir })
    try {
      const printed = JSON.parse(readFileSync(join(logDir, `init-${ip.pid}.log`), 'utf8').split('\n')[0]) as { url: string }
      assert.equal(printed.url, ip.url)
      const models = await (await fetch(`${ip.url}/v1/models`)).json() as { data: Array<{ id: string }> }
      assert.equal(models.data[0].id, `m-${ip.port}`)
    } finally {
      await ip.stop()
    }
  })

  test('the environment is the spec env over a minimal one, with PORT set', async () => {
    const out = join(logDir, 'env.json')
    process.env.BM_TEST_SECRET = 'must-not-leak'
    try {
      const script = `require('fs').writeFileSync(${JSON.stringify(out)}, JSON.stringify(process.env)); require('http').createServer((q, s) => s.end('ok')).listen(Number(process.env.PORT), '127.0.0.1')`
      const ip = await startInitProcess({ command: 'node', args: ['-e', script], env: { GREETING: 'port ${PORT}' }, readiness: '/', timeoutMs: 20_000 }, {})
      await ip.stop()
      const env = JSON.parse(readFileSync(out, 'utf8')) as Record<string, string>
      assert.equal(env.PORT, String(ip.port))
      assert.equal(env.GREETING, `port ${ip.port}`)
      assert.equal(env.PATH, process.env.PATH)
      assert.equal(env.BM_TEST_SECRET, undefined)
    } finally {
      delete process.env.BM_TEST_SECRET
    }
  })

  test('a command that exits at once → exited_early, with its exit code and last log lines', async () => {
    await assert.rejects(startInitProcess({
      command: 'node',
      args: ['-e', 'console.error("cannot load weights"); process.exit(3)'],
      env: {},
      readiness: '/health',
      timeoutMs: 20_000
    }, { logDir }), (err: unknown) => {
      assert.ok(err instanceof InitProcessError)
      assert.equal(err.reason, 'exited_early')
      assert.equal(err.name, 'InitProcessError')
      assert.match(err.message, /exited with code 3/)
      assert.match(err.message, /cannot load weights/)
      assert.ok(err.pid != null && isGone(err.pid))
      return true
    })
  })

  test('a command that is not there → spawn_failed', async () => {
    await assert.rejects(startInitProcess({ command: 'blockmesh-no-such-command', args: [], env: {}, readiness: '/', timeoutMs: 1000 }, { logDir }),
      (err: unknown) => err instanceof InitProcessError && err.reason === 'spawn_failed' && /blockmesh-no-such-command/.test(err.message))
  })

  test('a process that never becomes ready → not_ready, and it is killed', async () => {
    await assert.rejects(startInitProcess({
      command: 'node',
      args: ['-e', 'setInterval(() => {}, 1000)'],
      env: {},
      readiness: '/health',
      timeoutMs: 1000
    }, { logDir }), (err: unknown) => {
      assert.ok(err instanceof InitProcessError)
      assert.equal(err.reason, 'not_ready')
      assert.match(err.message, /within 1000 ms/)
      assert.ok(err.pid != null)
      assert.ok(isGone(err.pid), 'the process was killed')
      return true
    })
  })

  test('aborting the start kills the process and rejects with the signal reason', async () => {
    const pidFile = join(logDir, 'abort.pid')
    const ac = new AbortController()
    const started = startInitProcess({
      command: 'node',
      args: ['-e', `require('fs').writeFileSync(${JSON.stringify(pidFile)}, String(process.pid)); setInterval(() => {}, 1000)`],
      env: {},
      readiness: '/health',
      timeoutMs: 60_000
    }, { logDir, signal: ac.signal })
    const pid = await until(() => { try { return Number(readFileSync(pidFile, 'utf8')) } catch { return null } }, 'the process to write its pid', 10_000)
    ac.abort(new Error('block deleted'))
    await assert.rejects(started, /block deleted/)
    assert.ok(isGone(pid))
  })

  test('stop() also ends what the process started (its process group)', async () => {
    const pidFile = join(logDir, 'grandchild.pid')
    const script = join(logDir, 'parent.mjs')
    writeFileSync(script, `
      import { spawn } from 'node:child_process'
      import { writeFileSync } from 'node:fs'
      import http from 'node:http'
      const worker = spawn(process.execPath, ['-e', 'process.on("SIGTERM", () => {}); setInterval(() => {}, 1000)'], { stdio: 'ignore' })
      writeFileSync(${JSON.stringify(pidFile)}, String(worker.pid))
      http.createServer((q, s) => s.end('ok')).listen(Number(process.env.PORT), '127.0.0.1')
      process.on('SIGTERM', () => process.exit(0))
    `)
    const ip = await startInitProcess({ command: 'node', args: [script], env: {}, readiness: '/', timeoutMs: 20_000 }, { logDir })
    const worker = Number(readFileSync(pidFile, 'utf8'))
    assert.ok(!isGone(worker), 'the worker runs')
    await ip.stop(500) // the worker ignores SIGTERM: it is SIGKILLed after the grace period
    assert.ok(isGone(ip.pid))
    // the worker was adopted by PID 1, which reaps it in its own time: wait for that, bounded
    await until(() => isGone(worker), 'the worker to be gone too', 10_000)
  })

  test('an agent that exits without stop() leaves no orphan', async () => {
    const script = join(logDir, 'agent.ts')
    writeFileSync(script, `
      import { startInitProcess } from ${JSON.stringify(INIT_MODULE)}
      const ip = await startInitProcess({ command: 'node', args: [${JSON.stringify(FIXTURE)}], env: {}, readiness: '/health', timeoutMs: 20000 }, {})
      process.stdout.write(String(ip.pid) + '\\n')
      process.exit(0)
    `)
    const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (c: Buffer) => { out += c.toString('utf8') })
    const code = await new Promise(resolve => child.once('exit', resolve))
    assert.equal(code, 0)
    const pid = Number(out.trim())
    assert.ok(pid > 0, out)
    await until(() => isGone(pid), 'the init process to be gone', 10_000)
  })

  test('log files are named after the pid', () => {
    const names = readdirSync(logDir).filter(n => n.startsWith('init-'))
    assert.ok(names.length > 0)
    for (const n of names) assert.match(n, /^init-\d+\.log$/)
  })
})
