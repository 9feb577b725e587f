import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { READY_FILE } from './config.ts'
import { waitReady } from './ready.ts'
import type { ReadyInfo } from './config.ts'
import { TOKEN_FILE, seedToken } from './identity.ts'

export const CLI_ENTRY = fileURLToPath(new URL('./cli/main.ts', import.meta.url))

export interface DemoOptions {
  agents: number
  basePort: number
  dataDir: string
  heartbeatMs: number
  simulateGpus?: string
  clusters: string[]
  out?: (line: string) => void
  /** restarts of agents that crash (defaults: RESTART_POLICY) */
  restart?: Partial<RestartPolicy>
}

/**
 * How the demo supervisor restarts an agent that exits with a non-zero code
 * or a signal while no stop was asked for: after `baseMs`, doubling with each
 * quick crash in a row up to `maxMs`. A run of `stableMs` or longer resets the
 * count; after `maxQuickCrashes` quick crashes in a row it gives up on that agent.
 */
export interface RestartPolicy {
  baseMs: number
  maxMs: number
  stableMs: number
  maxQuickCrashes: number
}

export const RESTART_POLICY: RestartPolicy = { baseMs: 1000, maxMs: 30_000, stableMs: 60_000, maxQuickCrashes: 8 }

/** The wait before restart attempt `attempt` (1-based): base · 2^(attempt−1), capped at max. */
export function restartDelay (attempt: number, policy: Pick<RestartPolicy, 'baseMs' | 'maxMs'> = RESTART_POLICY): number {
  return Math.min(policy.maxMs, policy.baseMs * 2 ** Math.max(0, Math.min(attempt - 1, 30)))
}

/** "1 s", "30 s", "250 ms" */
function seconds (ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${Math.round(ms / 100) / 10} s`
}

/** What serving a model needs of its component spec. */
export interface ServedModel { model: { url: string, md5: string }, tokenizer: unknown, contextLength: number }

export interface DemoAgent {
  index: number
  name: string
  cluster: string
  dir: string
  child: ChildProcess
  info?: ReadyInfo
  /** times the supervisor has restarted it */
  restarts: number
  /** when its current process started (ms since epoch) */
  startedAt: number
  /** crashes in a row, each within `stableMs` of its start */
  quickCrashes: number
  /** set once the supervisor has given up on it */
  gaveUp: boolean
}

/**
 * Runs a local mesh of N agents, each its own OS process, on loopback.
 * Agent 0 is the others' bootstrap peer. Every child is started with an IPC
 * channel, so it stops by itself if this supervisor dies; stop() sends
 * SIGTERM, waits, then SIGKILLs stragglers. Once started, an agent that
 * crashes (non-zero exit or a signal, no stop asked for) is restarted with
 * back-off (RestartPolicy) on its own data dir: same identity, same SQLite.
 */
export class Demo {
  readonly agents: DemoAgent[] = []
  readonly token: string
  private readonly opts: DemoOptions
  private readonly policy: RestartPolicy
  private stopping: Promise<void> | undefined
  /** restarts happen only after start() has brought every agent up */
  private supervising = false
  private readonly timers = new Set<NodeJS.Timeout>()

  constructor (opts: DemoOptions) {
    this.opts = opts
    this.opts.dataDir = resolve(opts.dataDir)
    this.policy = { ...RESTART_POLICY, ...opts.restart }
    mkdirSync(this.opts.dataDir, { recursive: true, mode: 0o700 })
    const first = join(this.opts.dataDir, 'agent-0', TOKEN_FILE)
    this.token = existsSync(first) ? readFileSync(first, 'utf8').trim() : randomBytes(32).toString('base64url')
  }

  private spawnAgent (index: number, bootstrap: string[]): DemoAgent {
    const name = `agent-${index}`
    const cluster = this.opts.clusters[index % this.opts.clusters.length]
    const dir = join(this.opts.dataDir, name)
    const agent: DemoAgent = { index, name, cluster, dir, child: undefined as unknown as ChildProcess, restarts: 0, startedAt: 0, quickCrashes: 0, gaveUp: false }
    this.launch(agent, bootstrap)
    this.agents.push(agent)
    return agent
  }

  /** Starts (or restarts) an agent's process on its data dir. */
  private launch (agent: DemoAgent, bootstrap: string[]): void {
    const { index, name, cluster, dir } = agent
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    seedToken(dir, this.token)
    rmSync(join(dir, READY_FILE), { force: true })
    const args = [
      CLI_ENTRY, 'agent',
      '--name', name,
      '--cluster', cluster,
      '--listen', '/ip4/127.0.0.1/tcp/0',
      '--api-port', String(this.opts.basePort === 0 ? 0 : this.opts.basePort + index),
      '--data-dir', dir,
      '--heartbeat-ms', String(this.opts.heartbeatMs)
    ]
    if (bootstrap.length > 0) args.push('--bootstrap', bootstrap.join(','))
    // the demo declares these GPUs for its agents to place on (they are still shown as simulated)
    if (this.opts.simulateGpus != null) args.push('--simulate-gpus', this.opts.simulateGpus, '--allow-simulated-gpus')
    // the child writes its log itself (not through a pipe to us), so it outlives a crash of this supervisor
    const log = openSync(join(dir, 'agent.log'), 'a', 0o600)
    const child = spawn(process.execPath, args, { stdio: ['ignore', log, log, 'ipc'] })
    closeSync(log)
    agent.child = child
    agent.info = undefined
    agent.startedAt = Date.now()
    child.on('exit', (code, signal) => { this.exited(agent, child, code, signal) })
  }

  /** An agent's process ended: restart it with back-off when it crashed and nobody asked it to stop. */
  private exited (agent: DemoAgent, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.stopping != null || agent.child !== child) return
    const how = signal != null ? `signal ${signal}` : `exit code ${code ?? '?'}`
    const log = join(agent.dir, 'agent.log')
    const out = this.opts.out ?? (() => {})
    if (!this.supervising) { out(`! ${agent.name} exited (${how}); its log: ${log}`); return }
    if (signal == null && code === 0) { out(`! ${agent.name} stopped (exit code 0); not restarting it (only crashes are restarted); its log: ${log}`); return }
    const upMs = Date.now() - agent.startedAt
    agent.quickCrashes = upMs >= this.policy.stableMs ? 1 : agent.quickCrashes + 1
    if (agent.quickCrashes >= this.policy.maxQuickCrashes) {
      agent.gaveUp = true
      out(`! ${agent.name} (pid ${child.pid ?? '?'}) crashed (${how}) after ${seconds(upMs)}: ${agent.quickCrashes} crashes in a row, each within ${seconds(this.policy.stableMs)} of its start; giving up on it (see its log: ${log})`)
      return
    }
    const attempt = agent.quickCrashes
    const delay = restartDelay(attempt, this.policy)
    out(`! ${agent.name} (pid ${child.pid ?? '?'}) crashed (${how}) after ${seconds(upMs)}; restarting it in ${seconds(delay)} (attempt ${attempt} of ${this.policy.maxQuickCrashes - 1}); its log: ${log}`)
    const timer = setTimeout(() => {
      this.timers.delete(timer)
      if (this.stopping != null) return
      // whichever agents are up now: agent 0's old address is gone when it is the one restarting
      const bootstrap = this.agents.flatMap(a => a !== agent && a.info != null && a.child.exitCode == null && a.child.signalCode == null ? a.info.multiaddrs.slice(0, 1) : [])
      agent.restarts++
      this.launch(agent, bootstrap)
      const current = agent.child
      waitReady(agent.dir, current).then(info => {
        if (agent.child !== current || this.stopping != null) return
        agent.info = info
        out(`${agent.name} restarted (restart ${agent.restarts}): api ${info.apiUrl}  peer ${info.peerId}  pid ${info.pid}`)
      }, (err: Error) => {
        // an exit before ready is handled (and counted) by the exit handler
        if (agent.child === current && this.stopping == null && current.exitCode == null && current.signalCode == null) out(`! ${agent.name}: ${err.message}`)
      })
    }, delay)
    this.timers.add(timer)
  }

  async start (): Promise<void> {
    const first = this.spawnAgent(0, [])
    first.info = await waitReady(first.dir, first.child)
    const seed = first.info.multiaddrs.slice(0, 1) // already ends in /p2p/<peer id>
    const rest = []
    for (let i = 1; i < this.opts.agents; i++) rest.push(this.spawnAgent(i, seed))
    await Promise.all(rest.map(async a => { a.info = await waitReady(a.dir, a.child) }))
    this.supervising = this.stopping == null
  }

  /** A caller of agent 0's API with the demo token: (method, path, body?) → status and JSON body. */
  private agentZero (): (method: string, path: string, body?: unknown) => Promise<{ status: number, body: any }> {
    const api = this.agents[0]?.info?.apiUrl
    if (api == null) throw new Error('agent 0 is not running')
    return async (method, path, body) => {
      const res = await fetch(api + path, {
        method,
        headers: { authorization: `Bearer ${this.token}`, ...(body != null ? { 'content-type': 'application/json' } : {}) },
        body: body != null ? JSON.stringify(body) : undefined
      })
      return { status: res.status, body: await res.json().catch(() => null) }
    }
  }

  /** Registers a component spec on agent 0 (an existing one of the same name:version is kept). */
  async registerComponent (component: Record<string, unknown>): Promise<string> {
    const c = await this.agentZero()('POST', '/api/components', component)
    if (c.status !== 201 && c.status !== 409) throw new Error(`component: ${JSON.stringify(c.body)}`)
    return `${component.name as string}:${component.version as string}`
  }

  /** Onboards a model file on agent 0 (POST /api/models: GGUF conversion, cached by digest) and returns its component. */
  async addModel (source: string, name: string, timeoutMs = 600_000): Promise<{ uri: string, spec: ServedModel }> {
    const api = this.agents[0]?.info?.apiUrl
    if (api == null) throw new Error('agent 0 is not running')
    const res = await fetch(`${api}/api/models`, {
      method: 'POST',
      headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ source, name }),
      signal: AbortSignal.timeout(timeoutMs)
    })
    const body = await res.json() as { component?: { uri: string, spec: ServedModel }, error?: { message: string } }
    if (!res.ok || body.component == null) throw new Error(`model add ${source}: ${body.error?.message ?? res.status}`)
    return body.component
  }

  /** Runs component `uri` as block `blockId` (replacing a block of an older component); waits until it is ready or failed. */
  async deployBlock (uri: string, blockId: string, timeoutMs = 120_000): Promise<{ status: string, error?: string | null, provider?: string }> {
    const call = this.agentZero()
    const existing = await call('GET', `/api/blocks/${blockId}`)
    if (existing.status === 200 && existing.body.component !== uri) {
      await call('DELETE', `/api/blocks/${blockId}`) // an older model: replace it
    }
    if (existing.status !== 200 || existing.body.component !== uri) {
      const b = await call('POST', '/api/blocks', { id: blockId, component: uri })
      if (b.status !== 201) throw new Error(`block: ${JSON.stringify(b.body)}`)
    }
    const deadline = Date.now() + timeoutMs
    while (Date.now() < deadline) {
      const b = await call('GET', `/api/blocks/${blockId}`)
      if (b.body?.status === 'ready' || b.body?.status === 'failed') return { status: b.body.status, error: b.body.error, provider: b.body.runtime?.provider }
      await new Promise(r => setTimeout(r, 200))
    }
    return { status: 'loading', error: `not ready after ${timeoutMs} ms` }
  }

  /**
   * Serves a model as a vDAG of `worldSize` pipeline stages named `name`: a split task on agent 0
   * (the built-in splitter), then its plan deployed, one stage per agent. A split of the same model
   * file done before (same MD5, same world size) is reused, and so are its running blocks.
   */
  async deployPipeline (model: ServedModel, name: string, worldSize: number, onProgress: (line: string) => void, timeoutMs = 180_000): Promise<{ status: 'ready' | 'failed', error?: string, stages?: Array<{ block: string, peer: string }> }> {
    const call = this.agentZero()
    const deadline = Date.now() + timeoutMs
    const tasks = (await call('GET', '/tasks')).body?.data as any[] ?? []
    const md5 = model.model.md5
    let task = tasks.find(t => t.status === 'complete' && t.task_data?.model_split_config?.vdag_name === name && t.result?.plan?.source_md5 === md5 && t.result?.plan?.world_size === worldSize)
    if (task == null) {
      // a pipeline of an older model file: its vDAG and stage blocks go
      const old = await call('GET', `/api/vdags/${name}`)
      if (old.status === 200) {
        await call('DELETE', `/api/vdags/${name}`)
        for (const b of old.body.stages as string[]) await call('DELETE', `/api/blocks/${b}`)
      }
      const start = await call('POST', '/start_model_split_job', { task_data: { model_name: name.replace(/-pipeline$/, ''), model_download_url: model.model.url, world_size: worldSize, model_split_config: { vdag_name: name, md5, tokenizer: model.tokenizer, context_length: model.contextLength } }, container_image: 'blockmesh/onnx-splitter' })
      if (start.status !== 201) return { status: 'failed', error: `split task: ${JSON.stringify(start.body)}` }
      let last = ''
      while (Date.now() < deadline) {
        const t = (await call('GET', `/tasks/${start.body.task_id as string}`)).body?.data
        const line = `split task ${t?.task_id as string}: ${t?.status as string} ${Math.round((t?.progress ?? 0) * 100)}% ${t?.message ?? ''}`
        if (line !== last) { onProgress(line); last = line }
        if (t?.status === 'failed') return { status: 'failed', error: t.error }
        if (t?.status === 'complete') { task = t; break }
        await new Promise(r => setTimeout(r, 250))
      }
      if (task == null) return { status: 'failed', error: `the split task did not finish in ${timeoutMs} ms` }
    }
    if ((await call('GET', `/api/vdags/${name}`)).status !== 200) {
      const d = await call('POST', '/api/vdags/deploy', { task_id: task.task_id })
      if (d.status !== 201) return { status: 'failed', error: `deploy: ${JSON.stringify(d.body)}` }
    }
    while (Date.now() < deadline) {
      const v = await call('GET', `/api/vdags/${name}`)
      if (v.body?.ready === true && Array.isArray(v.body.route) && await this.servedEverywhere(name)) {
        const names = new Map<string, string>()
        for (const p of ((await call('GET', '/api/peers')).body?.peers ?? []) as any[]) names.set(p.peerId, p.name)
        return { status: 'ready', stages: (v.body.route as any[]).map((h: any, i: number) => ({ block: v.body.stages[i], peer: names.get(h.peer) ?? String(h.peer).slice(0, 12) })) }
      }
      const failed = ((await call('GET', '/api/blocks')).body?.blocks as any[] ?? []).find(b => (v.body?.stages ?? []).includes(b.id) && b.status === 'failed')
      if (failed != null) return { status: 'failed', error: `stage block ${failed.id as string}: ${failed.error as string}` }
      await new Promise(r => setTimeout(r, 250))
    }
    return { status: 'failed', error: `the vDAG was not ready after ${timeoutMs} ms` }
  }

  /** Whether every agent's /v1/models lists `model` (routes spread with the next capacity record). */
  async servedEverywhere (model: string): Promise<boolean> {
    for (const a of this.agents) {
      const api = a.info?.apiUrl
      if (api == null) return false
      try {
        const body = await (await fetch(`${api}/v1/models`, { headers: { authorization: `Bearer ${this.token}` } })).json() as { data: Array<{ id: string }> }
        if (!body.data.some(d => d.id === model)) return false
      } catch { return false }
    }
    return true
  }

  /** Polls agent 0 until it sees every other agent live (or the timeout passes). */
  async waitForMesh (timeoutMs = 30_000): Promise<boolean> {
    const api = this.agents[0]?.info?.apiUrl
    if (api == null) return false
    const deadline = Date.now() + timeoutMs
    while (Date.now() < deadline) {
      try {
        const res = await fetch(`${api}/api/peers`)
        const body = await res.json() as { peers: unknown[] }
        if (body.peers.length >= this.agents.length) return true
      } catch { /* not yet */ }
      await new Promise(r => setTimeout(r, 250))
    }
    return false
  }

  async stop (): Promise<void> {
    this.stopping ??= (async () => {
      for (const t of this.timers) clearTimeout(t)
      this.timers.clear()
      const alive = this.agents.filter(a => a.child.exitCode == null && a.child.signalCode == null)
      await Promise.all(alive.map(async a => await new Promise<void>(resolve => {
        const kill = setTimeout(() => { a.child.kill('SIGKILL') }, 10_000)
        a.child.once('exit', () => { clearTimeout(kill); resolve() })
        a.child.kill('SIGTERM')
      })))
    })()
    return await this.stopping
  }
}
