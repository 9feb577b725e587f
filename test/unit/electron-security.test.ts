import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { EventEmitter } from 'node:events'
import { readFileSync } from 'node:fs'
import { CSP } from '../../agent/api/csp.ts'
import { hardenSession, hardenWebContents, isExternalLink, isNavigationAllowed, placeOf, secureWebPreferences, windowOpenHandler, withCsp } from '../../main/security.ts'
import type { AllowedLocations } from '../../main/security.ts'

const CONNECT_PAGE = 'file:///opt/Blockmesh/resources/app.asar/main/dist/connect/index.html'
const connected: AllowedLocations = { connectPage: CONNECT_PAGE, agentOrigin: 'http://127.0.0.1:7700' }
const notConnected: AllowedLocations = { connectPage: CONNECT_PAGE, agentOrigin: null }

describe('web preferences', () => {
  test('sandboxed, isolated, no Node.js anywhere, no webview; frozen', () => {
    const prefs = secureWebPreferences('/app/main/dist/preload.cjs')
    assert.deepEqual({ ...prefs }, {
      contextIsolation: true,
      sandbox: true,
      nodeIntegration: false,
      nodeIntegrationInWorker: false,
      nodeIntegrationInSubFrames: false,
      webSecurity: true,
      allowRunningInsecureContent: false,
      webviewTag: false,
      spellcheck: false,
      preload: '/app/main/dist/preload.cjs'
    })
    assert.ok(Object.isFrozen(prefs))
    assert.throws(() => { (prefs as { sandbox: boolean }).sandbox = false }, TypeError)
  })
})

describe('navigation guard', () => {
  test('the connected agent\'s origin, any path, query or fragment', () => {
    for (const url of ['http://127.0.0.1:7700/', 'http://127.0.0.1:7700', 'http://127.0.0.1:7700/blocks/b1?tab=logs#top', 'http://127.0.0.1:7700/../x']) {
      assert.equal(isNavigationAllowed(url, connected), true, url)
      assert.equal(placeOf(url, connected), 'agent', url)
    }
  })

  test('the connect page, with or without an error query; connected or not', () => {
    for (const allowed of [connected, notConnected]) {
      assert.equal(placeOf(CONNECT_PAGE, allowed), 'connect')
      assert.equal(placeOf(CONNECT_PAGE + '?error=agent%20stopped', allowed), 'connect')
      assert.equal(placeOf(CONNECT_PAGE + '#x', allowed), 'connect')
    }
  })

  test('rejects other origins, ports, schemes and files', () => {
    const rejected = [
      'http://127.0.0.1:7701/', // another port
      'https://127.0.0.1:7700/', // another scheme
      'http://localhost:7700/', // another host name for the same address is another origin
      'http://evil.example/',
      'http://user:pw@127.0.0.1:7700/', // credentials
      'file:///etc/passwd',
      'file:///opt/Blockmesh/resources/app.asar/main/dist/connect/other.html',
      'file:///opt/Blockmesh/resources/app.asar/main/dist/connect/index.html/..%2f..%2fmain.cjs',
      'file://otherhost/opt/Blockmesh/resources/app.asar/main/dist/connect/index.html',
      'javascript:alert(1)',
      'data:text/html,<script>alert(1)</script>',
      'about:blank',
      'chrome://settings',
      'devtools://devtools/bundled/inspector.html',
      'not a url',
      ''
    ]
    for (const url of rejected) assert.equal(isNavigationAllowed(url, connected), false, url)
  })

  test('before connecting no agent origin is allowed', () => {
    assert.equal(isNavigationAllowed('http://127.0.0.1:7700/', notConnected), false)
  })

  test('a file: path that normalises to the connect page is the connect page (the URL parser resolves dot segments)', () => {
    assert.equal(placeOf('file:///opt/Blockmesh/resources/app.asar/main/dist/x/../connect/index.html', connected), 'connect')
  })
})

describe('new windows', () => {
  test('always denied; https links (only) go to the system browser', () => {
    const opened: string[] = []
    const handler = windowOpenHandler(url => opened.push(url))
    for (const url of ['https://docs.example/guide', 'http://example.com/', 'file:///etc/passwd', 'javascript:alert(1)', 'https://u:p@example.com/', 'mailto:x@example.com', 'http://127.0.0.1:7700/']) {
      assert.deepEqual(handler({ url }), { action: 'deny' }, url)
    }
    assert.deepEqual(opened, ['https://docs.example/guide'])
  })

  test('without an opener nothing is opened and the window is still denied', () => {
    assert.deepEqual(windowOpenHandler()({ url: 'https://docs.example/' }), { action: 'deny' })
    assert.equal(isExternalLink('https://docs.example/'), true)
    assert.equal(isExternalLink('http://docs.example/'), false)
  })
})

describe('CSP on every response', () => {
  test('added when the server sent none', () => {
    const headers = withCsp({ 'Content-Type': ['text/html'] })
    assert.deepEqual(headers['Content-Security-Policy'], [CSP])
    assert.deepEqual(headers['Content-Type'], ['text/html'])
  })

  test('a weaker policy from the server does not replace ours (both are enforced)', () => {
    const headers = withCsp({ 'content-security-policy': ["default-src * 'unsafe-inline'"], 'x-other': 'v' })
    assert.deepEqual(headers['Content-Security-Policy'], ["default-src * 'unsafe-inline'", CSP])
    assert.equal(Object.keys(headers).filter(k => k.toLowerCase() === 'content-security-policy').length, 1)
    assert.deepEqual(headers['x-other'], ['v'])
  })

  test('the agent\'s own identical header is not doubled', () => {
    assert.deepEqual(withCsp({ 'Content-Security-Policy': [CSP] })['Content-Security-Policy'], [CSP])
    assert.deepEqual(withCsp(undefined), { 'Content-Security-Policy': [CSP] })
  })

  test('the policy allows nothing inline and nothing from elsewhere', () => {
    assert.match(CSP, /default-src 'none'/)
    assert.match(CSP, /script-src 'self'(;|$)/)
    assert.doesNotMatch(CSP, /unsafe-inline|unsafe-eval|\*/)
  })
})

describe('session rules', () => {
  test('every permission request and check is denied; responses get the CSP', () => {
    let request: ((contents: unknown, permission: string, callback: (granted: boolean) => void) => void) | undefined
    let check: (() => boolean) | undefined
    let device: (() => boolean) | undefined
    let headers: ((details: { responseHeaders?: Record<string, string[]> }, callback: (r: { responseHeaders?: Record<string, string[]> }) => void) => void) | undefined
    const logged: string[] = []
    hardenSession({
      setPermissionRequestHandler: (h: typeof request) => { request = h },
      setPermissionCheckHandler: (h: typeof check) => { check = h },
      setDevicePermissionHandler: (h: typeof device) => { device = h },
      webRequest: { onHeadersReceived: (h: typeof headers) => { headers = h } }
    } as unknown as Parameters<typeof hardenSession>[0], m => logged.push(m))

    for (const permission of ['media', 'geolocation', 'notifications', 'clipboard-read', 'fullscreen', 'openExternal']) {
      let granted: boolean | undefined
      request?.(null, permission, g => { granted = g })
      assert.equal(granted, false, permission)
    }
    assert.equal(check?.(), false)
    assert.equal(device?.(), false)
    assert.ok(logged.some(l => l.includes('geolocation')))

    let response: { responseHeaders?: Record<string, string[]> } | undefined
    headers?.({ responseHeaders: { 'content-type': ['text/html'] } }, r => { response = r })
    assert.deepEqual(response?.responseHeaders?.['Content-Security-Policy'], [CSP])
  })
})

describe('webContents rules', () => {
  class FakeContents extends EventEmitter {
    openHandler: ((details: { url: string }) => { action: string }) | undefined
    setWindowOpenHandler (h: (details: { url: string }) => { action: string }): void { this.openHandler = h }
  }
  const navigate = (contents: FakeContents, event: string, url: string): boolean => {
    let prevented = false
    contents.emit(event, { url, preventDefault: () => { prevented = true } })
    return prevented
  }

  test('navigations, frame navigations and redirects outside the allowed places are prevented; the allowed set is read at each event', () => {
    const contents = new FakeContents()
    let allowed = notConnected
    const logged: string[] = []
    hardenWebContents(contents as unknown as Parameters<typeof hardenWebContents>[0], () => allowed, { log: m => logged.push(m) })
    for (const event of ['will-navigate', 'will-frame-navigate', 'will-redirect']) {
      assert.equal(navigate(contents, event, 'http://127.0.0.1:7700/'), true, `${event} before connecting`)
      assert.equal(navigate(contents, event, CONNECT_PAGE), false, `${event} to the connect page`)
    }
    allowed = connected
    for (const event of ['will-navigate', 'will-frame-navigate', 'will-redirect']) {
      assert.equal(navigate(contents, event, 'http://127.0.0.1:7700/peers'), false, `${event} on the agent`)
      assert.equal(navigate(contents, event, 'http://127.0.0.1:9999/'), true, `${event} to another port`)
      assert.equal(navigate(contents, event, 'javascript:void(0)'), true, `${event} to javascript:`)
    }
    assert.ok(logged.some(l => l.includes('http://127.0.0.1:9999/')))
  })

  test('<webview> is refused and window.open is denied', () => {
    const contents = new FakeContents()
    hardenWebContents(contents as unknown as Parameters<typeof hardenWebContents>[0], () => connected)
    let prevented = false
    contents.emit('will-attach-webview', { preventDefault: () => { prevented = true } }, {}, {})
    assert.equal(prevented, true)
    assert.deepEqual(contents.openHandler?.({ url: 'http://127.0.0.1:7700/' }), { action: 'deny' })
  })
})

describe('the connect page', () => {
  const html = readFileSync(new URL('../../main/connect/index.html', import.meta.url), 'utf8')

  test('has a strict CSP meta tag and no inline script, style or handlers', () => {
    const csp = /<meta http-equiv="Content-Security-Policy" content="([^"]+)"/.exec(html)?.[1]
    assert.ok(csp != null, 'a CSP meta tag')
    assert.match(csp, /default-src 'none'/)
    assert.match(csp, /script-src 'self'(;|$)/)
    assert.doesNotMatch(csp, /unsafe-|\*/)
    for (const m of html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)) {
      assert.match(m[1], /src="connect\.js"/)
      assert.equal(m[2].trim(), '', 'no inline script')
    }
    assert.doesNotMatch(html, /<style\b|\sstyle="|\son[a-z]+="/i)
  })
})
