import { execFile, spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readSync, rmSync } from 'node:fs'
import { hostname } from 'node:os'
import { join, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
// tiny modules with no heavy imports (agent/config.ts only pulls zod, which main bundles anyway)
import { READY_FILE } from '../agent/config.ts'
import { AgentNotReadyError, waitReady } from '../agent/ready.ts'
import type { ReadyInfo } from '../agent/config.ts'
import { MIN_NODE } from '../agent/cli/require-node.mjs'
import type { Log } from './security.ts'

/** The agent's token file in its data dir (agent/identity.ts TOKEN_FILE; identity.ts itself pulls libp2p). */
export const TOKEN_FILE = 'api-token'
export const LOG_FILE = 'agent.log'

/** No Node.js binary at the configured path or on PATH. */
export class NodeNotFoundError extends Error {
  constructor (binary: string, options?: ErrorOptions) {
    super(`no Node.js found (tried ${JSON.stringify(binary)}): the local agent runs on Node.js >= ${MIN_NODE.join('.')}; install it, or set BLOCKMESH_NODE to its path`, options)
    this.name = 'NodeNotFoundError'
  }
}

/** The Node.js found is too old (or not Node.js). */
export class NodeVersionError extends Error {
  constructor (binary: string, version: string) {
    super(`${binary} is Node.js ${JSON.stringify(version)}; the local agent needs Node.js >= ${MIN_NODE.join('.')} (set BLOCKMESH_NODE to a newer one)`)
    this.name = 'NodeVersionError'
  }
}

/** The agent's entry script is not where it should be. */
export class AgentEntryNotFoundError extends Error {
  constructor (tried: string[]) {
    super(`the agent's entry script was not found (tried ${tried.join(', ')}); set BLOCKMESH_AGENT_ENTRY to agent/cli/main.ts`)
    this.name = 'AgentEntryNotFoundError'
  }
}

/** The agent exited, or did not get ready in time (it is stopped by then). */
export class AgentStartError extends Error {
  /** the agent process's pid, when there was one */
  readonly pid?: number
  constructor (message: string, pid?: number) {
    super(message)
    this.name = 'AgentStartError'
    if (pid != null) this.pid = pid
  }
}

/** Throws NodeVersionError unless `version` ("v22.18.0") is at least MIN_NODE. */
export function checkNodeVersion (version: string, binary = 'node'): void {
  const m = /^v(\d+)\.(\d+)\.(\d+)/.exec(version.trim())
  if (m == null) throw new NodeVersionError(binary, version.trim())
  const [major, minor] = [Number(m[1]), Number(m[2])]
  if (major > MIN_NODE[0] || (major === MIN_NODE[0] && minor >= MIN_NODE[1])) return
  throw new NodeVersionError(binary, version.trim())
}

/** Runs `binary --version` (bounded) and checks it; resolves to the version. */
export async function checkNodeBinary (binary: string, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const version = await new Promise<string>((resolve, reject) => {
    execFile(binary, ['--version'], { env, timeout: 10_000, maxBuffer: 4096, windowsHide: true }, (err, stdout) => {
      if (err != null) {
        reject((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'EACCES' ? new NodeNotFoundError(binary, { cause: err }) : new NodeVersionError(binary, `${stdout}`.trim() || err.message))
        return
      }
      resolve(`${stdout}`.trim())
    })
  })
  checkNodeVersion(version, binary)
  return version
}

/**
 * A path inside app.asar as an external process can read it: files the
 * packaged app's agent needs are unpacked (electron-builder.yml asarUnpack)
 * to app.asar.unpacked beside the archive, and only Electron itself can read
 * inside the archive.
 */
export function unpackedPath (path: string): string {
  return path.split(sep).map(part => part === 'app.asar' ? 'app.asar.unpacked' : part).join(sep)
}

/**
 * agent/cli/main.ts, found from this module's URL: main/local-agent.ts when
 * run from source, main/dist/main.cjs when bundled (one level deeper).
 * BLOCKMESH_AGENT_ENTRY overrides both.
 */
export function resolveAgentEntry (env: NodeJS.ProcessEnv = process.env, moduleUrl: string = import.meta.url, exists: (path: string) => boolean = existsSync): string {
  const override = env.BLOCKMESH_AGENT_ENTRY
  if (override != null && override !== '') {
    if (!exists(override)) throw new AgentEntryNotFoundError([override])
    return override
  }
  const tried: string[] = []
  for (const rel of ['../agent/cli/main.ts', '../../agent/cli/main.ts']) {
    const path = unpackedPath(fileURLToPath(new URL(rel, moduleUrl)))
    if (exists(path)) return path
    tried.push(path)
  }
  throw new AgentEntryNotFoundError(tried)
}

/** The host name as an agent name: letters, digits, ".", "_" and "-", starting with a letter or digit, at most 64. */
export function agentName (host: string = hostname()): string {
  const name = host.replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 64)
  return name === '' ? 'desktop' : name
}

/** Reads at most `max` bytes of a file (its end when `tail`), as text. */
function readBounded (path: string, max: number, tail = false): string {
  const fd = openSync(path, 'r')
  try {
    const size = fstatSync(fd).size
    const len = Math.min(size, max)
    const buf = Buffer.alloc(len)
    const n = readSync(fd, buf, 0, len, tail ? size - len : 0)
    return buf.subarray(0, n).toString('utf8')
  } finally { closeSync(fd) }
}

export interface LocalAgentOptions {
  /** The agent's data dir (identity, token, database, log), e.g. <userData>/agent */
  dataDir: string
  /** default: this host's name */
  name?: string
  /** default: env BLOCKMESH_NODE, else `node` on PATH */
  node?: string
  /** default: resolveAgentEntry(env) */
  entry?: string
  env?: NodeJS.ProcessEnv
  /** more agent flags (tests use --listen on a free port) */
  extraArgs?: string[]
  /** default 60 s */
  readyTimeoutMs?: number
  /** SIGTERM, then SIGKILL after this long; default 10 s */
  stopGraceMs?: number
  /** aborting cancels a start in progress (the app quits meanwhile): the child is stopped */
  signal?: AbortSignal
  log?: Log
}

export interface LocalAgentInfo {
  pid: number
  name: string
  peerId: string
  /** as the agent reported it, e.g. http://127.0.0.1:41234 */
  apiUrl: string
  origin: string
  token: string
  dataDir: string
  logFile: string
}

/**
 * The app's own headless agent: a child process on the system's Node.js
 * (>= 22.18: the agent is TypeScript run by Node's type stripping, and its
 * native modules are built for Node, not for Electron). It gets an IPC
 * channel, so it shuts down by itself if the app dies; it writes its log to
 * <dataDir>/agent.log itself, so a crash of the app loses none of it.
 */
export class LocalAgent {
  readonly info: LocalAgentInfo
  private readonly child: ChildProcess
  private readonly grace: number
  private stopping: Promise<void> | undefined

  private constructor (child: ChildProcess, info: LocalAgentInfo, grace: number) {
    this.child = child
    this.info = info
    this.grace = grace
  }

  static async start (opts: LocalAgentOptions): Promise<LocalAgent> {
    if (opts.signal?.aborted === true) throw new AgentStartError('the local agent\'s start was cancelled')
    const env = { ...(opts.env ?? process.env) }
    // the child is Node, not Electron: variables that would make an Electron binary act as Node are noise there
    delete env.ELECTRON_RUN_AS_NODE
    const node = opts.node ?? (env.BLOCKMESH_NODE != null && env.BLOCKMESH_NODE !== '' ? env.BLOCKMESH_NODE : 'node')
    await checkNodeBinary(node, env)
    const entry = opts.entry ?? resolveAgentEntry(env)
    mkdirSync(opts.dataDir, { recursive: true, mode: 0o700 })
    // a file left by an agent that did not stop cleanly must not pass for the new one
    rmSync(join(opts.dataDir, READY_FILE), { force: true })
    const args = [entry, 'agent', '--api-port', '0', '--data-dir', opts.dataDir, '--name', opts.name ?? agentName(), ...(opts.extraArgs ?? [])]
    const logFile = join(opts.dataDir, LOG_FILE)
    const log = openSync(logFile, 'a', 0o600)
    let child: ChildProcess
    try {
      child = spawn(node, args, { stdio: ['ignore', log, log, 'ipc'], env, windowsHide: true })
    } finally { closeSync(log) }
    // an 'error' event (spawn failure) surfaces as an exit below; without a listener it would throw
    child.on('error', err => { opts.log?.(`local agent: ${err.message}`) })
    const grace = opts.stopGraceMs ?? 10_000
    try {
      const ready = await waitForReady(opts.dataDir, child, opts.readyTimeoutMs ?? 60_000, opts.signal)
      const token = readBounded(join(opts.dataDir, TOKEN_FILE), 1024).trim()
      if (!/^[A-Za-z0-9_-]{32,256}$/.test(token)) throw new AgentStartError(`the local agent's token file ${join(opts.dataDir, TOKEN_FILE)} does not hold a token`, child.pid)
      const origin = new URL(ready.apiUrl).origin
      const agent = new LocalAgent(child, { pid: ready.pid, name: ready.name, peerId: ready.peerId, apiUrl: ready.apiUrl, origin, token, dataDir: opts.dataDir, logFile }, grace)
      opts.log?.(`local agent ${ready.name} (pid ${ready.pid}) ready at ${ready.apiUrl}`)
      return agent
    } catch (err) {
      await terminate(child, grace)
      throw err
    }
  }

  get running (): boolean {
    return this.child.exitCode == null && this.child.signalCode == null
  }

  /** Calls `fn` when the agent process ends (whoever ended it). */
  onExit (fn: (code: number | null, signal: NodeJS.Signals | null) => void): void {
    if (!this.running) { fn(this.child.exitCode, this.child.signalCode); return }
    this.child.once('exit', fn)
  }

  /** SIGTERM (the agent stops cleanly), then SIGKILL if it is still running after the grace period. */
  async stop (): Promise<void> {
    this.stopping ??= terminate(this.child, this.grace)
    return await this.stopping
  }
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process has exited. */
async function terminate (child: ChildProcess, graceMs: number): Promise<void> {
  await new Promise<void>(resolve => {
    // never started (spawn failed): there is no process and no 'exit' will come
    if (child.pid == null || child.exitCode != null || child.signalCode != null) { resolve(); return }
    const kill = setTimeout(() => { child.kill('SIGKILL') }, graceMs)
    child.once('exit', () => { clearTimeout(kill); resolve() })
    child.kill('SIGTERM')
  })
}

function args0 (child: ChildProcess): string {
  return child.spawnargs.slice(0, 2).join(' ')
}

/** Waits for the agent's ready file (agent/ready.ts), turning its failures into AgentStartError with the end of the agent's log. */
async function waitForReady (dataDir: string, child: ChildProcess, timeoutMs: number, signal?: AbortSignal): Promise<ReadyInfo> {
  if (child.pid == null) throw new AgentStartError(`the local agent could not be started (${args0(child)})`)
  try {
    return await waitReady(dataDir, child, timeoutMs, signal)
  } catch (err) {
    if (!(err instanceof AgentNotReadyError)) throw err
    if (err.reason === 'aborted') throw new AgentStartError('the local agent\'s start was cancelled', child.pid)
    const logFile = join(dataDir, LOG_FILE)
    let tail = ''
    try {
      const t = readBounded(logFile, 2048, true).trim()
      if (t !== '') tail = `\n--- end of ${logFile} ---\n${t}`
    } catch { /* no log */ }
    const what = err.reason === 'exited' ? `exited (${child.exitCode ?? child.signalCode}) before it was ready` : `was not ready after ${timeoutMs} ms`
    throw new AgentStartError(`the local agent ${what}; its log: ${logFile}${tail}`, child.pid)
  }
}
