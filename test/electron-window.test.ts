// The desktop app in a real Electron window (playwright-core drives it). Runs only where the Electron
// binary is installed (node_modules/electron downloads it on first use, which needs the internet) and a
// display is available; elsewhere it is skipped and electron-main.test.ts covers the main process with
// a stand-in Electron.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:http'
import type { Server } from 'node:http'
import { createRequire } from 'node:module'
import type { AddressInfo } from 'node:net'
import { dirname, join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { _electron } from 'playwright-core'
import type { ElectronApplication, Page } from 'playwright-core'
import { buildDesktop } from '../main/build.ts'
import { secureWebPreferences } from '../main/security.ts'
import type { BlockmeshDesktopApi } from '../main/desktop-api.ts'
import { tempDir } from './helpers/agents.ts'

/**
 * The Electron binary's path, or null if it is not installed. Never
 * require('electron') here: without the binary that starts a download.
 */
function electronBinary (): string | null {
  try {
    const pkg = createRequire(import.meta.url).resolve('electron/package.json')
    const pathTxt = join(dirname(pkg), 'path.txt')
    if (!existsSync(pathTxt)) return null
    const binary = join(dirname(pkg), 'dist', readFileSync(pathTxt, 'utf8').trim())
    return existsSync(binary) ? binary : null
  } catch { return null }
}

const binary = electronBinary()
const noDisplay = process.platform === 'linux' && (process.env.DISPLAY ?? '') === '' && (process.env.WAYLAND_DISPLAY ?? '') === ''
const skip = binary == null
  ? 'Electron window test skipped: the Electron binary is not installed on this machine (no download possible here)'
  : noDisplay ? 'Electron window test skipped: no display (set DISPLAY, e.g. run under xvfb-run)' : false

type WindowWithApi = Window & { blockmesh?: BlockmeshDesktopApi }

describe('the desktop app in a real Electron window', { skip }, () => {
  let root: string
  let dist: string
  let app: ElectronApplication
  let page: Page
  let agent: Server
  let agentOrigin: string

  before(async () => {
    root = tempDir('bm-electron-')
    dist = join(root, 'app', 'main', 'dist')
    await buildDesktop(dist)
    // answers like an agent, and serves a "dashboard" without any CSP header: the app must add it
    agent = createServer((req, res) => {
      if (req.url === '/api/health') { res.setHeader('content-type', 'application/json'); res.end(JSON.stringify({ status: 'ok', name: 'window-test' })); return }
      res.setHeader('content-type', 'text/html')
      res.end('<!doctype html><title>dashboard</title><h1>dashboard</h1>')
    })
    await new Promise<void>(resolve => agent.listen(0, '127.0.0.1', resolve))
    agentOrigin = `http://127.0.0.1:${(agent.address() as AddressInfo).port}`
    app = await _electron.launch({
      executablePath: binary ?? undefined,
      // Chromium refuses to start its OS sandbox as root (CI containers): the renderer sandbox (no Node, isolated world) still applies
      args: [join(dist, 'main.cjs'), ...(process.getuid?.() === 0 ? ['--no-sandbox'] : [])],
      // keep the app's userData (tokens, agent data) out of the real home
      env: { ...process.env, HOME: root, XDG_CONFIG_HOME: join(root, 'config'), BLOCKMESH_AGENT_URL: '', BLOCKMESH_LOCAL: '' } as Record<string, string>,
      timeout: 60_000
    })
    page = await app.firstWindow()
    await page.waitForLoadState('domcontentloaded')
  })

  after(async () => {
    await app?.close()
    agent?.closeAllConnections()
    await new Promise(resolve => agent?.close(resolve) ?? resolve(undefined))
    rmSync(root, { recursive: true, force: true })
  })

  test('the window: sandboxed, isolated, no Node; the connect page first', async () => {
    assert.equal(page.url(), pathToFileURL(join(dist, 'connect', 'index.html')).href)
    const prefs = await app.evaluate(({ BrowserWindow, app: electronApp }) => {
      const windows = BrowserWindow.getAllWindows()
      const contents = windows[0].webContents as unknown as { getLastWebPreferences?: () => Record<string, unknown> | null }
      if (typeof contents.getLastWebPreferences !== 'function') throw new Error('webContents.getLastWebPreferences() is missing in this Electron')
      return { count: windows.length, prefs: contents.getLastWebPreferences(), sandboxSwitch: electronApp.commandLine.hasSwitch('enable-sandbox') }
    })
    assert.equal(prefs.count, 1)
    assert.equal(prefs.sandboxSwitch, true, 'app.enableSandbox()')
    const expected = secureWebPreferences(join(dist, 'preload.cjs'))
    for (const [key, value] of Object.entries(expected)) assert.equal(prefs.prefs?.[key], value, key)
  })

  test('window.blockmesh has exactly the documented shape; require and process are not there', async () => {
    const shape = await page.evaluate(() => {
      const w = window as WindowWithApi
      return {
        keys: Object.keys(w.blockmesh ?? {}).sort(),
        auth: Object.keys(w.blockmesh?.auth ?? {}).sort(),
        connection: Object.keys(w.blockmesh?.connection ?? {}).sort(),
        desktop: w.blockmesh?.desktop,
        require: typeof (globalThis as { require?: unknown }).require,
        process: typeof (globalThis as { process?: unknown }).process,
        ipcRenderer: typeof (globalThis as { ipcRenderer?: unknown }).ipcRenderer
      }
    })
    assert.deepEqual(shape, {
      keys: ['auth', 'connection', 'desktop'],
      auth: ['clearToken', 'getToken', 'setToken'],
      connection: ['connectLocal', 'connectRemote', 'current', 'switch'],
      desktop: true,
      require: 'undefined',
      process: 'undefined',
      ipcRenderer: 'undefined'
    })
    assert.equal(await page.evaluate(async () => await (window as WindowWithApi).blockmesh?.connection.current()), null)
    const refused = await page.evaluate(async () => { try { await (window as WindowWithApi).blockmesh?.auth.getToken(); return 'allowed' } catch (err) { return String(err) } })
    assert.match(refused, /IpcSenderError|not allowed from the connect page/)
  })

  test('connecting opens the agent\'s dashboard with the CSP enforced; switch goes back', async () => {
    await page.evaluate((url) => { void (window as WindowWithApi).blockmesh?.connection.connectRemote(url) }, agentOrigin + '/')
    await page.waitForURL(agentOrigin + '/')
    assert.deepEqual(await page.evaluate(async () => await (window as WindowWithApi).blockmesh?.connection.current()), { url: agentOrigin, local: false })
    // the server sent no CSP; the app's (script-src 'self', no 'unsafe-eval') blocks eval
    assert.equal(await page.evaluate(() => { try { return String((0, eval)('1 + 1')) } catch (err) { return (err as Error).name } }), 'EvalError')
    assert.equal(await page.evaluate(() => window.open('https://example.com/') === null), true, 'no new window')
    await page.evaluate(async () => { await (window as WindowWithApi).blockmesh?.auth.setToken('window-test-token') })
    assert.equal(await page.evaluate(async () => await (window as WindowWithApi).blockmesh?.auth.getToken()), 'window-test-token')
    await page.evaluate(() => { void (window as WindowWithApi).blockmesh?.connection.switch() })
    await page.waitForURL(/connect\/index\.html$/)
  })
})
