import pino from 'pino'
import type { Logger } from 'pino'

export type { Logger }

/** JSON logs to stdout (one line each), as pino writes them. */
export function createLogger (level: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({ level, base: { pid: process.pid, ...bindings }, timestamp: pino.stdTimeFunctions.isoTime })
}
