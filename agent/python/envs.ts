/**
 * Python programs the agent runs (issue 17): splitters (`--splitter NAME=python:PATH.py` or
 * `python:package.module`) and init processes (a component's `init.command: "python:PATH.py"`). Each runs in a
 * virtual environment of its own holding the seeds' SDKs (`sdk/python`: aios_model_splitter, aios_init_container)
 * and the program's `requirements.txt` (beside the script), made once and kept in a cache shared by the agents of
 * the machine, keyed by what went into it (the interpreter's version, the SDK's files, the requirements): a
 * changed SDK or requirement makes a new environment, an unchanged one is reused.
 *
 * An environment is built in a temporary folder and renamed into place when complete, so two agents making
 * the same one at once do not see a half-made one (the loser's copy is thrown away). The program is run with
 * the environment's own interpreter (`ENV/bin/python`), never its console scripts, so the renamed folder
 * works wherever it lies.
 */
import { execFile } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs'
import { mkdir, rename, rm, writeFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { AgentError } from '../errors.ts'

const run = promisify(execFile)

/** The SDK's source folder in this installation. */
export const SDK_DIR = fileURLToPath(new URL('../../sdk/python', import.meta.url))
/** Default cache of environments: shared by the agents of a machine. */
export const DEFAULT_ENVS_DIR = join(process.env.BLOCKMESH_CACHE ?? join(homedir(), '.cache', 'blockmesh'), 'python-envs')

export const PYTHON_PREFIX = 'python:'
const MODULE = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/

/** A Python program: a script (its folder's requirements.txt installed too), or a module run with -m. */
export type PythonProgram =
  | { kind: 'script', path: string, requirements: string | null }
  | { kind: 'module', module: string, cwd: string }

/** Whether a registered program is a Python one. */
export function isPython (program: string): boolean {
  return program.startsWith(PYTHON_PREFIX)
}

/** `python:/abs/entry.py` or `python:pkg.module` → what to run; throws for anything else. */
export function parsePythonProgram (program: string, cwd = process.cwd()): PythonProgram {
  const target = program.slice(PYTHON_PREFIX.length)
  if (target.endsWith('.py') || target.includes('/')) {
    const path = target
    const req = join(dirname(path), 'requirements.txt')
    return { kind: 'script', path, requirements: existsSync(req) ? req : null }
  }
  if (!MODULE.test(target)) throw new AgentError(`python program ${JSON.stringify(target)}: give a path to a .py file or a dotted module name`, 'invalid_request', 400)
  return { kind: 'module', module: target, cwd }
}

/** The files of a folder, sorted, skipping caches and build output: what the environment's key hashes. */
function treeHash (dir: string): string {
  const h = createHash('sha256')
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      if (name === '__pycache__' || name === 'build' || name === 'dist' || name.endsWith('.egg-info') || name === '.pytest_cache') continue
      const p = join(d, name)
      const st = statSync(p)
      if (st.isDirectory()) walk(p)
      else if (st.isFile()) h.update(relative(dir, p)).update('\0').update(readFileSync(p)).update('\0')
    }
  }
  walk(dir)
  return h.digest('hex')
}

export interface PythonEnvsInit {
  /** where environments are kept */
  root?: string
  /** the interpreter environments are made from */
  python?: string
  /** the SDK's source folder */
  sdkDir?: string
  log?: { info: (o: object, m: string) => void }
}

/** Virtual environments for Python programs, made once per (interpreter, SDK, requirements) and reused. */
export class PythonEnvs {
  private readonly root: string
  private readonly python: string
  private readonly sdkDir: string
  private readonly log: PythonEnvsInit['log']
  private readonly making = new Map<string, Promise<string>>()
  private version: Promise<string> | undefined

  constructor (init: PythonEnvsInit = {}) {
    this.root = init.root ?? DEFAULT_ENVS_DIR
    this.python = init.python ?? 'python3'
    this.sdkDir = init.sdkDir ?? SDK_DIR
    this.log = init.log
  }

  /** The interpreter of the environment for `program`, made first when missing (minutes: pip installs). */
  async interpreter (program: PythonProgram, signal?: AbortSignal): Promise<string> {
    // the interpreter's version: asked once per agent (a failed ask is asked again next time)
    this.version ??= run(this.python, ['-c', 'import sys; print(sys.version)'], { signal }).then(r => r.stdout.trim())
    let version: string
    try {
      version = await this.version
    } catch (err) {
      this.version = undefined
      throw new AgentError(`Python programs need ${this.python} (${(err as Error).message.split('\n')[0]})`, 'python_missing', 500)
    }
    if (!existsSync(join(this.sdkDir, 'pyproject.toml'))) throw new AgentError(`the Python SDK is not at ${this.sdkDir}`, 'python_sdk_missing', 500)
    const requirements = program.kind === 'script' ? program.requirements : null
    const key = createHash('sha256').update(version).update('\0').update(treeHash(this.sdkDir)).update('\0').update(requirements != null ? readFileSync(requirements) : '').digest('hex').slice(0, 20)
    const dir = join(this.root, key)
    const py = join(dir, 'bin', 'python')
    if (existsSync(join(dir, '.blockmesh-ready'))) return py
    let going = this.making.get(key)
    if (going == null) {
      going = this.make(dir, requirements, signal).finally(() => { this.making.delete(key) })
      this.making.set(key, going)
    }
    return await going
  }

  private async make (dir: string, requirements: string | null, signal?: AbortSignal): Promise<string> {
    await mkdir(this.root, { recursive: true })
    const tmp = `${dir}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`
    this.log?.info({ env: dir, requirements }, 'making a Python environment (once: the SDK and the requirements are installed)')
    try {
      await run(this.python, ['-m', 'venv', tmp], { signal, timeout: 300_000 })
      const args = ['-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', '--quiet', this.sdkDir, ...(requirements != null ? ['-r', requirements] : [])]
      await run(join(tmp, 'bin', 'python'), args, { signal, timeout: 30 * 60_000, maxBuffer: 16 * 1024 * 1024, env: pipEnv() })
      await writeFile(join(tmp, '.blockmesh-ready'), new Date().toISOString() + '\n')
      try {
        await rename(tmp, dir)
      } catch (err) {
        // another agent finished the same environment first: use it
        if (!existsSync(join(dir, '.blockmesh-ready'))) throw err
        await rm(tmp, { recursive: true, force: true })
      }
    } catch (err) {
      await rm(tmp, { recursive: true, force: true })
      const e = err as Error & { stderr?: string }
      throw new AgentError(`could not make the Python environment: ${(e.stderr ?? '').trim().split('\n').slice(-5).join('\n') || e.message}`, 'python_env_failed', 500)
    }
    return join(dir, 'bin', 'python')
  }
}

/** What pip is run with: the basics, pip's own settings (PIP_*: index, trusted hosts, cache) and proxies. */
function pipEnv (): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (v == null) continue
    if (['PATH', 'HOME', 'TMPDIR', 'LANG', 'SSL_CERT_FILE', 'SSL_CERT_DIR', 'REQUESTS_CA_BUNDLE'].includes(k) || /^PIP_/.test(k) || /^(https?|no|all)_proxy$/i.test(k)) out[k] = v
  }
  return out
}

/** How a Python program is started with an environment's interpreter: the arguments and the working folder. */
export function pythonCommand (program: PythonProgram, workDir: string): { args: string[], cwd: string } {
  return program.kind === 'script'
    ? { args: ['-u', program.path], cwd: workDir }
    : { args: ['-u', '-m', program.module], cwd: program.cwd }
}
