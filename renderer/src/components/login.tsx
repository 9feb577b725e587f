import { useState } from 'preact/hooks'
import { auth } from '../auth.ts'
import { messageOf } from '../api.ts'
import { desktop } from '../desktop.ts'

/** Asks for the agent's token; it is checked with the agent and kept in memory (or the OS keychain in the desktop app). */
export function Login ({ onClose }: { onClose: () => void }) {
  const [token, setToken] = useState('')
  const [error, setError] = useState<string | null>(null)
  const [busy, setBusy] = useState(false)
  const submit = async (e: Event): Promise<void> => {
    e.preventDefault()
    setBusy(true)
    setError(null)
    try {
      await auth.login(token)
      onClose()
    } catch (err) {
      setError(messageOf(err))
    } finally { setBusy(false) }
  }
  return (
    <div class="modal" role="dialog" aria-modal="true" aria-labelledby="login-title" onKeyDown={e => { if (e.key === 'Escape') onClose() }}>
      <form class="card" onSubmit={e => { void submit(e) }} noValidate>
        <h2 id="login-title">Log in to this agent</h2>
        <p class="muted">Deploying, scaling, splitting and chatting need the agent's token (file <code>api-token</code> in its data directory; <code>npm start</code> prints it). It stays {desktop() != null ? 'in your OS keychain' : 'in this page\'s memory: a reload forgets it'}.</p>
        <label>Token
          <input type="password" name="token" autoComplete="off" data-testid="login-token" value={token} onInput={e => { setToken((e.target as HTMLInputElement).value) }} autoFocus />
        </label>
        {error != null && <p class="error" role="alert">{error}</p>}
        <div class="row">
          <button type="submit" disabled={busy} data-testid="login-submit">Log in</button>
          <button type="button" class="secondary" onClick={onClose}>Cancel</button>
        </div>
      </form>
    </div>
  )
}

/** A note shown where an action needs the token. */
export function NeedsLogin ({ what }: { what: string }) {
  return <p class="muted needs-login">Log in with the agent's token to {what}; everything here is readable without it.</p>
}
