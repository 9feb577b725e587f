import type { FastifyError, FastifyInstance } from 'fastify'
import type { ApiContext } from '../context.ts'
import { StartSplitJobSchema, TaskUpdateSchema } from '../../tasks/store.ts'
import { parseWith } from '../validate.ts'
import type { AgentError } from '../../errors.ts'
import { registryErrorBody } from './registries.ts'
import type { SplitJobStarted, TaskAnswer, TasksAnswer } from '../../../contracts/api.ts'
import { BUILTIN_SPLITTERS } from '../../tasks/service.ts'
import { BuiltinSplitConfigSchema } from '../../splitter/config.ts'

/**
 * The split runner's routes (seed 002): POST /start_model_split_job, and the
 * task registry: GET /tasks, GET /tasks/:id, PUT /tasks/:id (the splitter's
 * status updates). Answers keep the seed's envelope: { success, task_id | data | error }.
 */
export function registerTaskRoutes (app: FastifyInstance, ctx: ApiContext): void {
  void app.register(async (scope) => {
    scope.setErrorHandler((err: FastifyError | AgentError, req, reply) => {
      const { status, body } = registryErrorBody(err)
      if (status >= 500) req.log.error({ err }, 'request failed')
      void reply.status(status).send(body)
    })
    scope.post('/start_model_split_job', async (req, reply) => {
      const job = parseWith(StartSplitJobSchema, req.body)
      // the built-in splitter's options are known here: refused now, naming the field, rather than as a failed task
      if (Object.hasOwn(BUILTIN_SPLITTERS, job.container_image)) parseWith(BuiltinSplitConfigSchema, job.task_data.model_split_config, 'task_data.model_split_config')
      const task = ctx.tasks.start(job)
      return await reply.status(201).send({ success: true, task_id: task.task_id } satisfies SplitJobStarted)
    })
    scope.get('/tasks', async (): Promise<TasksAnswer> => ({ success: true, data: ctx.tasks.store.list() }))
    scope.get<{ Params: { id: string } }>('/tasks/:id', async (req): Promise<TaskAnswer> => ({ success: true, data: ctx.tasks.store.get(req.params.id) }))
    scope.put<{ Params: { id: string } }>('/tasks/:id', async (req): Promise<TaskAnswer> => {
      const update = parseWith(TaskUpdateSchema, req.body)
      return { success: true, data: ctx.tasks.update(req.params.id, update) }
    })
  })
}
