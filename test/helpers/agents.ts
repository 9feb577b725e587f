import { execFileSync, spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CLI_ENTRY } from '../../agent/demo.ts'
import { waitReady } from '../../agent/ready.ts'
import type { ReadyInfo } from '../../agent/config.ts'

export const HEARTBEAT_MS = 1000

export function tempDir (prefix = 'bm-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix))
}

/** Polls `fn` until it returns a truthy value; a bound against hanging, not a speed assertion. */
export async function until<T> (fn: () => Promise<T | undefined | null | false> | T | undefined | null | false, what: string, timeoutMs = 30_000, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let lastErr: unknown
  while (Date.now() < deadline) {
    try {
      const v = await fn()
      if (v) return v
    } catch (err) { lastErr = err }
    await new Promise(r => setTimeout(r, intervalMs))
  }
  throw new Error(`timed out waiting for ${what}${lastErr != null ? ` (last error: ${(lastErr as Error).message})` : ''}`)
}

export interface AgentSpec {
  name: string
  dir?: string
  cluster?: string
  bootstrap?: string[]
  heartbeatMs?: number
  swarmKey?: string
  allow?: string[]
  simulateGpus?: string
  extra?: string[]
  /** Run inside this network namespace (`ip netns exec NS`), e.g. a NetLab host's (test/helpers/netns.ts). */
  netns?: string
  /** Address for libp2p (`--listen /ip4/IP/tcp/0`) and the HTTP API (`--api-host IP`); default 127.0.0.1. */
  listenIp?: string
  /** Pin the agent to these CPUs (`taskset -c CPUS`), e.g. '0': a box with one core (benchmarks). */
  cpus?: string
  /**
   * Folders this agent must not see: in its own mount namespace each gets an empty tmpfs over it (needs root
   * and util-linux `unshare`; see canHide()). Another box's files, on one machine.
   */
  hide?: string[]
}

/** Whether AgentSpec.hide works here (root, and a mount namespace can be made); the reason when not. */
export function canHide (): string | false {
  if (process.getuid?.() !== 0) return 'hiding folders from an agent needs root (a mount namespace per agent)'
  try {
    execFileSync('unshare', ['--mount', '--propagation', 'private', 'true'], { stdio: 'ignore', timeout: 10_000 })
    return false
  } catch (err) {
    return `unshare --mount does not work here: ${(err as Error).message}`
  }
}

/** A real agent in its own OS process, on loopback (or a network namespace: spec.netns) with OS-chosen ports. */
export class AgentProcess {
  readonly spec: AgentSpec
  readonly dir: string
  child!: ChildProcess
  info!: ReadyInfo
  token!: string

  constructor (spec: AgentSpec) {
    this.spec = spec
    this.dir = spec.dir ?? tempDir(`bm-${spec.name}-`)
  }

  static async start (spec: AgentSpec): Promise<AgentProcess> {
    const a = new AgentProcess(spec)
    await a.launch()
    return a
  }

  args (): string[] {
    const s = this.spec
    const args = [CLI_ENTRY, 'agent', '--name', s.name, '--cluster', s.cluster ?? 'test',
      '--listen', `/ip4/${s.listenIp ?? '127.0.0.1'}/tcp/0`, '--api-port', '0', '--data-dir', this.dir,
      '--heartbeat-ms', String(s.heartbeatMs ?? HEARTBEAT_MS), '--log-level', 'info']
    if (s.bootstrap != null && s.bootstrap.length > 0) args.push('--bootstrap', s.bootstrap.join(','))
    if (s.swarmKey != null) args.push('--swarm-key', s.swarmKey)
    if (s.allow != null && s.allow.length > 0) args.push('--allow', s.allow.join(','))
    if (s.simulateGpus != null) args.push('--simulate-gpus', s.simulateGpus, '--allow-simulated-gpus')
    if (s.listenIp != null) args.push('--api-host', s.listenIp)
    args.push(...(s.extra ?? []))
    return args
  }

  async launch (overrides: Partial<AgentSpec> = {}): Promise<void> {
    Object.assign(this.spec, overrides)
    const log = openSync(join(this.dir, 'agent.log'), 'a')
    // `ip netns exec` execs the command, so the child's pid is the agent's (waitReady checks it)
    // taskset and `ip netns exec` both exec too
    let node = this.spec.cpus != null ? ['taskset', '-c', this.spec.cpus, process.execPath] : [process.execPath]
    if (this.spec.hide != null && this.spec.hide.length > 0) {
      // `ip netns exec` already gives the command a mount namespace of its own; otherwise unshare makes one.
      // The shell mounts an empty tmpfs over each hidden folder, then execs the agent (the pid stays the agent's).
      const mounts = this.spec.hide.map((_, i) => `mount -t tmpfs -o size=1m blockmesh-hidden "$${i + 1}"`).join(' && ')
      const script = `${mounts} && shift ${this.spec.hide.length} && exec "$@"`
      const sh = ['sh', '-c', script, 'sh', ...this.spec.hide]
      node = this.spec.netns != null ? [...sh, ...node] : ['unshare', '--mount', '--propagation', 'private', ...sh, ...node]
    }
    const [cmd, ...argv] = this.spec.netns != null ? ['ip', 'netns', 'exec', this.spec.netns, ...node, ...this.args()] : [...node, ...this.args()]
    this.child = spawn(cmd, argv, { stdio: ['ignore', log, log, 'ipc'] })
    closeSync(log)
    this.info = await waitReady(this.dir, this.child, 60_000)
    this.token = readFileSync(join(this.dir, 'api-token'), 'utf8').trim()
  }

  get peerId (): string { return this.info.peerId }
  get addr (): string { return this.info.multiaddrs[0] }
  get url (): string { return this.info.apiUrl }

  async api<T = any> (path: string, init: { method?: string, body?: unknown, token?: string | null, headers?: Record<string, string> } = {}): Promise<{ status: number, body: T }> {
    const token = init.token === undefined ? this.token : init.token
    const res = await fetch(this.url + path, {
      method: init.method ?? 'GET',
      headers: {
        ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(token != null && init.method != null && init.method !== 'GET' ? { authorization: `Bearer ${token}` } : {}),
        ...init.headers
      },
      body: init.body === undefined ? undefined : typeof init.body === 'string' ? init.body : JSON.stringify(init.body)
    })
    const text = await res.text()
    let body: any = text
    try { body = JSON.parse(text) } catch { /* metrics and pages are text */ }
    return { status: res.status, body }
  }

  async peers (include: 'live' | 'all' = 'live'): Promise<any[]> {
    const r = await this.api<{ peers: any[] }>(`/api/peers?include=${include}`)
    return r.body.peers
  }

  async metric (name: string, labels: Record<string, string> = {}): Promise<number> {
    const { body } = await this.api<string>('/metrics')
    const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`)
    let total = 0
    for (const line of String(body).split('\n')) {
      if (!line.startsWith(name)) continue
      const m = /^([a-z_]+)(\{[^}]*\})?\s+(\S+)$/.exec(line)
      if (m == null || m[1] !== name) continue
      if (want.every(w => (m[2] ?? '').includes(w))) total += Number(m[3])
    }
    return total
  }

  async exited (): Promise<number | null> {
    if (this.child.exitCode != null || this.child.signalCode != null) return this.child.exitCode
    return await new Promise(resolve => this.child.once('exit', code => { resolve(code) }))
  }

  async stop (signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.child.exitCode != null || this.child.signalCode != null) return this.child.exitCode
    const done = this.exited()
    this.child.kill(signal)
    const kill = setTimeout(() => this.child.kill('SIGKILL'), 15_000)
    try { return await done } finally { clearTimeout(kill) }
  }

  log (): string {
    try { return readFileSync(join(this.dir, 'agent.log'), 'utf8') } catch { return '' }
  }

  cleanup (): void {
    if (process.env.BM_KEEP_TEST_DIRS === '1') return
    rmSync(this.dir, { recursive: true, force: true })
  }
}

export async function stopAll (agents: Array<AgentProcess | undefined>, cleanup = true): Promise<void> {
  await Promise.all(agents.map(async a => { if (a?.child != null) await a.stop() }))
  if (cleanup) for (const a of agents) a?.cleanup()
}
