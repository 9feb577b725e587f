import type { Logger } from 'pino'
import type { DesiredState } from '../state/replica.ts'
import { DeployablePlanSchema } from '../splitter/plan.ts'
import type { ModelPlan } from '../splitter/plan.ts'
import type { Task } from '../tasks/store.ts'

/**
 * Split plans in the mesh's replicated desired state (collection `plans`), so that any agent can deploy a
 * plan whose task ran on another (POST /api/vdags/deploy {task_id}): the only room that reads or writes them.
 */
export class PlanStore {
  private readonly state: DesiredState

  constructor (state: DesiredState) {
    this.state = state
  }

  async put (taskId: string, plan: ModelPlan): Promise<void> {
    await this.state.put('plans', taskId, { task_id: taskId, plan })
  }

  /** A task's replicated plan, when it is one a deploy can read (any peer writes these; one that is not is not seen). */
  get (taskId: string): ModelPlan | undefined {
    const plan = (this.state.get<{ plan?: unknown }>('plans', taskId)?.value as { plan?: unknown } | undefined)?.plan
    return DeployablePlanSchema.safeParse(plan).success ? plan as ModelPlan : undefined
  }
}

/**
 * When a split task completes here: its stage files join the content store (pinned: stage hosts fetch them
 * from this agent) and its plan joins the desired state. Failures are logged; the task stays complete.
 */
export function onSplitComplete (task: Task, deps: { plans: PlanStore, share: (plan: unknown) => Promise<{ added: string[], skipped: unknown[] }>, log: Logger }): void {
  const plan = (task.result as { plan?: unknown } | null)?.plan
  if (plan == null) return
  deps.share(plan).then(r => {
    deps.log.info({ task: task.task_id, added: r.added.length, skipped: r.skipped }, 'stage files shared')
  }, (err: Error) => { deps.log.warn({ task: task.task_id, err: err.message }, 'could not share the stage files') })
  deps.plans.put(task.task_id, plan as ModelPlan).catch((err: Error) => {
    deps.log.warn({ task: task.task_id, err: err.message }, 'could not replicate the split plan')
  })
}
