import type { ChildProcess } from 'node:child_process'
import { closeSync, openSync, readSync } from 'node:fs'
import { join } from 'node:path'
import { READY_FILE } from './config.ts'
import type { ReadyInfo } from './config.ts'

/** Why an agent process did not become ready: it exited, the bound passed, or the wait was cancelled. */
export class AgentNotReadyError extends Error {
  override readonly name = 'AgentNotReadyError'
  readonly reason: 'exited' | 'timeout' | 'aborted'
  constructor (reason: AgentNotReadyError['reason'], message: string) {
    super(message)
    this.reason = reason
  }
}

/** Reads at most `max` bytes of a file (its start). */
function readHead (path: string, max: number): string {
  const fd = openSync(path, 'r')
  try {
    const buf = Buffer.alloc(max)
    return buf.subarray(0, readSync(fd, buf, 0, max, 0)).toString('utf8')
  } finally { closeSync(fd) }
}

/**
 * Waits until DIR/agent.json names this child's pid (the agent writes it once
 * its API listens). Fails with AgentNotReadyError when the child exits first,
 * the bound passes, or `signal` aborts. Used by the demo, the tests and the
 * desktop app's local agent.
 */
export async function waitReady (dir: string, child: ChildProcess, timeoutMs = 60_000, signal?: AbortSignal): Promise<ReadyInfo> {
  const path = join(dir, READY_FILE)
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (signal?.aborted === true) throw new AgentNotReadyError('aborted', `the wait for the agent in ${dir} was cancelled`)
    if (child.exitCode != null || child.signalCode != null) {
      throw new AgentNotReadyError('exited', `agent in ${dir} exited (${child.exitCode ?? child.signalCode}) before it was ready; see ${join(dir, 'agent.log')}`)
    }
    try {
      const info = JSON.parse(readHead(path, 64 * 1024)) as ReadyInfo
      if (info.pid === child.pid && typeof info.apiUrl === 'string') return info
    } catch { /* not there yet, or being written */ }
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  throw new AgentNotReadyError('timeout', `agent in ${dir} not ready after ${timeoutMs} ms; see ${join(dir, 'agent.log')}`)
}
