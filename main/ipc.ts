import { z } from 'zod'
import { IPC_CHANNELS, isIpcChannel } from './ipc-channels.ts'
import type { IpcChannel } from './ipc-channels.ts'
import { placeOf } from './security.ts'
import type { AllowedLocations, Log, Place } from './security.ts'
import { AgentUrlSchema, TokenSchema, describeIssues } from './schemas.ts'

export { IPC_CHANNELS }
export type { IpcChannel }

/** Each channel's arguments, checked before its handler runs (extra arguments are refused too). */
export const CHANNEL_ARGS = {
  'auth:get-token': z.tuple([]),
  'auth:set-token': z.tuple([TokenSchema]),
  'auth:clear-token': z.tuple([]),
  'connection:current': z.tuple([]),
  'connection:connect-local': z.tuple([]),
  'connection:connect-remote': z.tuple([AgentUrlSchema]),
  'connection:switch': z.tuple([])
} satisfies Record<IpcChannel, z.ZodTuple>

/**
 * Which pages may use each channel. Tokens are only for the agent's own
 * dashboard; starting or choosing an agent only from the connect page, so a
 * (remote) dashboard cannot start a local agent or send the window elsewhere
 * by itself; it can only go back to the connect page.
 */
export const CHANNEL_PLACES: Record<IpcChannel, readonly Place[]> = {
  'auth:get-token': ['agent'],
  'auth:set-token': ['agent'],
  'auth:clear-token': ['agent'],
  'connection:current': ['connect', 'agent'],
  'connection:connect-local': ['connect'],
  'connection:connect-remote': ['connect'],
  'connection:switch': ['connect', 'agent']
}

export type IpcHandlers = { [C in IpcChannel]: (...args: z.output<typeof CHANNEL_ARGS[C]>) => unknown }

/** The parts of an IPC event the sender check reads. */
export interface IpcSender {
  sender: { id: number }
  senderFrame: { url: string, parent: unknown } | null
}

/** A message from anywhere but the app's window's main frame on an allowed page. */
export class IpcSenderError extends Error {
  readonly channel: string
  constructor (channel: string, reason: string) {
    super(`IPC ${channel} refused: ${reason}`)
    this.name = 'IpcSenderError'
    this.channel = channel
  }
}

/** Arguments that do not match the channel's schema. */
export class IpcPayloadError extends Error {
  readonly channel: string
  constructor (channel: string, reason: string) {
    super(`IPC ${channel}: bad arguments: ${reason}`)
    this.name = 'IpcPayloadError'
    this.channel = channel
  }
}

/** Registering a channel that is not on the allow-list (a programming error, caught at start). */
export class UnknownIpcChannelError extends Error {
  readonly channel: string
  constructor (channel: string) {
    super(`IPC channel ${JSON.stringify(channel)} is not on the allow-list (${IPC_CHANNELS.join(', ')})`)
    this.name = 'UnknownIpcChannelError'
    this.channel = channel
  }
}

/** ipcMain's handle() (Electron's IpcMain fits: its events carry more than IpcSender reads). */
export interface IpcMainLike {
  handle: (channel: string, listener: (event: IpcSender, ...args: any[]) => Promise<unknown>) => void
}

export type SenderGuard = (event: IpcSender, channel: IpcChannel) => Place

/**
 * The sender check: the message must come from the app's own window (its
 * webContents id), from that window's main frame (never an iframe), while
 * the frame is on a page allowed for the channel. Anything else throws
 * IpcSenderError (which the renderer sees as a rejected promise) and is logged.
 */
export function createSenderGuard (opts: { windowContentsId: () => number | null, allowed: () => AllowedLocations, log?: Log }): SenderGuard {
  const log = opts.log ?? (() => {})
  return (event, channel) => {
    const refuse = (reason: string): never => {
      const err = new IpcSenderError(channel, reason)
      log(err.message)
      throw err
    }
    const id = opts.windowContentsId()
    if (id == null || event.sender.id !== id) return refuse(`sender webContents ${event.sender.id} is not the app's window`)
    const frame = event.senderFrame
    if (frame == null) return refuse('the sending frame is gone')
    if (frame.parent != null) return refuse('sent from a subframe')
    const place = placeOf(frame.url, opts.allowed())
    if (place == null) return refuse(`sent from ${frame.url}, which is not a page of the app or of the connected agent`)
    if (!CHANNEL_PLACES[channel].includes(place)) return refuse(`not allowed from the ${place === 'agent' ? 'agent\'s dashboard' : 'connect page'}`)
    return place
  }
}

/**
 * Registers `ipcMain.handle` for each handler. Channels not on the allow-list
 * throw at registration; at each call the sender is checked, then the
 * arguments are parsed with the channel's schema (the handler gets the
 * parsed values), then the handler runs.
 */
export function registerIpc (ipcMain: IpcMainLike, handlers: Partial<IpcHandlers>, guard: SenderGuard, log: Log = () => {}): IpcChannel[] {
  const entries = Object.entries(handlers) as Array<[string, ((...args: unknown[]) => unknown) | undefined]>
  for (const [channel] of entries) if (!isIpcChannel(channel)) throw new UnknownIpcChannelError(channel)
  const registered: IpcChannel[] = []
  for (const [channel, handler] of entries) {
    if (handler == null || !isIpcChannel(channel)) continue
    const schema: z.ZodType<unknown[]> = CHANNEL_ARGS[channel]
    ipcMain.handle(channel, async (event: IpcSender, ...args: unknown[]) => {
      guard(event, channel)
      const parsed = schema.safeParse(args)
      if (!parsed.success) {
        const err = new IpcPayloadError(channel, describeIssues(parsed.error))
        log(err.message)
        throw err
      }
      return await handler(...parsed.data)
    })
    registered.push(channel)
  }
  return registered
}
