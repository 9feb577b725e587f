import { spawn, spawnSync } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { CLI_ENTRY } from '../../agent/demo.ts'
import { until } from './agents.ts'

export interface CliResult { code: number | null, stdout: string, stderr: string }

/** Runs `blockmesh ARGS` to completion under this Node. */
export function cli (args: string[], opts: { node?: string, entry?: string, timeoutMs?: number } = {}): CliResult {
  const r = spawnSync(opts.node ?? process.execPath, [opts.entry ?? CLI_ENTRY, ...args], { encoding: 'utf8', timeout: opts.timeoutMs ?? 60_000 })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

/** A long-running CLI command whose output lines are collected. */
export class CliProcess {
  readonly child: ChildProcess
  readonly lines: string[] = []
  constructor (args: string[]) {
    this.child = spawn(process.execPath, [CLI_ENTRY, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    createInterface({ input: this.child.stdout! }).on('line', l => this.lines.push(l))
    createInterface({ input: this.child.stderr! }).on('line', l => this.lines.push(l))
  }

  async line (re: RegExp, timeoutMs = 90_000): Promise<string> {
    return await until(() => this.lines.find(l => re.test(l)), `a line matching ${re} (got: ${this.lines.slice(-5).join(' | ')})`, timeoutMs)
  }

  async exit (): Promise<number | null> {
    if (this.child.exitCode != null || this.child.signalCode != null) return this.child.exitCode
    return await new Promise(resolve => this.child.once('exit', code => { resolve(code) }))
  }
}

export function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}
