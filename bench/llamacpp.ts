/**
 * llama.cpp as the reference for the real-model benchmark: llama-cpp-python's OpenAI-compatible server
 * (`python -m llama_cpp.server`) on the same GGUF file, in a process of its own.
 *
 * The interpreter is found in this order: env LLAMACPP_PYTHON, then the venv
 * `$BLOCKMESH_CACHE/llamacpp-venv` (default ~/.cache/blockmesh/llamacpp-venv); if neither can import
 * llama_cpp.server, that venv is created and llama-cpp-python[server] installed into it (a source build
 * of several minutes when pip has no built wheel cached).
 */
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import { homedir, tmpdir } from 'node:os'
import { join } from 'node:path'

export const LLAMA_CPP_PYTHON_VERSION = '0.3.36'

/** Every child process this benchmark started, killed when the benchmark's process exits however it exits. */
const children = new Set<ChildProcess>()
let exitHookInstalled = false

export function trackChild (child: ChildProcess): void {
  children.add(child)
  child.once('exit', () => { children.delete(child) })
  if (!exitHookInstalled) {
    exitHookInstalled = true
    process.on('exit', killTrackedChildren)
  }
}

export function killTrackedChildren (): void {
  for (const c of children) {
    if (c.exitCode == null && c.signalCode == null) {
      try { c.kill('SIGKILL') } catch { /* already gone */ }
    }
  }
  children.clear()
}

/** A TCP port nobody listens on right now (loopback). */
export async function freePort (): Promise<number> {
  const s = createServer()
  await new Promise<void>((resolve, reject) => { s.once('error', reject); s.listen(0, '127.0.0.1', resolve) })
  const port = (s.address() as AddressInfo).port
  await new Promise<void>(resolve => { s.close(() => { resolve() }) })
  return port
}

function run (cmd: string, args: string[], opts: { logFile?: string, timeoutMs?: number } = {}): Promise<{ code: number | null, out: string }> {
  return new Promise(resolve => {
    const fd = opts.logFile != null ? openSync(opts.logFile, 'a') : null
    const child = spawn(cmd, args, { stdio: ['ignore', fd ?? 'pipe', fd ?? 'pipe'] })
    if (fd != null) closeSync(fd)
    trackChild(child)
    let out = ''
    child.stdout?.on('data', (d: Buffer) => { out += d.toString() })
    child.stderr?.on('data', (d: Buffer) => { out += d.toString() })
    const timer = opts.timeoutMs != null ? setTimeout(() => { child.kill('SIGKILL') }, opts.timeoutMs) : null
    child.on('error', err => { if (timer != null) clearTimeout(timer); resolve({ code: null, out: err.message }) })
    child.on('close', code => {
      if (timer != null) clearTimeout(timer)
      if (opts.logFile != null) { try { out = readFileSync(opts.logFile, 'utf8') } catch { /* keep what we have */ } }
      resolve({ code, out })
    })
  })
}

function tail (text: string, lines = 6): string {
  return text.trim().split('\n').slice(-lines).join(' | ')
}

/** The version of llama-cpp-python this interpreter has with its server, or null (and why). */
async function probe (python: string): Promise<{ version: string } | { version: null, why: string }> {
  if (!existsSync(python)) return { version: null, why: `${python} does not exist` }
  const r = await run(python, ['-c', 'import llama_cpp, llama_cpp.server.app; print(llama_cpp.__version__)'], { timeoutMs: 60_000 })
  if (r.code === 0) return { version: r.out.trim().split('\n').pop() ?? '?' }
  return { version: null, why: `${python} cannot import llama_cpp.server: ${tail(r.out, 2)}` }
}

export function llamaVenvDir (): string {
  return join(process.env.BLOCKMESH_CACHE ?? join(homedir(), '.cache', 'blockmesh'), 'llamacpp-venv')
}

export type LlamaPython = { python: string, version: string } | { python: null, reason: string }

/** Finds (or installs) a Python interpreter with llama-cpp-python's server. */
export async function findLlamaPython (log: (s: string) => void): Promise<LlamaPython> {
  const tried: string[] = []
  const env = process.env.LLAMACPP_PYTHON
  const venv = llamaVenvDir()
  const venvPython = join(venv, 'bin', 'python')
  for (const python of [env, venvPython]) {
    if (python == null || python === '') continue
    const p = await probe(python)
    if (p.version != null) return { python, version: p.version }
    tried.push(p.why)
  }
  // neither has it: create the venv and install llama-cpp-python's server into it
  const base = process.env.PYTHON ?? 'python3'
  const logFile = venv + '.install.log'
  mkdirSync(join(venv, '..'), { recursive: true })
  rmSync(logFile, { force: true })
  log(`  llama.cpp: no interpreter with llama_cpp.server (${tried.join('; ')})`)
  log(`  llama.cpp: creating ${venv} and installing llama-cpp-python[server]==${LLAMA_CPP_PYTHON_VERSION} into it — ` +
    'a source build of llama.cpp, ~6 minutes on 2 cores unless pip has a built wheel cached (log: ' + logFile + ')')
  if (!existsSync(venvPython)) {
    const v = await run(base, ['-m', 'venv', venv], { logFile, timeoutMs: 5 * 60_000 })
    if (v.code !== 0) return { python: null, reason: `creating a venv with ${base} failed (${v.code ?? 'not started'}): ${tail(v.out, 3)}` }
  }
  const t0 = Date.now()
  const pip = await run(venvPython, ['-m', 'pip', 'install', '--disable-pip-version-check', `llama-cpp-python[server]==${LLAMA_CPP_PYTHON_VERSION}`], { logFile, timeoutMs: 45 * 60_000 })
  if (pip.code !== 0) return { python: null, reason: `pip install llama-cpp-python[server]==${LLAMA_CPP_PYTHON_VERSION} into ${venv} failed (exit ${pip.code ?? 'killed'}): ${tail(pip.out, 3)}` }
  log(`  llama.cpp: installed in ${((Date.now() - t0) / 1000).toFixed(0)} s`)
  const p = await probe(venvPython)
  if (p.version == null) return { python: null, reason: `installed, but ${p.why}` }
  return { python: venvPython, version: p.version }
}

export interface LlamaServerOptions {
  python: string
  model: string
  threads: number
  contextLength: number
}

/**
 * llama-cpp-python's server. It serves one completion at a time (one llama context behind a lock); with
 * interrupt_requests off a request that comes while another streams waits for it rather than cutting it
 * short, so N concurrent requests queue and run one after another.
 */
export class LlamaServer {
  readonly child: ChildProcess
  readonly url: string
  readonly args: string[]
  private readonly dir: string
  private constructor (child: ChildProcess, url: string, args: string[], dir: string) {
    this.child = child
    this.url = url
    this.args = args
    this.dir = dir
  }

  get pid (): number { return this.child.pid as number }

  /** the server's flags as run, for the report */
  static flags (o: Pick<LlamaServerOptions, 'threads' | 'contextLength'>): string[] {
    return ['--n_threads', String(o.threads), '--n_threads_batch', String(o.threads), '--n_ctx', String(o.contextLength),
      '--interrupt_requests', 'False', '--logits_all', 'False']
  }

  static async start (o: LlamaServerOptions): Promise<LlamaServer> {
    const port = await freePort()
    const dir = mkdtempSync(join(tmpdir(), 'bm-llamacpp-'))
    const args = ['-m', 'llama_cpp.server', '--model', o.model, ...LlamaServer.flags(o), '--host', '127.0.0.1', '--port', String(port)]
    const logPath = join(dir, 'server.log')
    const fd = openSync(logPath, 'a')
    const child = spawn(o.python, args, { stdio: ['ignore', fd, fd] })
    closeSync(fd)
    trackChild(child)
    const server = new LlamaServer(child, `http://127.0.0.1:${port}`, args, dir)
    const deadline = Date.now() + 180_000
    while (true) {
      if (child.exitCode != null || child.signalCode != null) {
        const log = server.log()
        server.cleanup()
        throw new Error(`llama.cpp server exited (${child.exitCode ?? child.signalCode}): ${tail(log)}`)
      }
      try {
        const r = await fetch(`${server.url}/v1/models`)
        if (r.ok) { await r.arrayBuffer(); return server }
      } catch { /* not listening yet */ }
      if (Date.now() > deadline) {
        await server.stop()
        throw new Error(`llama.cpp server did not answer within 180 s: ${tail(server.log())}`)
      }
      await new Promise(resolve => setTimeout(resolve, 200))
    }
  }

  log (): string {
    try { return readFileSync(join(this.dir, 'server.log'), 'utf8') } catch { return '' }
  }

  async stop (): Promise<void> {
    if (this.child.exitCode == null && this.child.signalCode == null) {
      const done = new Promise(resolve => this.child.once('exit', resolve))
      this.child.kill('SIGTERM')
      const kill = setTimeout(() => { this.child.kill('SIGKILL') }, 10_000)
      await done
      clearTimeout(kill)
    }
    this.cleanup()
  }

  private cleanup (): void {
    if (process.env.BM_KEEP_TEST_DIRS === '1') return
    rmSync(this.dir, { recursive: true, force: true })
  }
}
