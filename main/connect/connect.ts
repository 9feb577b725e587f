/**
 * The connect page's script (bundled to connect.js, run in the sandboxed
 * window with the preload's `window.blockmesh`). It only asks main to
 * connect; main checks the URL again and decides where the window goes.
 */
import type { BlockmeshDesktopApi } from '../desktop-api.ts'

const api = (window as unknown as { blockmesh?: BlockmeshDesktopApi }).blockmesh

function element<T extends HTMLElement> (id: string): T {
  const el = document.getElementById(id)
  if (el == null) throw new Error(`#${id} missing from the connect page`)
  return el as T
}

const localButton = element<HTMLButtonElement>('local')
const form = element<HTMLFormElement>('remote')
const urlInput = element<HTMLInputElement>('url')
const status = element<HTMLParagraphElement>('status')
const errorBox = element<HTMLParagraphElement>('error')

/** Electron prefixes errors thrown in main with "Error invoking remote method '<channel>': <Name>: "; the rest is the message. */
function cleanError (err: unknown): string {
  const message = err instanceof Error ? err.message : String(err)
  return message.replace(/^Error invoking remote method '[^']*': (?:[A-Za-z]*Error: )?/, '')
}

function showError (message: string | null): void {
  errorBox.textContent = message ?? ''
  errorBox.hidden = message == null
}

function setBusy (message: string | null): void {
  status.textContent = message ?? ''
  localButton.disabled = message != null
  for (const el of Array.from(form.elements)) (el as HTMLInputElement | HTMLButtonElement).disabled = message != null
}

/** Runs a connect action; on success main navigates away, on failure the page says why. */
async function attempt (busy: string, action: () => Promise<void>): Promise<void> {
  showError(null)
  setBusy(busy)
  try {
    await action()
  } catch (err) {
    showError(cleanError(err))
  } finally {
    setBusy(null)
  }
}

// main sends the window back here with ?error=... when a connection failed or the local agent stopped
const initial = new URLSearchParams(location.search).get('error')
showError(initial != null && initial !== '' ? initial : null)

if (api == null) {
  setBusy(null)
  localButton.disabled = true
  showError('This page works only inside the Blockmesh desktop app.')
} else {
  const bridge = api
  localButton.addEventListener('click', () => {
    void attempt('Starting the local agent… (the first start takes a few seconds)', async () => { await bridge.connection.connectLocal() })
  })
  form.addEventListener('submit', (event) => {
    event.preventDefault()
    const url = urlInput.value.trim()
    void attempt(`Connecting to ${url}…`, async () => { await bridge.connection.connectRemote(url) })
  })
}
