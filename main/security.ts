import type { HandlerDetails, Session, WebContents, WebPreferences } from 'electron'
import { CSP } from '../agent/api/csp.ts'

/**
 * The window's web preferences. A page in the window is either the app's own
 * connect page or an agent's dashboard, and a remote agent's dashboard is
 * code from another machine: it gets a sandboxed renderer with no Node.js,
 * its own JavaScript world (the preload's bridge is the only way out), and
 * none of the features that could load more privileged content.
 */
export function secureWebPreferences (preload: string): Readonly<WebPreferences> {
  return Object.freeze({
    contextIsolation: true,
    sandbox: true,
    nodeIntegration: false,
    nodeIntegrationInWorker: false,
    nodeIntegrationInSubFrames: false,
    webSecurity: true,
    allowRunningInsecureContent: false,
    webviewTag: false,
    spellcheck: false,
    preload
  })
}

/** Where the window may be: the app's connect page, or the connected agent's origin (null before connecting). */
export interface AllowedLocations {
  /** file: URL of the connect page */
  readonly connectPage: string
  /** origin ("http://127.0.0.1:7700") of the agent the window is connected to */
  readonly agentOrigin: string | null
}

export type Place = 'connect' | 'agent'

/**
 * Which allowed place a URL is, or null if it is none. The connect page
 * matches by exact file path (any query, which carries an error to show, or
 * fragment); the agent by exact origin, http(s) only, without credentials.
 */
export function placeOf (url: string, allowed: AllowedLocations): Place | null {
  let u: URL
  try { u = new URL(url) } catch { return null }
  if (u.protocol === 'file:') {
    const page = new URL(allowed.connectPage)
    return page.protocol === 'file:' && u.host === page.host && u.pathname === page.pathname ? 'connect' : null
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return null
  if (u.username !== '' || u.password !== '') return null
  return allowed.agentOrigin != null && u.origin === allowed.agentOrigin ? 'agent' : null
}

/** The navigation guard: may the window (or a frame in it) go to `url`? */
export function isNavigationAllowed (url: string, allowed: AllowedLocations): boolean {
  return placeOf(url, allowed) != null
}

/**
 * window.open and target=_blank never make a window. https links are handed
 * to the system browser when `openExternal` is given (dashboards link to docs);
 * anything else (http, file:, custom schemes that could start local programs)
 * is dropped.
 */
export function windowOpenHandler (openExternal?: (url: string) => void): (details: Pick<HandlerDetails, 'url'>) => { action: 'deny' } {
  return ({ url }) => {
    if (openExternal != null && isExternalLink(url)) openExternal(url)
    return { action: 'deny' }
  }
}

/** An https URL without credentials: the only kind given to the system browser. */
export function isExternalLink (url: string): boolean {
  try {
    const u = new URL(url)
    return u.protocol === 'https:' && u.username === '' && u.password === ''
  } catch { return false }
}

/**
 * Response headers with the project's CSP enforced. Existing policies (any
 * header-name case) are kept: every Content-Security-Policy is enforced, so a
 * stricter one from the server still applies, and ours is always the floor,
 * whether or not a (remote, older, compromised) agent sent it.
 */
export function withCsp (headers: Record<string, string[] | string> | undefined): Record<string, string[]> {
  const out: Record<string, string[]> = {}
  const policies: string[] = []
  for (const [name, value] of Object.entries(headers ?? {})) {
    const values = Array.isArray(value) ? value : [value]
    if (name.toLowerCase() === 'content-security-policy') policies.push(...values)
    else out[name] = values
  }
  if (!policies.includes(CSP)) policies.push(CSP)
  out['Content-Security-Policy'] = policies
  return out
}

export type Log = (message: string) => void

/**
 * Session-wide rules: every permission request or check (camera, geolocation,
 * notifications, clipboard, HID/serial/USB…) is denied, and every response
 * carries the CSP. (A session has one onHeadersReceived listener: this is it.)
 */
export function hardenSession (session: Pick<Session, 'setPermissionRequestHandler' | 'setPermissionCheckHandler' | 'setDevicePermissionHandler' | 'webRequest'>, log: Log = () => {}): void {
  session.setPermissionRequestHandler((_contents, permission, callback) => {
    log(`denied permission request: ${permission}`)
    callback(false)
  })
  session.setPermissionCheckHandler(() => false)
  session.setDevicePermissionHandler(() => false)
  session.webRequest.onHeadersReceived((details, callback) => {
    callback({ responseHeaders: withCsp(details.responseHeaders) })
  })
}

/**
 * Per-webContents rules: navigation (by the page, by a redirect, in any
 * frame) only to an allowed place, no new windows, no <webview>.
 * `allowed` is read at each event, so connecting to an agent widens it and
 * switching back narrows it again.
 */
export function hardenWebContents (contents: Pick<WebContents, 'on' | 'setWindowOpenHandler'>, allowed: () => AllowedLocations, opts: { openExternal?: (url: string) => void, log?: Log } = {}): void {
  const log = opts.log ?? (() => {})
  const guard = (kind: string) => (event: { url: string, preventDefault: () => void }): void => {
    if (isNavigationAllowed(event.url, allowed())) return
    event.preventDefault()
    log(`blocked ${kind} to ${event.url}`)
  }
  contents.on('will-navigate', guard('navigation'))
  contents.on('will-frame-navigate', guard('frame navigation'))
  contents.on('will-redirect', guard('redirect'))
  contents.on('will-attach-webview', (event) => {
    event.preventDefault()
    log('blocked a <webview>')
  })
  contents.setWindowOpenHandler(windowOpenHandler(opts.openExternal))
}
