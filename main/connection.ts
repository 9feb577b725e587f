import type { AllowedLocations, Log } from './security.ts'
import type { IpcHandlers } from './ipc.ts'
import type { TokenStore } from './token-store.ts'

/** A token call while the window is not connected to an agent. */
export class NotConnectedError extends Error {
  constructor () {
    super('not connected to an agent')
    this.name = 'NotConnectedError'
  }
}

/** The agent's page did not load (the window is back on the connect page, which shows this). */
export class PageLoadError extends Error {
  constructor (origin: string, options?: ErrorOptions) {
    super(`could not open ${origin}: ${(options?.cause as Error | undefined)?.message ?? 'load failed'}`, options)
    this.name = 'PageLoadError'
  }
}

export interface Connection {
  /** the agent's origin, e.g. http://127.0.0.1:7700 */
  origin: string
  /** whether it is the app's own local agent */
  local: boolean
}

export interface ConnectionDeps {
  /** file: URL of the connect page */
  connectPage: string
  /** loads a URL in the app's window; rejects if the page fails to load */
  load: (url: string) => Promise<void>
  /** starts the local agent, or returns the running one */
  startLocalAgent: () => Promise<{ origin: string, token: string }>
  /** throws if `origin` is not a reachable agent */
  probe: (origin: string) => Promise<unknown>
  tokens: Pick<TokenStore, 'get' | 'set' | 'clear'>
  log?: Log
}

/**
 * What the window is connected to, and the actions that change it. Main
 * alone decides the connected origin: it is what the navigation guard and
 * the IPC sender check allow, and the only origin tokens are read or stored
 * for, whatever page asks.
 */
export class ConnectionController {
  private connection: Connection | null = null
  private readonly deps: ConnectionDeps

  constructor (deps: ConnectionDeps) {
    this.deps = deps
  }

  current (): { url: string, local: boolean } | null {
    return this.connection == null ? null : { url: this.connection.origin, local: this.connection.local }
  }

  allowed (): AllowedLocations {
    return { connectPage: this.deps.connectPage, agentOrigin: this.connection?.origin ?? null }
  }

  /** Starts (or reuses) the local agent, stores its token for its origin, opens its dashboard. */
  async connectLocal (): Promise<void> {
    const agent = await this.deps.startLocalAgent()
    this.deps.tokens.set(agent.origin, agent.token)
    await this.open({ origin: agent.origin, local: true })
  }

  /** Checks that `origin` answers like an agent, then opens its dashboard. */
  async connectRemote (origin: string): Promise<void> {
    await this.deps.probe(origin)
    await this.open({ origin, local: false })
  }

  /** Disconnects and shows the connect page. */
  async switch (): Promise<void> {
    await this.showConnectPage()
  }

  /** Disconnects and shows the connect page, with an error message if given. */
  async showConnectPage (error?: string): Promise<void> {
    this.connection = null
    const url = new URL(this.deps.connectPage)
    if (error != null) url.searchParams.set('error', error)
    await this.deps.load(url.href)
  }

  /** The local agent at `origin` stopped: if the window shows it, back to the connect page with why. */
  async localAgentStopped (origin: string, why: string): Promise<void> {
    if (this.connection?.local !== true || this.connection.origin !== origin) return
    await this.showConnectPage(`The local agent stopped (${why}).`)
  }

  getToken (): string | null {
    return this.connection == null ? null : this.deps.tokens.get(this.connection.origin)
  }

  setToken (token: string): void {
    if (this.connection == null) throw new NotConnectedError()
    this.deps.tokens.set(this.connection.origin, token)
  }

  clearToken (): void {
    if (this.connection == null) throw new NotConnectedError()
    this.deps.tokens.clear(this.connection.origin)
  }

  /** The IPC handlers (registered with registerIpc, which checks senders and arguments first). */
  handlers (): IpcHandlers {
    return {
      'auth:get-token': () => this.getToken(),
      'auth:set-token': (token) => { this.setToken(token) },
      'auth:clear-token': () => { this.clearToken() },
      'connection:current': () => this.current(),
      'connection:connect-local': async () => { await this.connectLocal() },
      'connection:connect-remote': async (origin) => { await this.connectRemote(origin) },
      'connection:switch': async () => { await this.switch() }
    }
  }

  /** Connects first (so the navigation guard allows the origin), then loads; a failed load goes back to the connect page. */
  private async open (connection: Connection): Promise<void> {
    this.connection = connection
    try {
      await this.deps.load(connection.origin + '/')
    } catch (err) {
      const failed = new PageLoadError(connection.origin, { cause: err })
      // a newer connect or switch has taken over: its page stands
      if (this.connection !== connection) throw failed
      this.deps.log?.(failed.message)
      await this.showConnectPage(failed.message)
      throw failed
    }
  }
}
