import { spawn } from 'node:child_process'
import { randomBytes, createHash } from 'node:crypto'
import { closeSync, mkdirSync, openSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Logger } from 'pino'
import type { Db } from '../db/database.ts'
import { AgentError, ValidationError } from '../errors.ts'
import { TaskStore } from './store.ts'
import type { StartSplitJob, Task, TaskUpdate } from './store.ts'
import { KubernetesJobRunner } from './k8s-runner.ts'
import { PythonEnvs, isPython, parsePythonProgram, pythonCommand } from '../python/envs.ts'

/** Splitter programs the local runner can start, by container_image name. */
export const BUILTIN_SPLITTERS: Record<string, string> = {
  'blockmesh/onnx-splitter': fileURLToPath(new URL('../splitter/program.ts', import.meta.url)),
  'blockmesh/onnx-splitter:latest': fileURLToPath(new URL('../splitter/program.ts', import.meta.url))
}

export interface TaskServiceInit {
  db: Db
  dataDir: string
  /** the agent API as a splitter reaches it (local runner: loopback; Kubernetes: a URL pods can reach) */
  apiUrl: () => string
  publicApiUrl?: string
  kubeconfig?: string
  namespace?: string
  log: Logger
  /** more splitter programs: container_image → script (.ts/.mjs/.js), executable, or `python:PATH.py` / `python:MODULE` */
  programs?: Record<string, string>
  /** the virtual environments Python splitters run in (default: the machine's shared cache) */
  pythonEnvs?: PythonEnvs
  /** told once when a task completes (the agent replicates its plan) */
  onComplete?: (task: Task) => void
}

/**
 * The split runner (seed 002, "Model Splitting Task Runners"): records a
 * task, runs the splitter program for it — as a local process when
 * container_image names a registered program, as a Kubernetes Job when a
 * kubeconfig is configured — and takes status updates from it. The program
 * gets the seed's environment: TASK_ID, TASK_DATA, TASK_STATUS_UPDATE_URL,
 * MODEL_LAYERS_REGISTRY_URL, BLOCK_DB_URL, plus TASK_TOKEN (a token valid
 * only for this task's updates, registering model layers and read-only
 * queries) and OUTPUT_DIR.
 */
export class TaskService {
  readonly store: TaskStore
  private readonly init: TaskServiceInit
  private readonly tokens = new Map<string, string>()
  private readonly running = new Map<string, AbortController>()
  private readonly pythonEnvs: PythonEnvs

  constructor (init: TaskServiceInit) {
    this.init = init
    this.pythonEnvs = init.pythonEnvs ?? new PythonEnvs({ log: init.log })
    this.store = new TaskStore(init.db)
    // A task's runner (its process, its Job follower) and its token live only as long as the agent that
    // started it: a task left unfinished by a previous run can no longer report, so it ends here, said why.
    for (const t of this.store.unfinished()) {
      this.store.update(t.task_id, { status: 'failed', error: `interrupted: the agent restarted while the task was ${t.status}${t.runner === 'kubernetes' ? ` (its Kubernetes Job may still exist: ${t.message ?? ''})` : ''}; start it again` })
    }
  }

  get kubernetes (): boolean { return this.init.kubeconfig != null }

  programs (): Record<string, string> {
    return { ...BUILTIN_SPLITTERS, ...this.init.programs }
  }

  start (job: StartSplitJob): Task {
    const program = this.programs()[job.container_image]
    if (program == null && !this.kubernetes) {
      throw new ValidationError(`container_image ${JSON.stringify(job.container_image)} is not a splitter program registered here (${Object.keys(this.programs()).join(', ')}) and no Kubernetes cluster is configured (agent --kubeconfig)`, [{ field: 'container_image', message: 'unknown here' }])
    }
    const task = this.store.create(job, program != null ? 'local' : 'kubernetes')
    const token = randomBytes(24).toString('base64url')
    this.tokens.set(hashToken(token), task.task_id)
    const abort = new AbortController()
    this.running.set(task.task_id, abort)
    const run = program != null ? this.runLocal(task, program, token, abort.signal) : this.runKubernetes(task, token, abort.signal)
    void run.catch((err: Error) => {
      this.update(task.task_id, { status: 'failed', error: err.message })
      this.init.log.warn({ task: task.task_id, err: err.message }, 'split task failed')
    }).finally(() => {
      this.running.delete(task.task_id)
      this.tokens.delete(hashToken(token))
    })
    this.init.log.info({ task: task.task_id, runner: task.runner, image: job.container_image }, 'split task started')
    return task
  }

  update (id: string, u: TaskUpdate): Task {
    const was = this.store.get(id).status
    const t = this.store.update(id, u)
    if (was !== 'complete' && t.status === 'complete') {
      try { this.init.onComplete?.(t) } catch (err) { this.init.log.warn({ task: id, err: (err as Error).message }, 'task completion hook failed') }
    }
    // a finished task's token is dead at once, not when its runner notices
    if (t.status === 'complete' || t.status === 'failed') this.revoke(id)
    return t
  }

  private revoke (taskId: string): void {
    for (const [hash, id] of this.tokens) if (id === taskId) this.tokens.delete(hash)
  }

  /**
   * Whether a non-agent bearer token may make this call: a task's token may
   * update that task, register and change model layers, and run read-only queries.
   */
  authorizes (token: string, method: string, path: string): boolean {
    const task = this.tokens.get(hashToken(token))
    if (task == null) return false
    if (method === 'PUT' && path === `/tasks/${task}`) return true
    if (method === 'POST' && (path === '/model-layer' || path === '/model-layers' || path === '/split-runners' || path === '/api/blocks/query')) return true
    return method === 'PUT' && path.startsWith('/model-layer/')
  }

  async stopAll (): Promise<void> {
    for (const a of this.running.values()) a.abort()
  }

  private env (task: Task, token: string, apiUrl: string, outputDir: string): Record<string, string> {
    return {
      TASK_ID: task.task_id,
      TASK_DATA: JSON.stringify(task.task_data),
      TASK_STATUS_UPDATE_URL: `${apiUrl}/tasks/${task.task_id}`,
      MODEL_LAYERS_REGISTRY_URL: apiUrl,
      BLOCK_DB_URL: apiUrl,
      TASK_TOKEN: token,
      OUTPUT_DIR: outputDir,
      STORAGE_SIZE: task.storage_size
    }
  }

  private async runLocal (task: Task, program: string, token: string, signal: AbortSignal): Promise<void> {
    const dir = join(this.init.dataDir, 'tasks', task.task_id)
    mkdirSync(dir, { recursive: true })
    const logPath = join(dir, 'splitter.log')
    const env = { ...passThrough(), ...this.env(task, token, this.init.apiUrl(), join(dir, 'output')) }
    let command: string
    let args: string[]
    let cwd: string | undefined
    if (isPython(program)) {
      // a Python splitter: in its own virtual environment (the SDK and its requirements), with the task's environment only
      const py = parsePythonProgram(program)
      this.store.update(task.task_id, { status: 'running', message: 'preparing the Python environment (made once per SDK and requirements, then reused)' })
      command = await this.pythonEnvs.interpreter(py, signal)
      ;({ args, cwd } = pythonCommand(py, dir))
      Object.assign(env, { PYTHONUNBUFFERED: '1', PYTHONDONTWRITEBYTECODE: '1' })
    } else {
      const isScript = /\.(ts|mjs|js)$/.test(program)
      command = isScript ? process.execPath : program
      args = isScript ? [program] : []
    }
    const log = openSync(logPath, 'a')
    const child = spawn(command, args, { env, cwd, stdio: ['ignore', log, log] })
    closeSync(log)
    this.store.update(task.task_id, { status: 'running', message: `local process ${child.pid ?? '?'}` })
    const onAbort = (): void => { child.kill('SIGTERM') }
    signal.addEventListener('abort', onAbort, { once: true })
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('exit', c => { resolve(c) })
      child.once('error', err => { reject(new AgentError(`could not start the splitter ${program}: ${err.message}`, 'split_failed', 500)) })
    }).finally(() => { signal.removeEventListener('abort', onAbort) })
    const now = this.store.get(task.task_id)
    if (now.status === 'complete' || now.status === 'failed') return
    const tail = readFileSync(logPath, 'utf8').trim().split('\n').slice(-5).join('\n')
    throw new AgentError(`splitter exited (${code ?? 'signal'}) without reporting completion${tail !== '' ? `:\n${tail}` : ''}`, 'split_failed', 500)
  }

  private async runKubernetes (task: Task, token: string, signal: AbortSignal): Promise<void> {
    const runner = new KubernetesJobRunner({ kubeconfig: this.init.kubeconfig as string, namespace: this.init.namespace })
    const apiUrl = this.init.publicApiUrl ?? this.init.apiUrl()
    const { jobName } = await runner.start({ taskId: task.task_id, image: task.container_image, storageSize: task.storage_size, env: this.env(task, token, apiUrl, '/mnt/splits') }, signal)
    this.store.update(task.task_id, { status: 'running', message: `Kubernetes Job ${jobName}` })
    const phase = await runner.follow(jobName, (p, message) => {
      this.store.update(task.task_id, { message: `Kubernetes Job ${jobName}: ${p}${message != null ? ` (${message})` : ''}` })
    }, signal)
    const now = this.store.get(task.task_id)
    if (now.status === 'complete' || now.status === 'failed') return
    if (phase === 'failed') throw new AgentError(`Kubernetes Job ${jobName} failed: ${now.message ?? ''}`, 'split_failed', 500)
    throw new AgentError(`Kubernetes Job ${jobName} finished without the splitter reporting completion`, 'split_failed', 500)
  }
}

/**
 * What a local splitter inherits from the agent's environment: the basics, and S3 credentials and
 * settings (for model_split_config.s3 uploads) — nothing else of the agent's.
 */
function passThrough (): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (v == null) continue
    if (k === 'PATH' || k === 'HOME' || k === 'TMPDIR' || k === 'LANG' || /^AWS_[A-Z0-9_]+$/.test(k)) out[k] = v
  }
  return out
}

function hashToken (t: string): string {
  return createHash('sha256').update(t).digest('hex')
}

