/**
 * A real model on a real mesh: SmolLM2-135M-Instruct (GGUF) added on one agent with `POST /api/models`
 * (progress streamed), served whole, split with `blockmesh split --model smollm2 --deploy` into 2 and 3
 * stages over three agent processes, and a broken model failing alone while the rest keeps serving.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { openSync, readSync, closeSync, writeFileSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { AgentProcess, stopAll, tempDir, until } from './helpers/agents.ts'
import { realWeights } from './helpers/weights.ts'
import { CLI_ENTRY } from '../agent/demo.ts'
import { existsSync, mkdirSync } from 'node:fs'
import { chromium } from 'playwright-core'
import { skipNamed } from './helpers/skip.ts'

const CHROMIUM = process.env.BLOCKMESH_CHROMIUM ?? '/usr/bin/chromium'
const SHOTS = join(import.meta.dirname, '..', 'test-results', 'dashboard')

const weights = realWeights('smollm2')

async function chat (agent: AgentProcess, model: string, content: string, maxTokens = 16): Promise<{ status: number, text: string, body: any }> {
  const r = await agent.api('/v1/chat/completions', { method: 'POST', body: { model, messages: [{ role: 'user', content }], max_tokens: maxTokens, temperature: 0 } })
  return { status: r.status, text: r.body?.choices?.[0]?.message?.content ?? '', body: r.body }
}

async function cli (agent: AgentProcess, args: string[]): Promise<{ code: number | null, stdout: string, stderr: string }> {
  return await new Promise(resolve => {
    const child = spawn(process.execPath, [CLI_ENTRY, ...args, '--api', agent.url, '--token', agent.token], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    child.on('close', code => { resolve({ code, stdout, stderr }) })
  })
}

const noChromium = existsSync(CHROMIUM) ? false : `Chromium is not installed at ${CHROMIUM} (.ci/run installs Debian's chromium)`
describe(skipNamed('SmolLM2 added, served and split across three agent processes', weights.skip), { skip: weights.skip }, () => {
  let a: AgentProcess, b: AgentProcess, c: AgentProcess
  const dir = tempDir('bm-real-')
  let added: any

  before(async () => {
    a = await AgentProcess.start({ name: 'a' })
    ;[b, c] = await Promise.all([AgentProcess.start({ name: 'b', bootstrap: [a.addr] }), AgentProcess.start({ name: 'c', bootstrap: [a.addr] })])
    await until(async () => (await a.peers()).length === 3, 'the mesh to form')
  })
  after(async () => { await stopAll([a, b, c]) })

  test('model add streams its progress and records what the model is', async () => {
    const res = await fetch(`${a.url}/api/models`, {
      method: 'POST',
      headers: { authorization: `Bearer ${a.token}`, 'content-type': 'application/json', accept: 'application/x-ndjson' },
      body: JSON.stringify({ source: weights.path, name: 'smollm2' })
    })
    assert.equal(res.status, 200)
    const events = (await res.text()).trim().split('\n').map(l => JSON.parse(l))
    assert.ok(events.some(e => e.type === 'progress' && e.progress.phase === 'building'), JSON.stringify(events.slice(0, 3)))
    const done = events.at(-1)
    assert.equal(done.type, 'done', JSON.stringify(done))
    added = done.component
    assert.equal(added.uri, `smollm2:${added.spec.version as string}`)
    const info = added.spec.modelInfo
    assert.equal(info.format, 'gguf')
    assert.equal(info.architecture, 'llama')
    assert.equal(info.quantization, 'Q4_1')
    assert.equal(info.vocabSize, 49152)
    assert.equal(info.contextLength, 8192)
    assert.equal(info.chatTemplate, true)
    assert.match(info.digest, /^sha256:b179c952/)
    assert.equal(added.spec.tokenizer.type, 'bundle')

    // the same file again: the conversion is cached and the component is the one already there
    const viaApi = await a.api('/api/models', { method: 'POST', body: { source: weights.path, name: 'smollm2' } })
    assert.equal(viaApi.status, 200, JSON.stringify(viaApi.body))
    assert.equal(viaApi.body.existed, true)
    const again = await cli(a, ['model', 'add', weights.path, '--name', 'smollm2', '--json'])
    assert.equal(again.code, 0, again.stderr)
    const r = JSON.parse(again.stdout)
    assert.equal(r.existed, true)
    assert.equal(r.cached, true)
    assert.equal(r.component.uri, added.uri)

    const list = await cli(a, ['model', 'list'])
    assert.equal(list.code, 0, list.stderr)
    assert.match(list.stdout, /smollm2:\S+\s+llama\s+135M\s+Q4_1\s+8192\s+49152\s+yes/)
  })

  test('served whole, it answers like an assistant, with usage from the real tokenizer', async () => {
    assert.equal((await a.api('/api/blocks', { method: 'POST', body: { id: 'smollm2', component: added.uri } })).status, 201)
    await until(async () => (await c.api('/v1/models')).body.data.some((d: any) => d.id === 'smollm2'), 'c to see smollm2', 120_000)
    const r = await chat(c, 'smollm2', 'Which city is the capital of France?', 24)
    assert.equal(r.status, 200, JSON.stringify(r.body))
    assert.match(r.text, /Paris/)
    assert.equal(r.body.choices[0].finish_reason, 'stop')
    const golden = await chat(c, 'smollm2', 'What is the capital of France?', 4)
    assert.equal(golden.body.usage.prompt_tokens, 37) // the ChatML prompt llama.cpp tokenizes to 37 tokens (test/golden)
    assert.equal(golden.body.usage.completion_tokens, 4)
    const card = (await a.api('/v1/models/smollm2')).body
    assert.equal(card.context_length, 8192)
    assert.equal(card.owned_by, 'a')
    assert.ok(card.created > 1_700_000_000)
    assert.equal(card.model_info.architecture, 'llama')
  })

  test(skipNamed('the dashboard shows what the model is, and its chat streams SmolLM2\'s answer', noChromium), { skip: noChromium }, async () => {
    mkdirSync(SHOTS, { recursive: true })
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
    try {
      const page = await browser.newPage({ viewport: { width: 1400, height: 900 } })
      await page.goto(`${a.url}/#/deploy`)
      await page.click('[data-testid=login-open]')
      await page.fill('[data-testid=login-token]', a.token)
      await page.click('[data-testid=login-submit]')
      // the add-model form: the same GGUF again is the component already there; a missing file is an error shown, nothing added
      await page.fill('[data-testid=add-model-source]', weights.path)
      await page.fill('[data-testid=add-model-name]', 'smollm2')
      await page.click('[data-testid=add-model-submit]')
      await until(async () => /^already added: smollm2:/.test((await page.locator('[data-testid=add-model-status]').textContent().catch(() => '')) ?? ''), 'the form to report the model', 60_000)
      await page.fill('[data-testid=add-model-source]', join(dir, 'no-such-model.gguf'))
      await page.click('[data-testid=add-model-submit]')
      await until(async () => /does not exist/.test((await page.locator('[data-testid=add-model-error]').textContent().catch(() => '')) ?? ''), 'the form to show the error', 30_000)
      await until(async () => (await page.locator('[data-testid=component-select] option').allTextContents()).some(t => t.startsWith('smollm2:')), 'the model in the component list')
      await page.selectOption('[data-testid=component-select]', added.uri)
      const info = (await page.locator('[data-testid=model-info]').textContent()) ?? ''
      assert.match(info, /llama, 135M parameters, Q4_1, context 8192, vocabulary 49152, own chat template/)
      await page.screenshot({ path: join(SHOTS, 'deploy-smollm2.png'), fullPage: true })
      await page.goto(`${a.url}/#/chat`)
      await until(async () => (await page.locator('[data-testid=chat-model] option').allTextContents()).some(t => t.startsWith('smollm2')), 'smollm2 in the chat model list', 30_000)
      await page.selectOption('[data-testid=chat-model]', 'smollm2')
      await page.fill('[data-testid=chat-input]', 'What is the capital of France?')
      await page.click('[data-testid=chat-send]')
      await page.locator('[data-testid=chat-send]').waitFor({ timeout: 60_000 })
      await until(async () => Number((await page.locator('[data-testid=chat-chunks]').first().textContent()) ?? 0) > 1, 'several stream events', 60_000)
      const answer = (await page.locator('[data-testid=chat-assistant]').last().textContent()) ?? ''
      assert.ok(answer.trim().length > 0)
      await page.screenshot({ path: join(SHOTS, 'chat-smollm2.png'), fullPage: true })
    } finally {
      await browser.close()
    }
  })

  for (const world of [2, 3]) {
    test(`blockmesh split --model smollm2 --world-size ${world} --deploy: the vDAG answers with the whole model's greedy tokens`, async () => {
      const name = `smollm2-x${world}`
      const r = await cli(a, ['split', '--model', 'smollm2', '--world-size', String(world), '--deploy', '--vdag-name', name])
      assert.equal(r.code, 0, r.stderr + r.stdout)
      assert.match(r.stdout, new RegExp(`deployed vDAG ${name}`))
      const blocks = (await a.api('/api/blocks')).body.blocks.filter((x: any) => x.id.startsWith(`${name}-s`))
      assert.equal(blocks.length, world)
      for (const x of [a, b, c]) await until(async () => (await x.api('/v1/models')).body.data.some((d: any) => d.id === name), `${x.spec.name} to serve ${name}`, 180_000)
      const peers = blocks.map((x: any) => x.instances[0]?.peerId)
      assert.equal(new Set(peers).size, world, 'one stage per peer')
      for (const [via, q] of [[b, 'What is the capital of France?'], [c, 'Write a haiku about the sea.']] as const) {
        const split = await chat(via, name, q)
        const whole = await chat(via, 'smollm2', q)
        assert.equal(split.status, 200, JSON.stringify(split.body))
        assert.equal(split.text, whole.text)
        assert.ok(split.text.length > 0)
      }
    })
  }

  test('a broken model fails alone, with its reason; the others keep serving', async () => {
    // a truncated GGUF is refused at model add, and nothing is registered
    const cut = join(dir, 'truncated.gguf')
    const fd = openSync(weights.path, 'r')
    const head = Buffer.alloc(4 << 20)
    readSync(fd, head, 0, head.length, 0)
    closeSync(fd)
    writeFileSync(cut, head)
    const before = (await a.api('/api/components')).body.components.length
    const bad = await a.api('/api/models', { method: 'POST', body: { source: cut, name: 'cut' } })
    assert.equal(bad.status, 422)
    assert.match(bad.body.error.message, /truncated/)
    assert.equal((await a.api('/api/components')).body.components.length, before)

    // a model whose chat template cannot render: its block fails with that reason at load
    const bundle = JSON.parse((await import('node:fs')).readFileSync(added.spec.tokenizer.url, 'utf8'))
    bundle.chatTemplate = "{{ raise_exception('this template refuses every conversation') }}"
    const text = JSON.stringify(bundle)
    const path = join(dir, 'bad-template.json')
    writeFileSync(path, text)
    const md5 = createHash('md5').update(text).digest('hex')
    const spec = { ...added.spec, name: 'bad-template', version: '1', tokenizer: { type: 'bundle', url: path, md5 } }
    assert.equal((await a.api('/api/components', { method: 'POST', body: spec })).status, 201)
    assert.equal((await a.api('/api/blocks', { method: 'POST', body: { id: 'bad-template', component: 'bad-template:1' } })).status, 201)
    const failed = await until(async () => {
      const x = (await a.api('/api/blocks/bad-template')).body
      return x.status === 'failed' ? x : undefined
    }, 'the bad block to fail', 60_000)
    assert.match(JSON.stringify(failed), /refuses every conversation/)
    const still = await chat(b, 'smollm2', 'What is 12 times 7?')
    assert.equal(still.status, 200)
    assert.ok(still.text.length > 0)
  })
})
