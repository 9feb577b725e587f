import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { accessSync, closeSync, constants, fstatSync, openSync, readFileSync, readSync, readdirSync, renameSync, statSync, unlinkSync } from 'node:fs'
import net from 'node:net'
import { delimiter, isAbsolute, join, resolve } from 'node:path'
import { randomBytes } from 'node:crypto'
import { AgentError } from '../errors.ts'

/**
 * A third-party system the agent starts next to a block (the init-container
 * idea without containers): a command that serves HTTP on a loopback port the
 * agent picks, waited on until ready, stopped with the block.
 */
export interface InitProcessSpec {
  /** executable: an absolute path, a path relative to `cwd`, or a name found on PATH; `node` means this agent's own Node (process.execPath) */
  command: string
  args: string[]
  env: Record<string, string>
  /** path (e.g. '/health') polled on the process's base URL, or a full http(s) URL, until it answers 2xx */
  readiness: string
  /** how long to wait for readiness */
  timeoutMs: number
  cwd?: string
}

/** Where an init process reports the endpoint of the system it deployed (aios_init_container serves it). */
export const ENDPOINT_PATH = '/.well-known/blockmesh-init'

/** A running init process. */
export interface InitProcess {
  /** base URL, http://127.0.0.1:PORT */
  readonly url: string
  /**
   * The deployed system's endpoint: what the process reports at /.well-known/blockmesh-init once ready (an init
   * container written on the Python SDK, aios_init_container, deploys a system elsewhere and says where), else `url`.
   */
  readonly endpoint: string
  readonly port: number
  readonly pid: number
  /** resolves with the exit code/signal when the process exits for any reason (never rejects) */
  readonly exited: Promise<{ code: number | null, signal: string | null }>
  /** SIGTERM to the process group, then SIGKILL after graceMs (default 5000); resolves when the process and its group are gone (bounded: at most 2 s after SIGKILL). Idempotent. */
  stop: (graceMs?: number) => Promise<void>
}

/** Where starting an init process failed. */
export type InitProcessFailure = 'spawn_failed' | 'exited_early' | 'not_ready'

/** Starting an init process failed: it could not be spawned, exited before it was ready, or never became ready. */
export class InitProcessError extends AgentError {
  readonly reason: InitProcessFailure
  /** the process id, when it was spawned (it is gone by the time this error is thrown) */
  readonly pid: number | null
  constructor (reason: InitProcessFailure, message: string, pid: number | null = null, options?: ErrorOptions) {
    super(message, `init_process_${reason}`, 500, { reason, pid }, options)
    this.name = 'InitProcessError'
    this.reason = reason
    this.pid = pid
  }
}

/** Optional logger: the agent's pino logger fits. */
export interface InitProcessLog {
  info: (o: object, m?: string) => void
  warn: (o: object, m?: string) => void
}

export interface InitProcessOptions {
  /** stdout and stderr go to `${logDir}/init-<pid>.log` (appended, straight from the process); else discarded */
  logDir?: string
  /** aborting kills the process and rejects with the signal's reason */
  signal?: AbortSignal
  log?: InitProcessLog
}

/**
 * The agent's environment variables an init process inherits (the spec's `env`
 * is merged over them). Only what a program needs to find its tools, libraries,
 * home, locale and GPUs; never the agent's secrets or NODE_OPTIONS (which would
 * change how a Node child runs).
 */
export const INHERITED_ENV: readonly string[] = [
  'PATH', 'HOME', 'USER', 'LOGNAME', 'SHELL', 'LANG', 'LANGUAGE', 'LC_ALL', 'LC_CTYPE', 'TZ',
  'TMPDIR', 'TMP', 'TEMP', 'LD_LIBRARY_PATH', 'CUDA_VISIBLE_DEVICES', 'NVIDIA_VISIBLE_DEVICES',
  'ROCR_VISIBLE_DEVICES', 'HIP_VISIBLE_DEVICES', 'SYSTEMROOT', 'WINDIR'
]

const POLL_MS = 200
const PROBE_TIMEOUT_MS = 2000
const DEFAULT_GRACE_MS = 5000
const LOG_TAIL_BYTES = 4096
const LOG_TAIL_LINES = 20

/** Process groups of init processes still running, killed if the agent exits without stopping them. */
const live = new Set<number>()
let exitHookInstalled = false

function installExitHook (): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.on('exit', () => {
    for (const pgid of live) signalGroup(pgid, 'SIGKILL')
  })
}

/** Sends `sig` to the process group `pgid`; false when no process of the group is left. */
function signalGroup (pgid: number, sig: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pgid, sig)
    return true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false
    // EPERM: a member we may not signal (it changed user); treat the group as still there
    return true
  }
}

/**
 * Whether any live process of group `pgid` is left. On Linux, zombies (dead,
 * waiting for whoever adopted them to reap them) do not count: after their
 * leader exits, a group's members are reaped by PID 1, which may be slow.
 */
function groupAlive (pgid: number): boolean {
  if (!signalGroup(pgid, 0)) return false
  if (process.platform !== 'linux') return true
  try {
    for (const name of readdirSync('/proc')) {
      if (!/^\d+$/.test(name)) continue
      let stat: string
      try { stat = readFileSync(`/proc/${name}/stat`, 'utf8') } catch { continue }
      // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (Number(fields[2]) === pgid && fields[0] !== 'Z' && fields[0] !== 'X') return true
    }
    return false
  } catch {
    return true
  }
}

/** A free TCP port on 127.0.0.1 (bound, read, released; another process could take it in between). */
export async function freeLoopbackPort (): Promise<number> {
  return await new Promise((resolvePort, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address()
      const port = addr != null && typeof addr === 'object' ? addr.port : 0
      srv.close(() => { port > 0 ? resolvePort(port) : reject(new Error('could not read the bound port')) })
    })
  })
}

function isExecutable (path: string): boolean {
  try {
    accessSync(path, constants.X_OK)
    return statSync(path).isFile()
  } catch {
    return false
  }
}

/** Resolves `command` to an executable path, or null. */
function resolveCommand (command: string, cwd: string, pathVar: string | undefined): string | null {
  if (command === 'node') return process.execPath
  if (isAbsolute(command)) return isExecutable(command) ? command : null
  if (command.includes('/')) {
    const p = resolve(cwd, command)
    return isExecutable(p) ? p : null
  }
  for (const dir of (pathVar ?? '').split(delimiter)) {
    if (dir === '') continue
    const p = join(dir, command)
    if (isExecutable(p)) return p
  }
  return null
}

function substitute (text: string, port: number): string {
  return text.replaceAll('${PORT}', String(port))
}

/** The last lines of a log file (at most LOG_TAIL_BYTES), or ''. */
function logTail (path: string | null): string {
  if (path == null) return ''
  let fd: number | null = null
  try {
    fd = openSync(path, 'r')
    const size = fstatSync(fd).size
    const len = Math.min(size, LOG_TAIL_BYTES)
    const buf = Buffer.alloc(len)
    readSync(fd, buf, 0, len, size - len)
    const lines = buf.toString('utf8').split('\n')
    if (size > len) lines.shift() // a partial first line
    while (lines.length > 0 && lines[lines.length - 1].trim() === '') lines.pop()
    return lines.slice(-LOG_TAIL_LINES).join('\n')
  } catch {
    return ''
  } finally {
    if (fd != null) closeSync(fd)
  }
}

/** One readiness probe: true when the URL answers 2xx within `timeoutMs`. */
async function probe (url: string, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  const signals = [AbortSignal.timeout(Math.max(1, timeoutMs))]
  if (signal != null) signals.push(signal)
  try {
    const res = await fetch(url, { signal: AbortSignal.any(signals), redirect: 'manual' })
    await res.body?.cancel().catch(() => {})
    return res.status >= 200 && res.status < 300
  } catch {
    return false
  }
}

/**
 * Starts `spec.command` next to a block and waits until it is ready.
 *
 * - A free loopback port is picked and substituted for `${PORT}` in args, env
 *   values and `readiness`; env `PORT` is set too unless the spec sets it.
 * - The environment is INHERITED_ENV from the agent with `spec.env` over it.
 * - The process is spawned detached, as the leader of its own process group,
 *   and every signal goes to the whole group: whatever it starts (workers, a
 *   shell's children) is stopped with it. If the agent exits without calling
 *   stop(), an exit hook SIGKILLs the groups still running (an agent killed
 *   by SIGKILL cannot do that).
 * - stdout and stderr are appended to `${logDir}/init-<pid>.log` through a
 *   file descriptor handed to the child, never a pipe through the agent.
 * - Readiness is polled every 200 ms (each probe at most 2 s) until 2xx.
 *   Exit before that → InitProcessError `exited_early` (with the log's last
 *   lines); `timeoutMs` passing → the process is killed, `not_ready`; the
 *   abort signal → the process is killed and the signal's reason is thrown.
 */
export async function startInitProcess (spec: InitProcessSpec, opts: InitProcessOptions = {}): Promise<InitProcess> {
  const { logDir, signal, log } = opts
  signal?.throwIfAborted()
  const cwd = spec.cwd ?? process.cwd()
  const port = await freeLoopbackPort()
  const url = `http://127.0.0.1:${port}`
  const env: Record<string, string> = {}
  for (const k of INHERITED_ENV) {
    const v = process.env[k]
    if (v != null) env[k] = v
  }
  env.PORT = String(port)
  for (const [k, v] of Object.entries(spec.env)) env[k] = substitute(v, port)
  const args = spec.args.map(a => substitute(a, port))
  const readinessText = substitute(spec.readiness, port)
  const readiness = /^https?:\/\//i.test(readinessText) ? readinessText : url + (readinessText.startsWith('/') ? '' : '/') + readinessText

  const command = resolveCommand(spec.command, cwd, env.PATH)
  if (command == null) {
    throw new InitProcessError('spawn_failed', `init process: command "${spec.command}" not found or not executable${spec.command.includes('/') ? '' : ' on PATH'}`)
  }

  // The log file is named after the pid, known only once spawned: open it under
  // a temporary name, then rename it (the child keeps writing to the same file).
  let tmpLog: string | null = null
  let logFd: number | null = null
  if (logDir != null) {
    tmpLog = join(logDir, `init-starting-${port}-${randomBytes(4).toString('hex')}.log`)
    logFd = openSync(tmpLog, 'a')
  }
  let child: ChildProcess
  try {
    child = spawn(command, args, {
      cwd,
      env,
      detached: true,
      stdio: ['ignore', logFd ?? 'ignore', logFd ?? 'ignore']
    })
  } catch (err) {
    if (logFd != null) closeSync(logFd)
    if (tmpLog != null) try { unlinkSync(tmpLog) } catch { /* already gone */ }
    throw new InitProcessError('spawn_failed', `init process: could not spawn ${command}: ${(err as Error).message}`, null, { cause: err })
  }
  if (logFd != null) closeSync(logFd) // the child holds its own copy

  const pid = child.pid
  if (pid == null) {
    const err = await new Promise<Error>(resolveErr => {
      child.once('error', resolveErr)
      // spawn without a pid always emits 'error'; this bounds the wait regardless
      setTimeout(() => { resolveErr(new Error('no pid')) }, 1000).unref()
    })
    if (tmpLog != null) try { unlinkSync(tmpLog) } catch { /* already gone */ }
    throw new InitProcessError('spawn_failed', `init process: could not spawn ${command}: ${err.message}`, null, { cause: err })
  }
  child.on('error', () => { /* signalling errors after spawn are handled where they happen */ })

  let logPath: string | null = null
  if (tmpLog != null && logDir != null) {
    logPath = join(logDir, `init-${pid}.log`)
    try { renameSync(tmpLog, logPath) } catch { logPath = tmpLog }
  }

  live.add(pid)
  installExitHook()
  let exitInfo: { code: number | null, signal: string | null } | null = null
  const exited = new Promise<{ code: number | null, signal: string | null }>(resolveExit => {
    child.once('exit', (code, sig) => {
      exitInfo = { code, signal: sig }
      if (!groupAlive(pid)) live.delete(pid)
      resolveExit(exitInfo)
    })
  })
  log?.info({ pid, command, args, url, log: logPath }, 'init process started')

  let stopping: Promise<void> | null = null
  const stop = async (graceMs = DEFAULT_GRACE_MS): Promise<void> => {
    stopping ??= (async () => {
      // to the group even when the leader is gone: its workers may still run
      signalGroup(pid, 'SIGTERM')
      const deadline = Date.now() + graceMs
      let timer: NodeJS.Timeout | undefined
      await Promise.race([exited, new Promise<void>(resolveWait => { timer = setTimeout(resolveWait, graceMs) })])
      clearTimeout(timer)
      // the leader may be gone while others of its group are still stopping
      while (groupAlive(pid) && Date.now() < deadline) await new Promise(resolveWait => setTimeout(resolveWait, 50))
      if (groupAlive(pid)) {
        signalGroup(pid, 'SIGKILL')
        await exited
        const killDeadline = Date.now() + 2000
        while (groupAlive(pid) && Date.now() < killDeadline) await new Promise(resolveWait => setTimeout(resolveWait, 20))
      }
      await exited // the leader is dead by now; this waits for Node to reap it
      live.delete(pid)
      log?.info({ pid, ...(exitInfo ?? {}) }, 'init process stopped')
    })()
    await stopping
  }

  const handle = { url, port, pid, exited, stop }
  // functions, so that TypeScript does not narrow what callbacks change
  const exitNow = (): { code: number | null, signal: string | null } | null => exitInfo
  const aborted = (): boolean => signal?.aborted === true

  // wait for readiness, or exit, or the deadline, or the abort signal
  const deadline = Date.now() + spec.timeoutMs
  const wake = new AbortController()
  const onAbort = (): void => { wake.abort() }
  signal?.addEventListener('abort', onAbort, { once: true })
  void exited.then(() => { wake.abort() })
  try {
    for (;;) {
      const info = exitNow()
      if (info != null) {
        await stop(0)
        const tail = logTail(logPath)
        const how = info.signal != null ? `was killed by ${info.signal}` : `exited with code ${info.code ?? 'unknown'}`
        log?.warn({ pid, ...info, log: logPath }, 'init process exited before it was ready')
        throw new InitProcessError('exited_early', `init process ${spec.command} (pid ${pid}) ${how} before it was ready${logPath != null ? ` (log: ${logPath})` : ''}${tail !== '' ? `; last lines:\n${tail}` : ''}`, pid)
      }
      if (aborted()) {
        await stop()
        throw (signal as AbortSignal).reason
      }
      const left = deadline - Date.now()
      if (left <= 0) {
        await stop()
        log?.warn({ pid, readiness, timeoutMs: spec.timeoutMs, log: logPath }, 'init process not ready in time; stopped')
        throw new InitProcessError('not_ready', `init process ${spec.command} (pid ${pid}) did not answer 2xx at ${readiness} within ${spec.timeoutMs} ms; it was stopped${logPath != null ? ` (log: ${logPath})` : ''}`, pid)
      }
      if (await probe(readiness, Math.min(PROBE_TIMEOUT_MS, left), wake.signal)) break
      if (exitNow() != null || aborted()) continue
      await new Promise<void>(resolveWait => {
        const done = (): void => { clearTimeout(t); wake.signal.removeEventListener('abort', done); resolveWait() }
        const t = setTimeout(done, Math.min(POLL_MS, Math.max(0, deadline - Date.now())))
        wake.signal.addEventListener('abort', done, { once: true })
      })
    }
  } finally {
    signal?.removeEventListener('abort', onAbort)
  }
  const endpoint = await reportedEndpoint(url, signal) ?? url
  log?.info({ pid, url, endpoint }, 'init process ready')
  return { ...handle, endpoint }
}

/** The endpoint an init process reports at ENDPOINT_PATH (a JSON {endpoint: "http(s)://…"}), or null when it reports none. */
async function reportedEndpoint (url: string, signal?: AbortSignal): Promise<string | null> {
  try {
    const res = await fetch(url + ENDPOINT_PATH, { signal: AbortSignal.any([AbortSignal.timeout(PROBE_TIMEOUT_MS), ...(signal != null ? [signal] : [])]), redirect: 'manual' })
    if (res.status !== 200) { await res.body?.cancel().catch(() => {}); return null }
    const text = (await res.text()).slice(0, 4096)
    const endpoint = (JSON.parse(text) as { endpoint?: unknown }).endpoint
    return typeof endpoint === 'string' && /^https?:\/\/[^\s]{1,2040}$/.test(endpoint) ? endpoint.replace(/\/$/, '') : null
  } catch {
    return null
  }
}
