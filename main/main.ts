/**
 * The desktop app's main process: one window that shows either the app's
 * connect page or an agent's dashboard (served by the agent at its origin).
 * Bundled by main/build.ts to main/dist/main.cjs, which is where the paths
 * below point (preload.cjs and connect/ sit beside it).
 */
import { app, BrowserWindow, ipcMain, safeStorage, session, shell } from 'electron'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseDesktopArgs } from './args.ts'
import type { DesktopArgs } from './args.ts'
import { probeAgent } from './agent-probe.ts'
import { ConnectionController, PageLoadError } from './connection.ts'
import { createSenderGuard, registerIpc } from './ipc.ts'
import { LocalAgent } from './local-agent.ts'
import { hardenSession, hardenWebContents, secureWebPreferences } from './security.ts'
import { TokenStore } from './token-store.ts'

const HERE = dirname(fileURLToPath(import.meta.url))
const PRELOAD = join(HERE, 'preload.cjs')
const CONNECT_PAGE = pathToFileURL(join(HERE, 'connect', 'index.html')).href

function log (message: string): void {
  process.stderr.write(`[blockmesh] ${message}\n`)
}

let args: DesktopArgs = { local: false }
let argsError: string | undefined
try {
  args = parseDesktopArgs(process.argv.slice(1), process.env)
} catch (err) {
  argsError = (err as Error).message
}

// every renderer sandboxed, whatever a webPreferences says (must be called before 'ready')
app.enableSandbox()

if (!app.requestSingleInstanceLock()) {
  // another instance runs (with its own local agent on the same data dir): it takes the focus instead
  app.quit()
} else {
  run()
}

function run (): void {
  let win: BrowserWindow | null = null
  let quitting = false
  let localAgent: Promise<LocalAgent> | null = null
  const cancelStart = new AbortController()

  // installed before any webContents exists, so none escapes the rules
  app.on('web-contents-created', (_event, contents) => {
    hardenWebContents(contents, () => controller?.allowed() ?? { connectPage: CONNECT_PAGE, agentOrigin: null }, {
      openExternal: url => { void shell.openExternal(url) },
      log
    })
  })

  let controller: ConnectionController | null = null

  const startLocalAgent = async (): Promise<{ origin: string, token: string }> => {
    localAgent ??= LocalAgent.start({ dataDir: join(app.getPath('userData'), 'agent'), signal: cancelStart.signal, log }).then(agent => {
      agent.onExit((code, signal) => {
        localAgent = null
        if (quitting) return
        const why = `${code ?? signal}; its log: ${agent.info.logFile}`
        log(`local agent exited (${why})`)
        void controller?.localAgentStopped(agent.info.origin, why).catch(err => { log((err as Error).message) })
      })
      return agent
    }, (err: unknown) => {
      localAgent = null
      throw err
    })
    const agent = await localAgent
    return { origin: agent.info.origin, token: agent.info.token }
  }

  app.on('second-instance', () => {
    if (win == null) return
    if (win.isMinimized()) win.restore()
    win.focus()
  })

  // closing the window quits, on macOS too: a local agent must not outlive the only window that shows it
  app.on('window-all-closed', () => { app.quit() })

  app.on('before-quit', (event) => {
    quitting = true
    const pending = localAgent
    if (pending == null) return
    // stop the local agent first (SIGTERM, SIGKILL after a grace period), then quit for real
    event.preventDefault()
    localAgent = null
    cancelStart.abort()
    void pending.then(async agent => { await agent.stop() }, () => {}).finally(() => { app.quit() })
  })

  void app.whenReady().then(async () => {
    hardenSession(session.defaultSession, log)
    const tokens = new TokenStore({ safeStorage, file: join(app.getPath('userData'), 'tokens.json'), log })
    const ctl = new ConnectionController({
      connectPage: CONNECT_PAGE,
      load: async url => {
        if (win == null || win.isDestroyed()) throw new Error('the window is closed')
        await win.loadURL(url)
      },
      startLocalAgent,
      probe: async origin => await probeAgent(origin),
      tokens,
      log
    })
    controller = ctl

    win = new BrowserWindow({
      width: 1280,
      height: 860,
      minWidth: 640,
      minHeight: 480,
      title: 'Blockmesh',
      show: false,
      webPreferences: secureWebPreferences(PRELOAD)
    })
    const window = win
    window.once('ready-to-show', () => { window.show() })
    window.on('closed', () => { win = null })

    registerIpc(ipcMain, ctl.handlers(), createSenderGuard({
      windowContentsId: () => win == null || win.isDestroyed() ? null : win.webContents.id,
      allowed: () => ctl.allowed(),
      log
    }), log)

    await ctl.showConnectPage(argsError)
    const connect = args.agentUrl != null ? ctl.connectRemote(args.agentUrl) : args.local ? ctl.connectLocal() : null
    await connect?.catch(async (err: unknown) => {
      // a page that failed to load already sent the window back with the error
      if (!(err instanceof PageLoadError)) await ctl.showConnectPage((err as Error).message)
    })
  }).catch((err: unknown) => {
    log(`start failed: ${(err as Error).stack ?? String(err)}`)
    app.exit(1)
  })
}
