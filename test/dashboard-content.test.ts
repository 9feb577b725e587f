/**
 * The Models view in a real browser (Debian's Chromium driven by playwright-core) against two real agent
 * processes: a model component registered on one agent, its file in that agent's content store, seen from
 * the other agent's dashboard with its holder; "Pull here" brings it over the mesh and the other agent
 * becomes a holder too, the transfer shown live while it lasts. Screenshots go to test-results/dashboard/ like dashboard.test.ts's.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import type { Browser, Page } from 'playwright-core'
import { AgentProcess, stopAll, tempDir, until } from './helpers/agents.ts'
import { componentSpec, tinyModel } from './helpers/models.ts'
import { SHOTS, browserMissing, openPage } from './helpers/browser.ts'

const missing = browserMissing

describe(missing == null ? 'the Models view in Chromium against a 2-agent mesh' : `the Models view in Chromium: skipped, ${missing}`, { skip: missing ?? false }, () => {
  let a: AgentProcess, b: AgentProcess
  let browser: Browser
  let page: Page
  const problems: string[] = []
  const model = tinyModel(tempDir('bm-ui-content-'), 41)
  const component = componentSpec(model, 'ui-files')
  const uri = `${component.name as string}:${component.version as string}`

  before(async () => {
    mkdirSync(SHOTS, { recursive: true })
    // files-a uploads slowly, so the transfer to files-b lasts a few heartbeats and the page shows it under way
    a = await AgentProcess.start({ name: 'files-a', extra: ['--content-upload-rate', '384KiB'] })
    b = await AgentProcess.start({ name: 'files-b', bootstrap: [a.addr] })
    await until(async () => (await a.peers()).length === 2 && (await b.peers()).length === 2, 'the mesh to form')
    const reg = await a.api('/api/components', { method: 'POST', body: component })
    assert.equal(reg.status, 201, JSON.stringify(reg.body))
    ;({ browser, page } = await openPage(problems))
  })

  after(async () => {
    await browser?.close()
    await stopAll([a, b].filter(Boolean))
  })

  test('a model\'s file and the agent holding it are shown; "Pull here" fetches it over the mesh and this agent becomes a holder', async () => {
    // files-b's dashboard: the model was registered on files-a, whose store holds its file
    await page.goto(`${b.url}/#/models`)
    await page.locator('nav a.active').filter({ hasText: /models/i }).waitFor()
    const card = page.locator(`[data-testid=model][data-model="${uri}"]`)
    await card.waitFor({ timeout: 30_000 })
    const file = card.locator(`[data-testid=model-file][data-md5="${model.md5}"]`)
    await file.waitFor()
    assert.equal(await file.getAttribute('data-role'), 'model')
    assert.match(await file.locator('td').nth(1).textContent() ?? '', new RegExp(`^${model.md5.slice(0, 8)}$`))
    const holderA = file.locator(`[data-testid=holder][data-peer="${a.peerId}"]`)
    await holderA.waitFor({ timeout: 30_000 })
    assert.equal(await holderA.getAttribute('data-state'), 'complete')
    assert.equal((await holderA.textContent())?.trim(), 'files-a')
    assert.equal(await file.locator(`[data-testid=holder][data-peer="${b.peerId}"]`).count(), 0, 'files-b does not hold it yet')
    assert.equal(await card.locator('[data-testid=pull-here]').isDisabled(), true, 'pulling needs the token')
    assert.match(await page.locator('[data-testid=store-usage]').textContent() ?? '', / of .* used \(0%\) · 0 files$/)
    await page.screenshot({ path: join(SHOTS, 'models.png'), fullPage: true })

    await page.click('[data-testid=login-open]')
    await page.fill('[data-testid=login-token]', b.token)
    await page.click('[data-testid=login-submit]')
    await page.locator('[data-testid=logout]').waitFor()
    await card.locator('[data-testid=pull-here]').click()
    // under way: files-b's capacity record lists the transfer (the live stream, no reload): in the mesh's
    // transfers with a progress bar, and files-b as a partial holder of the file
    const transfer = page.locator(`[data-testid=transfer][data-peer="${b.peerId}"][data-md5="${model.md5}"]`)
    await transfer.waitFor({ timeout: 30_000 })
    const under = new RegExp(`^files-bthis agent${uri} ${model.md5.slice(0, 8)}[\\d.]+ \\S+ of 1\\.5 MiB[\\d.]+%$`)
    await until(async () => under.test(await transfer.textContent() ?? ''), 'the transfer\'s size and progress', 30_000)
    assert.equal(await transfer.locator('progress').count(), 1)
    await file.locator(`[data-testid=holder][data-peer="${b.peerId}"][data-state=partial] progress`).waitFor({ timeout: 30_000 })
    await page.screenshot({ path: join(SHOTS, 'models-transfer.png'), fullPage: true })
    const result = card.locator('[data-testid=pull-result]')
    await result.waitFor({ timeout: 60_000 })
    assert.match(await result.textContent() ?? '', /^1 file held here: .* from files-a$/)
    // files-b is a holder now (from its own capacity record, on the live stream), and its store lists the file
    const holderB = file.locator(`[data-testid=holder][data-peer="${b.peerId}"][data-state=complete]`)
    await holderB.waitFor({ timeout: 30_000 })
    assert.equal((await holderB.textContent())?.trim(), 'files-b (here)')
    assert.equal(await card.locator('[data-testid=pull-here]').textContent(), 'Held here')
    const stored = page.locator(`[data-testid=store-file][data-md5="${model.md5}"]`)
    await stored.waitFor({ timeout: 30_000 })
    assert.equal(await stored.getAttribute('data-state'), 'complete')
    assert.equal(await stored.locator('[data-testid=store-remove]').isDisabled(), false, 'a file no block uses can be removed')
    await until(async () => await transfer.count() === 0, 'the finished transfer gone from the list')
    await page.screenshot({ path: join(SHOTS, 'models-pulled.png'), fullPage: true })
    assert.deepEqual(problems, [], 'no script errors or Content-Security-Policy violations')
  })
})
