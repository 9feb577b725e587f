/**
 * What the desktop app's preload exposes as window.blockmesh (main/preload.ts);
 * absent in a plain browser. The token lives in the OS keychain there, per agent.
 */
export interface BlockmeshDesktop {
  readonly desktop: true
  auth: {
    getToken: () => Promise<string | null>
    setToken: (token: string) => Promise<void>
    clearToken: () => Promise<void>
  }
  connection: {
    current: () => Promise<{ url: string, local: boolean } | null>
    connectLocal: () => Promise<void>
    connectRemote: (url: string) => Promise<void>
    switch: () => Promise<void>
  }
}

export function desktop (): BlockmeshDesktop | undefined {
  const d = (window as unknown as { blockmesh?: BlockmeshDesktop }).blockmesh
  return d?.desktop === true ? d : undefined
}
