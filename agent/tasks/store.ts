import { randomBytes } from 'node:crypto'
import { z } from 'zod'
import type { Db } from '../db/database.ts'
import { NotFoundError } from '../errors.ts'

export const TASK_STATUSES = ['pending', 'running', 'complete', 'failed'] as const
export type TaskStatus = typeof TASK_STATUSES[number]

/** seed 002: task_data of a model split job */
export const SplitTaskDataSchema = z.object({
  model_name: z.string().min(1).max(128).regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'letters, digits, ".", "_" and "-"'),
  /** a local path, file:// URL or http(s):// URL */
  model_download_url: z.string().min(1).max(4096),
  world_size: z.number().int().min(1).max(64),
  /** interpreted by the splitter program (the built-in one: see agent/splitter/program.ts) */
  model_split_config: z.record(z.string().max(128), z.unknown()).default({})
}).passthrough()

/** seed 002: POST /start_model_split_job */
export const StartSplitJobSchema = z.object({
  task_data: SplitTaskDataSchema,
  container_image: z.string().min(1).max(512),
  storage_size: z.string().regex(/^\d+(\.\d+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$/, 'a Kubernetes quantity such as 1Gi').default('1Gi')
}).strict()
export type StartSplitJob = z.output<typeof StartSplitJobSchema>

/** What a running splitter reports on TASK_STATUS_UPDATE_URL. */
export const TaskUpdateSchema = z.object({
  status: z.enum(TASK_STATUSES).optional(),
  progress: z.number().min(0).max(1).optional(),
  message: z.string().max(4096).optional(),
  result: z.record(z.string().max(128), z.unknown()).optional(),
  error: z.string().max(16_384).optional()
}).strict()
export type TaskUpdate = z.output<typeof TaskUpdateSchema>

export interface Task {
  task_id: string
  task_type: 'model_splits'
  status: TaskStatus
  progress: number
  message: string | null
  runner: 'local' | 'kubernetes'
  task_data: z.output<typeof SplitTaskDataSchema>
  container_image: string
  storage_size: string
  result: Record<string, unknown> | null
  error: string | null
  created_at: string
  updated_at: string
}

/** Tasks in SQLite (table tasks), the seed's global task registry for this agent. */
export class TaskStore {
  private readonly db: Db
  constructor (db: Db) { this.db = db }

  create (job: StartSplitJob, runner: Task['runner']): Task {
    const now = new Date().toISOString()
    const task: Task = {
      task_id: `task-${randomBytes(6).toString('hex')}`,
      task_type: 'model_splits',
      status: 'pending',
      progress: 0,
      message: null,
      runner,
      task_data: job.task_data,
      container_image: job.container_image,
      storage_size: job.storage_size,
      result: null,
      error: null,
      created_at: now,
      updated_at: now
    }
    this.db.prepare('INSERT INTO tasks (id, type, status, doc, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)')
      .run(task.task_id, task.task_type, task.status, JSON.stringify(task), Date.now(), Date.now())
    return task
  }

  find (id: string): Task | undefined {
    const doc = this.db.prepare('SELECT doc FROM tasks WHERE id = ?').pluck().get(id) as string | undefined
    return doc == null ? undefined : JSON.parse(doc) as Task
  }

  get (id: string): Task {
    const t = this.find(id)
    if (t == null) throw new NotFoundError(`no task ${id}`)
    return t
  }

  list (limit = 200): Task[] {
    return (this.db.prepare('SELECT doc FROM tasks ORDER BY created_at DESC LIMIT ?').pluck().all(limit) as string[]).map(d => JSON.parse(d) as Task)
  }

  /** Tasks not finished yet (pending or running). */
  unfinished (): Task[] {
    return (this.db.prepare("SELECT doc FROM tasks WHERE status IN ('pending', 'running')").pluck().all() as string[]).map(d => JSON.parse(d) as Task)
  }

  /** Applies an update; a task that is complete or failed does not change any more. */
  update (id: string, u: TaskUpdate): Task {
    return this.db.transaction(() => {
      const t = this.get(id)
      if (t.status === 'complete' || t.status === 'failed') return t
      const next: Task = {
        ...t,
        status: u.status ?? t.status,
        progress: u.status === 'complete' ? 1 : u.progress ?? t.progress,
        message: u.message ?? t.message,
        result: u.result ?? t.result,
        error: u.error ?? t.error,
        updated_at: new Date().toISOString()
      }
      this.db.prepare('UPDATE tasks SET status = ?, doc = ?, updated_at = ? WHERE id = ?').run(next.status, JSON.stringify(next), Date.now(), id)
      return next
    })()
  }
}
