import { fstatSync } from 'node:fs'
import net from 'node:net'
import pino from 'pino'
import type { Logger, DestinationStream } from 'pino'

export type { Logger }

/** Log bytes held in memory while stdout cannot take them; past this, lines are dropped (and counted). */
const MAX_BUFFERED_LOG_BYTES = 8 * 1024 * 1024

/**
 * stdout when it is a pipe or socket: written through a non-blocking libuv
 * handle on the event loop, with a bounded queue. A reader that stalls (a
 * full pipe) can neither block the agent nor keep it from exiting: a
 * blocking write() on a worker thread would, since Node joins its worker
 * threads at exit.
 */
class PipeDestination implements DestinationStream {
  private readonly socket: net.Socket
  dropped = 0

  constructor (fd: number) {
    this.socket = new net.Socket({ fd, readable: false, writable: true })
    this.socket.on('error', () => { /* EPIPE etc.: logging is best effort */ })
    this.socket.unref()
  }

  write (line: string): void {
    if (this.socket.destroyed) return
    if (this.socket.writableLength > MAX_BUFFERED_LOG_BYTES) {
      this.dropped++
      return
    }
    this.socket.write(line)
  }

  flush (cb: () => void): void {
    if (this.socket.writableLength === 0 || this.socket.destroyed) cb()
    else this.socket.once('drain', cb)
  }
}

function isPipe (fd: number): boolean {
  try {
    const st = fstatSync(fd)
    return st.isFIFO() || st.isSocket()
  } catch {
    return false
  }
}

/** JSON logs to stdout, one line each; see PipeDestination for pipes. */
export function createLogger (level: string, bindings: Record<string, unknown> = {}): Logger {
  const pipe = isPipe(1) ? new PipeDestination(1) : null
  // files and terminals: pino's synchronous writer (a file write never stalls for good)
  const dest: DestinationStream = pipe ?? pino.destination({ dest: 1, sync: true })
  const logger = pino({ level, base: { pid: process.pid, ...bindings }, timestamp: pino.stdTimeFunctions.isoTime }, dest)
  Object.defineProperty(logger, 'droppedLines', { get: () => pipe?.dropped ?? 0 })
  return logger
}

/** Flushes buffered log lines, waiting at most `ms`. */
export async function flushLogger (logger: Logger, ms = 2000): Promise<void> {
  await Promise.race([
    new Promise<void>(resolve => { logger.flush(() => { resolve() }) }),
    new Promise<void>(resolve => setTimeout(resolve, ms).unref())
  ])
}
