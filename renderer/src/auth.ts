import { Store } from './store.ts'
import { desktop } from './desktop.ts'
import type { AuthAnswer } from './types.ts'

/**
 * The agent's token: in this page's memory only (a reload forgets it), or in
 * the OS keychain through the desktop app. Never in the URL, cookies or
 * localStorage.
 */
class Auth {
  readonly state = new Store<{ token: string | null }>({ token: null })
  token (): string | null { return this.state.get().token }

  /** Restores the desktop app's stored token for this agent, if any. */
  async restore (): Promise<void> {
    const d = desktop()
    if (d == null) return
    const t = await d.auth.getToken().catch(() => null)
    if (t != null && t !== '') this.state.set({ token: t })
  }

  /** Checks the token with the agent (GET /api/auth: 401 for a wrong one) and keeps it. */
  async login (token: string): Promise<void> {
    const t = token.trim()
    if (t === '' || /\s/.test(t)) throw new Error('the token is one word: paste the content of the agent\'s api-token file')
    const res = await fetch('/api/auth', { headers: { authorization: `Bearer ${t}` }, cache: 'no-store', credentials: 'omit' })
    if (res.status === 401) throw new Error('the agent refused this token')
    if (!res.ok) throw new Error(`the agent answered HTTP ${res.status}`)
    const body = await res.json().catch(() => null) as Partial<AuthAnswer> | null
    // a proxy that strips Authorization would get { authenticated: false } with 200: not a login
    if (body?.authenticated !== true) throw new Error('the agent did not see the token (is a proxy dropping the Authorization header?)')
    this.state.set({ token: t })
    await desktop()?.auth.setToken(t)
  }

  async logout (): Promise<void> {
    this.state.set({ token: null })
    await desktop()?.auth.clearToken()
  }
}

export const auth = new Auth()
