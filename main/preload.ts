/**
 * The window's preload: runs sandboxed (it may require only 'electron') in
 * its own JavaScript world, and hands the page `window.blockmesh` — a fixed
 * set of functions, each one invoke on an allow-listed channel. ipcRenderer
 * itself never reaches the page: a page holding it could send anything on
 * any channel. Main checks every message again (sender, frame, page, arguments).
 */
import { contextBridge, ipcRenderer } from 'electron'
import type { IpcChannel } from './ipc-channels.ts'
import type { BlockmeshDesktopApi } from './desktop-api.ts'

const invoke = async (channel: IpcChannel, ...args: unknown[]): Promise<unknown> => await ipcRenderer.invoke(channel, ...args)

const api: BlockmeshDesktopApi = {
  desktop: true,
  auth: {
    getToken: async () => await invoke('auth:get-token') as string | null,
    setToken: async (token: string) => { await invoke('auth:set-token', token) },
    clearToken: async () => { await invoke('auth:clear-token') }
  },
  connection: {
    current: async () => await invoke('connection:current') as { url: string, local: boolean } | null,
    connectLocal: async () => { await invoke('connection:connect-local') },
    connectRemote: async (url: string) => { await invoke('connection:connect-remote', url) },
    switch: async () => { await invoke('connection:switch') }
  }
}

contextBridge.exposeInMainWorld('blockmesh', api)
