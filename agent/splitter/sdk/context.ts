/**
 * The splitter SDK (seed 002, "Model splitter SDK"), in TypeScript: what a
 * splitting program gets from its runner, and how it reports back.
 */

export interface TaskData {
  model_name: string
  model_download_url: string
  world_size: number
  model_split_config: Record<string, unknown>
  [key: string]: unknown
}

export class ContextError extends Error {
  readonly code = 'bad_context'
  constructor (message: string) {
    super(message)
    this.name = 'ContextError'
  }
}

/** The task's environment as a typed object (seed: Context). */
export class Context {
  readonly taskId: string
  readonly taskData: TaskData
  readonly taskStatusUpdateUrl: string
  readonly modelLayersRegistryUrl: string
  readonly blockDbUrl: string
  /** bearer token for the URLs above (Blockmesh: scoped to this task) */
  readonly token: string | undefined
  /** where to write outputs (the runner's volume) */
  readonly outputDir: string

  constructor (init: { taskId: string, taskData: TaskData, taskStatusUpdateUrl: string, modelLayersRegistryUrl: string, blockDbUrl: string, token?: string, outputDir: string }) {
    this.taskId = init.taskId
    this.taskData = init.taskData
    this.taskStatusUpdateUrl = init.taskStatusUpdateUrl
    this.modelLayersRegistryUrl = init.modelLayersRegistryUrl
    this.blockDbUrl = init.blockDbUrl
    this.token = init.token
    this.outputDir = init.outputDir
  }

  /** Builds the context from TASK_ID, TASK_DATA, TASK_STATUS_UPDATE_URL, MODEL_LAYERS_REGISTRY_URL, BLOCK_DB_URL (+ TASK_TOKEN, OUTPUT_DIR). */
  static fromEnv (env: NodeJS.ProcessEnv = process.env): Context {
    const need = (name: string): string => {
      const v = env[name]
      if (v == null || v === '') throw new ContextError(`environment variable ${name} is not set`)
      return v
    }
    let taskData: TaskData
    try {
      taskData = JSON.parse(need('TASK_DATA')) as TaskData
    } catch (err) {
      if (err instanceof ContextError) throw err
      throw new ContextError(`TASK_DATA is not JSON: ${(err as Error).message}`)
    }
    if (typeof taskData !== 'object' || taskData == null || Array.isArray(taskData)) throw new ContextError('TASK_DATA must be a JSON object')
    return new Context({
      taskId: need('TASK_ID'),
      taskData,
      taskStatusUpdateUrl: need('TASK_STATUS_UPDATE_URL'),
      modelLayersRegistryUrl: need('MODEL_LAYERS_REGISTRY_URL'),
      blockDbUrl: need('BLOCK_DB_URL'),
      // an empty TASK_TOKEN is no token (no Authorization header), as in the Python SDK
      token: env.TASK_TOKEN === '' ? undefined : env.TASK_TOKEN,
      outputDir: env.OUTPUT_DIR ?? '/mnt/splits'
    })
  }

  headers (): Record<string, string> {
    return { 'content-type': 'application/json', ...(this.token != null ? { authorization: `Bearer ${this.token}` } : {}) }
  }

  /** Reports progress (0..1) and a message on the task. */
  async progress (fraction: number, message: string): Promise<void> {
    await this.report({ status: 'running', progress: Math.min(1, Math.max(0, fraction)), message })
  }

  /** PUT to TASK_STATUS_UPDATE_URL (seed: GlobalTasksDB.update_task). */
  async report (update: { status?: 'running' | 'complete' | 'failed', progress?: number, message?: string, result?: Record<string, unknown>, error?: string }): Promise<void> {
    const res = await fetch(this.taskStatusUpdateUrl, { method: 'PUT', headers: this.headers(), body: JSON.stringify(update), signal: AbortSignal.timeout(30_000) })
    if (!res.ok) throw new Error(`status update failed: ${res.status} ${(await res.text()).slice(0, 300)}`)
  }
}
