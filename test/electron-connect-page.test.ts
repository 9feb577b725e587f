/**
 * The desktop app's connect page (as built into main/dist/connect) in a real browser: Debian's
 * Chromium, the engine Electron embeds, loading it from a file: URL under its own CSP, with a stand-in
 * for the preload's window.blockmesh that records calls. A screenshot goes to test-results/desktop/.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, mkdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { chromium } from 'playwright-core'
import type { Browser, Page } from 'playwright-core'
import { buildDesktop } from '../main/build.ts'
import { tempDir } from './helpers/agents.ts'

const CHROMIUM = process.env.BLOCKMESH_CHROMIUM ?? '/usr/bin/chromium'
const SHOTS = join(import.meta.dirname, '..', 'test-results', 'desktop')
const missing = existsSync(CHROMIUM) ? null : `Chromium is not installed at ${CHROMIUM}`

/** Installed before the page's own script: window.blockmesh as the preload would give it, recording calls. */
function fakeBridge (opts: { failLocal?: string, failRemote?: string }): void {
  const calls: Array<[string, unknown[]]> = []
  const w = window as unknown as { blockmesh: unknown, calls: typeof calls }
  w.calls = calls
  const call = (name: string, fail?: string) => async (...args: unknown[]): Promise<void> => {
    calls.push([name, args])
    // as Electron reports an error thrown by an ipcMain.handle handler
    if (fail != null) throw new Error(`Error invoking remote method 'connection:${name}': ${fail}`)
  }
  w.blockmesh = {
    desktop: true,
    auth: { getToken: async () => null, setToken: call('setToken'), clearToken: call('clearToken') },
    connection: { current: async () => null, connectLocal: call('connect-local', opts.failLocal), connectRemote: call('connect-remote', opts.failRemote), switch: call('switch') }
  }
}

describe(missing == null ? 'the connect page in Chromium' : `the connect page in Chromium: skipped, ${missing}`, { skip: missing ?? false }, () => {
  let root: string
  let page: Page
  let browser: Browser
  let connectPage: string
  const problems: string[] = []

  before(async () => {
    mkdirSync(SHOTS, { recursive: true })
    root = tempDir('bm-connect-page-')
    const dist = join(root, 'dist')
    await buildDesktop(dist)
    connectPage = pathToFileURL(join(dist, 'connect', 'index.html')).href
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
  })

  after(async () => {
    await browser?.close()
    rmSync(root, { recursive: true, force: true })
  })

  const open = async (url: string, bridge: Parameters<typeof fakeBridge>[0] | null): Promise<void> => {
    page = await browser.newPage({ viewport: { width: 900, height: 760 } })
    // anything at error level (a CSP violation, a script error) is a problem
    page.on('console', m => { if (m.type() === 'error') problems.push(m.text()) })
    page.on('pageerror', e => { problems.push(e.message) })
    if (bridge != null) await page.addInitScript(fakeBridge, bridge)
    await page.goto(url)
  }

  test('the page\'s own script and style load under its CSP from a file: URL', async () => {
    await open(connectPage, {})
    // styled (connect.css applied) and scripted (connect.js ran: the error box stays hidden, buttons enabled)
    assert.equal(await page.locator('main').evaluate(el => getComputedStyle(el).maxWidth), '560px')
    assert.equal(await page.locator('#error').isHidden(), true)
    assert.equal(await page.locator('#local').isEnabled(), true)
    assert.equal(await page.locator('#url').inputValue(), 'http://127.0.0.1:7700')
    await page.screenshot({ path: join(SHOTS, 'connect.png'), fullPage: true })
    assert.deepEqual(problems, [])
  })

  test('"Start a local agent" asks main; a failure is shown without Electron\'s prefix', async () => {
    await open(connectPage, { failLocal: 'NodeVersionError: node is Node.js "v20.11.1"; the local agent needs Node.js >= 22.18' })
    await page.locator('#local').click()
    await page.locator('#error').waitFor({ state: 'visible' })
    assert.equal(await page.locator('#error').textContent(), 'node is Node.js "v20.11.1"; the local agent needs Node.js >= 22.18')
    assert.deepEqual(await page.evaluate(() => (window as unknown as { calls: unknown }).calls), [['connect-local', []]])
    assert.equal(await page.locator('#local').isEnabled(), true, 'usable again after the failure')
    assert.deepEqual(problems, [])
  })

  test('"Connect" sends the typed URL to main', async () => {
    await open(connectPage, { failRemote: 'AgentUnreachableError: http://127.0.0.1:7800 is not a reachable Blockmesh agent: ECONNREFUSED' })
    await page.locator('#url').fill(' http://127.0.0.1:7800 ')
    await page.locator('#remote button[type=submit]').click()
    await page.locator('#error').waitFor({ state: 'visible' })
    assert.equal(await page.locator('#error').textContent(), 'http://127.0.0.1:7800 is not a reachable Blockmesh agent: ECONNREFUSED')
    assert.deepEqual(await page.evaluate(() => (window as unknown as { calls: unknown }).calls), [['connect-remote', ['http://127.0.0.1:7800']]])
    assert.equal(page.url(), connectPage, 'the form never navigates by itself')
    assert.deepEqual(problems, [])
  })

  test('an error main sends the window back with is shown (as text, not markup)', async () => {
    await open(`${connectPage}?error=${encodeURIComponent('The local agent stopped (1). <img src=x onerror=alert(1)>')}`, {})
    assert.equal(await page.locator('#error').textContent(), 'The local agent stopped (1). <img src=x onerror=alert(1)>')
    assert.equal(await page.locator('#error img').count(), 0)
    await page.screenshot({ path: join(SHOTS, 'connect-error.png'), fullPage: true })
    assert.deepEqual(problems, [])
  })

  test('outside the desktop app (no window.blockmesh) the page says so', async () => {
    await open(connectPage, null)
    assert.match(await page.locator('#error').textContent() ?? '', /only inside the Blockmesh desktop app/)
    assert.equal(await page.locator('#local').isDisabled(), true)
    assert.deepEqual(problems, [])
  })
})
