/**
 * The only IPC channels between the app's window and its main process.
 * Kept free of imports so the sandboxed preload (one bundled file that may
 * require nothing but 'electron') can share the list with main.
 */
export const IPC_CHANNELS = [
  'auth:get-token',
  'auth:set-token',
  'auth:clear-token',
  'connection:current',
  'connection:connect-local',
  'connection:connect-remote',
  'connection:switch'
] as const

export type IpcChannel = typeof IPC_CHANNELS[number]

export function isIpcChannel (name: string): name is IpcChannel {
  return (IPC_CHANNELS as readonly string[]).includes(name)
}
