import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { until } from './agents.ts'

const ROGUE = fileURLToPath(new URL('../fixtures/rogue-peer.ts', import.meta.url))

/** The rogue-peer fixture in its own process, with its JSON-line reports collected. */
export class RoguePeer {
  readonly child: ChildProcess
  readonly events: any[] = []

  constructor (target: string, victim: string, kinds: string[]) {
    this.child = spawn(process.execPath, [ROGUE, target, victim, kinds.join(',')], { stdio: ['pipe', 'pipe', 'inherit'] })
    createInterface({ input: this.child.stdout! }).on('line', line => {
      try { this.events.push(JSON.parse(line)) } catch { /* not a report */ }
    })
  }

  async waitFor (event: string, what = event, timeoutMs = 30_000): Promise<any> {
    return await until(() => this.events.find(e => e.event === event), `rogue peer: ${what}`, timeoutMs)
  }

  redial (): void {
    this.child.stdin!.write('redial\n')
  }

  async stop (): Promise<void> {
    if (this.child.exitCode != null || this.child.signalCode != null) return
    const done = new Promise(resolve => this.child.once('exit', resolve))
    this.child.kill('SIGKILL')
    await done
  }
}
