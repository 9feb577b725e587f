/**
 * What the desktop app's preload exposes to pages as `window.blockmesh`
 * (types only: nothing here exists at run time). A page outside the desktop
 * app has no `window.blockmesh`, so the web UI tests for it before use.
 *
 * Every call goes to the main process, which decides which agent it concerns
 * (the one the window is connected to); a page never names an origin.
 */
export interface BlockmeshDesktopApi {
  readonly desktop: true
  readonly auth: {
    /** The stored API token of the connected agent, or null if none is stored. */
    getToken: () => Promise<string | null>
    /** Stores a token for the connected agent (1-4096 characters, no whitespace). */
    setToken: (token: string) => Promise<void>
    /** Forgets the connected agent's token. */
    clearToken: () => Promise<void>
  }
  readonly connection: {
    /** The connected agent (its origin, e.g. "http://127.0.0.1:7700", and whether the app started it), or null. */
    current: () => Promise<{ url: string, local: boolean } | null>
    /** Starts (or reuses) the app's own local agent and opens its dashboard. */
    connectLocal: () => Promise<void>
    /** Opens the dashboard of the agent at an http(s) URL (only its origin is used). */
    connectRemote: (url: string) => Promise<void>
    /** Disconnects and goes back to the connect page (a local agent keeps running until the app quits). */
    switch: () => Promise<void>
  }
}
