/**
 * The dashboard in a real browser (Debian's Chromium driven by playwright-core)
 * against a real mesh of three agent processes: every view, read-only without
 * the token and acting with it. Screenshots of each view are written to
 * test-results/dashboard/ (kept as CI artifacts).
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Browser, Page } from 'playwright-core'
import { AgentProcess, stopAll, tempDir, until } from './helpers/agents.ts'
import { componentSpec, tinyModel } from './helpers/models.ts'
import { SHOTS, browserMissing, openPage } from './helpers/browser.ts'

const missing = browserMissing

describe(missing == null ? 'dashboard in Chromium against a 3-agent mesh' : `dashboard in Chromium: skipped, ${missing}`, { skip: missing ?? false }, () => {
  let a: AgentProcess, b: AgentProcess, c: AgentProcess
  let browser: Browser
  let page: Page
  const problems: string[] = []
  const model = tinyModel(tempDir('bm-ui-model-'), 31)
  const component = componentSpec(model, 'ui-tiny')
  const componentUri = `${component.name as string}:${component.version as string}`

  const view = async (name: string): Promise<void> => {
    await page.goto(`${a.url}/#/${name}`)
    await page.locator('nav a.active').filter({ hasText: new RegExp(name, 'i') }).waitFor()
  }
  const shot = async (name: string): Promise<void> => { await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true }) }
  const text = async (selector: string): Promise<string> => (await page.locator(selector).first().textContent()) ?? ''

  before(async () => {
    mkdirSync(SHOTS, { recursive: true })
    a = await AgentProcess.start({ name: 'ui-a', cluster: 'alpha' })
    ;[b, c] = await Promise.all([
      AgentProcess.start({ name: 'ui-b', cluster: 'alpha', bootstrap: [a.addr] }),
      AgentProcess.start({ name: 'ui-c', cluster: 'beta', bootstrap: [a.addr], simulateGpus: 'count=2,model=A100,memory=80GiB,free=60GiB,util=10' })
    ])
    await until(async () => (await a.peers()).length === 3, 'the mesh to form')
    const reg = await a.api('/api/components', { method: 'POST', body: component })
    assert.equal(reg.status, 201, JSON.stringify(reg.body))
    ;({ browser, page } = await openPage(problems))
  })

  after(async () => {
    await browser?.close()
    await stopAll([a, b, c].filter(Boolean))
  })

  test('the topology shows the 3 peers grouped by cluster, with their connections, without logging in', async () => {
    await view('topology')
    await until(async () => await page.locator('[data-testid=topology-peer]').count() === 3, 'three peers in the topology')
    assert.equal(await text('[data-testid=peer-count]'), '3')
    const clusters = await page.locator('.cluster-list h3').allTextContents()
    assert.deepEqual(clusters.sort(), ['cluster alpha', 'cluster beta'])
    // every peer has live connections gossiped (b and c at least to a)
    await until(async () => (await page.locator('[data-testid=topology-peer]').allTextContents()).every(t => /[1-9]\d* links/.test(t)), 'links for every peer')
    const label = await page.locator('[data-testid=topology-graph]').getAttribute('aria-label')
    assert.equal(label, 'mesh graph: 3 peers in 2 clusters')
    assert.equal(await page.locator('[data-testid=topology-graph] canvas').count() > 0, true, 'the graph is drawn on a canvas')
    await shot('topology')
  })

  test('node stats update live (SSE) without a reload, with charts', async () => {
    await view('nodes')
    await until(async () => await page.locator('[data-testid=node-card]').count() === 3, 'three node cards')
    const card = page.locator(`[data-testid=node-card][data-peer="${b.peerId}"]`)
    const before = Number(await card.locator('[data-testid=record-seq]').textContent())
    await until(async () => Number(await card.locator('[data-testid=record-seq]').textContent()) > before, 'a newer capacity record of ui-b on the page')
    assert.ok(await card.locator('.spark canvas').count() >= 3, 'CPU, RAM and tokens/s charts')
    assert.match(await card.locator('[data-testid=cpu-util]').textContent() ?? '', /^\d+%$/)
    assert.equal(await card.locator('[data-testid=gpu]').count(), 0)
    // ui-c declares two (simulated) A100s: each with its memory in use and utilisation, and a GPU chart
    const gpuCard = page.locator(`[data-testid=node-card][data-peer="${c.peerId}"]`)
    const gpus = await gpuCard.locator('[data-testid=gpu]').allTextContents()
    assert.equal(gpus.length, 2)
    for (const g of gpus) assert.match(g, /A100 \(simulated\)memory 20\.0 GiB of 80\.0 GiB · util 10%/)
    assert.equal(await gpuCard.locator('.spark figcaption').filter({ hasText: 'GPU util' }).count(), 1)
    // the execution providers each agent probed at start: CPU loads; the others say why not (title and small text)
    await until(async () => await card.locator('[data-testid=provider]').count() > 0, 'ui-b\'s providers')
    assert.equal(await card.locator('[data-testid=provider][data-provider=cpu]').getAttribute('data-available'), 'true')
    const titles = await card.locator('[data-testid=provider][data-available=false]').evaluateAll(els => els.map(e => e.getAttribute('title') ?? ''))
    for (const t of titles) assert.match(t, /^\w+ does not load: \S/)
    assert.equal(await card.locator('.provider-reasons li').count(), titles.length)
    await shot('nodes')
  })

  test('actions need the token: read-only until logged in; a wrong token is refused; the token never lands in the URL or storage', async () => {
    await view('deploy')
    assert.equal(await page.locator('[data-testid=deploy-submit]').isDisabled(), true)
    assert.ok(await page.locator('.needs-login').count() > 0)
    await page.click('[data-testid=login-open]')
    await page.fill('[data-testid=login-token]', 'not-the-token')
    await page.click('[data-testid=login-submit]')
    await page.locator('.modal [role=alert]').filter({ hasText: 'refused' }).waitFor()
    await page.fill('[data-testid=login-token]', a.token)
    await page.click('[data-testid=login-submit]')
    await page.locator('[data-testid=logout]').waitFor()
    assert.equal(await page.locator('[data-testid=deploy-submit]').isDisabled(), false)
    assert.ok(!page.url().includes(a.token))
    const stored = await page.evaluate(() => JSON.stringify([{ ...localStorage }, { ...sessionStorage }, document.cookie]))
    assert.ok(!stored.includes(a.token), 'token not in localStorage, sessionStorage or cookies')
  })

  test('an invalid deploy form shows the API\'s message at the field it names', async () => {
    await page.selectOption('[data-testid=component-select]', componentUri)
    await page.fill('[data-testid=policy-node-minRam]', 'lots')
    await page.click('[data-testid=deploy-submit]')
    const ram = page.locator('[data-testid="error-policy.node.minRam"]')
    await ram.waitFor()
    assert.equal(await ram.textContent(), 'not a size: "lots" (e.g. 80GiB, 48GB, 512MiB)')
    await page.fill('[data-testid=policy-node-minRam]', '')
    await page.fill('[data-testid=min-instances]', '3')
    await page.fill('[data-testid=max-instances]', '1')
    await page.click('[data-testid=deploy-submit]')
    const min = page.locator('[data-testid=error-minInstances]')
    await min.waitFor()
    assert.equal(await min.textContent(), 'minInstances must not exceed maxInstances')
    assert.equal(await page.getAttribute('[data-testid=min-instances]', 'aria-invalid'), 'true', 'the input is marked invalid for assistive technology')
    assert.equal(await page.getByRole('textbox', { name: 'Min instances' }).getAttribute('aria-describedby'), 'note-minInstances')
    assert.equal(await page.locator('[data-testid="error-policy.node.minRam"]').count(), 0, 'the fixed field has no error left')
    await shot('deploy-invalid')
    const blocks = await a.api('/api/blocks')
    assert.equal(blocks.body.blocks.length, 0, 'nothing was created by the refused forms')
  })

  test('a policy nothing satisfies is refused with the scheduler\'s reason', async () => {
    await page.fill('[data-testid=min-instances]', '1')
    await page.fill('[data-testid=block-id]', 'needs-gpu')
    await page.fill('[data-testid=policy-node-gpus]', '4') // ui-c has 2 GPUs, the others none
    await page.click('[data-testid=deploy-submit]')
    await page.locator('[data-testid=refusal]').first().waitFor()
    assert.match(await text('[data-testid=refusal]'), /GPU/i)
    await page.locator('[data-testid=block-row][data-block=needs-gpu] [data-testid=block-delete]').click()
    await until(async () => await page.locator('[data-testid=block-row][data-block=needs-gpu]').count() === 0, 'the refused block deleted')
  })

  test('a block spec uploaded as a YAML file is deployed as written', async () => {
    const file = join(tempDir('bm-ui-spec-'), 'block.yaml')
    writeFileSync(file, `id: from-file\ncomponent: ${componentUri}\nminInstances: 1\nmaxInstances: 1\npolicy:\n  cluster:\n    names: [beta]\n`)
    await page.click('[data-testid=mode-file]')
    await page.setInputFiles('[data-testid=spec-file]', file)
    await page.click('[data-testid=deploy-submit]')
    await page.locator('[data-testid=deploy-result]').waitFor()
    assert.match(await text('[data-testid=placement]'), /Placed 1 of 1: ui-c/, 'the cluster filter from the file placed it in cluster beta')
    const row = page.locator('[data-testid=block-row][data-block=from-file]')
    await until(async () => (await row.locator('[data-testid=block-status]').textContent()) === 'ready', 'block from-file ready', 60_000)
    await row.locator('[data-testid=block-delete]').click()
    await until(async () => await row.count() === 0, 'block from-file deleted')
    assert.equal((await a.api('/api/blocks/from-file')).status, 404)
    await page.getByLabel('from a component').check()
  })

  test('deploying from the form places the block and it turns ready; it can be scaled', async () => {
    await page.fill('[data-testid=block-id]', 'ui-chat')
    await page.fill('[data-testid=policy-node-gpus]', '')
    await page.fill('[data-testid=max-instances]', '2')
    await page.click('[data-testid=deploy-submit]')
    await page.locator('[data-testid=deploy-result]').waitFor()
    assert.match(await text('[data-testid=placement]'), /Placed 1 of 1: ui-[abc]/)
    const row = page.locator('[data-testid=block-row][data-block=ui-chat]')
    await until(async () => (await row.locator('[data-testid=block-status]').textContent()) === 'ready', 'block ui-chat ready in the list', 60_000)
    assert.equal(await row.locator('[data-testid=block-reconciler]').textContent(), 'ui-a', 'the agent it was created through reconciles it')
    await row.locator('input[type=number]').fill('3')
    await row.getByRole('button', { name: 'Scale' }).click()
    await row.locator('[role=alert]').filter({ hasText: 'between minInstances (1) and maxInstances (2)' }).waitFor()
    await row.locator('input[type=number]').fill('2')
    await row.getByRole('button', { name: 'Scale' }).click()
    await until(async () => (await row.locator('td').nth(3).textContent())?.match(/ready/g)?.length === 2, 'two ready instances after scaling', 60_000)
    const api = await a.api('/api/blocks/ui-chat')
    assert.equal(api.body.instances.filter((i: any) => i.status === 'ready').length, 2)
    await shot('deploy')
  })

  test('a split task runs to completion in the UI, its plan can be inspected and deployed as a vDAG', async () => {
    await view('split')
    await page.selectOption('[data-testid=split-source]', componentUri)
    assert.equal(await page.inputValue('[data-testid=split-url]'), model.path)
    await page.fill('[data-testid=split-model-name]', 'ui-split')
    await page.fill('[data-testid=split-world-size]', '2')
    await page.click('[data-testid=split-submit]')
    const task = page.locator('[data-testid=task]').first()
    await until(async () => await task.getAttribute('data-status') === 'complete', 'the split task to complete', 90_000)
    await task.locator('[data-testid=plan-toggle]').click()
    assert.equal(await task.locator('[data-testid=plan] tbody tr').count(), 2)
    // the form asked for the measured balance (its default); the model's two layers are too few to time, and the plan says so
    assert.equal(await page.inputValue('[data-testid=split-cost]'), 'measured')
    assert.equal(await task.locator('[data-testid=plan-balance]').textContent(), 'cut by the bytes a decode step reads')
    await task.getByLabel('vDAG name').fill('ui-pipeline')
    await task.locator('[data-testid=deploy-vdag]').click()
    await task.locator('[data-testid=vdag-deployed]').waitFor({ timeout: 60_000 })
    assert.match(await task.locator('[data-testid=vdag-deployed]').textContent() ?? '', /^vDAG ui-pipeline: \S+ → \S+$/)
    await until(async () => /ready/.test(await text('[data-testid=vdag-row]')), 'the vDAG ready', 60_000)
    await shot('split')
    // the topology draws the vDAG's stages on the peers that run them
    await view('topology')
    await until(async () => /stage 0: .* on ui-[abc][\s\S]*stage 1: .* on ui-[abc]/.test(await text('[data-testid=topology-vdag]')), 'the vDAG in the topology', 30_000)
    await shot('topology-vdag')
  })

  test('the chat playground streams an answer from a block and from the vDAG, with time to first token and tokens/s', async () => {
    for (const model of ['ui-chat', 'ui-pipeline']) {
      await view('chat')
      await until(async () => (await page.locator('[data-testid=chat-model] option').allTextContents()).some(t => t.startsWith(model)), `${model} in the model list`, 30_000)
      await page.selectOption('[data-testid=chat-model]', model)
      await page.fill('[data-testid=chat-input]', 'Tell me about the harbour.')
      await page.click('[data-testid=chat-send]')
      await page.locator('[data-testid=chat-send]').waitFor({ timeout: 60_000 })
      const last = page.locator('[data-testid=chat-assistant]').last()
      assert.equal(await last.locator('.who').textContent(), model, 'the answer names the model that gave it')
      assert.ok(((await last.locator('p').textContent()) ?? '').length > 0, 'an answer')
      assert.match(await text('[data-testid=ttft]'), /^\d+ ms$/)
      assert.ok(Number(await text('[data-testid=chat-chunks]')) > 1, 'the answer came in several stream events')
      assert.ok(Number(await text('[data-testid=chat-tokens]')) > 1)
      assert.match(await text('[data-testid=chat-tps]'), /^\d+\.\d$/)
      await shot(`chat-${model}`)
    }
  })

  test('the page ran without script errors or Content-Security-Policy violations', () => {
    assert.deepEqual(problems, [])
  })
})
