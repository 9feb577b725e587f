import type { BlockmeshDesktopApi } from '../../main/desktop-api.ts'

/**
 * What the desktop app's preload exposes as window.blockmesh (main/preload.ts);
 * absent in a plain browser. The token lives in the OS keychain there, per agent.
 */
export function desktop (): BlockmeshDesktopApi | undefined {
  const d = (window as unknown as { blockmesh?: BlockmeshDesktopApi }).blockmesh
  return d?.desktop === true ? d : undefined
}
