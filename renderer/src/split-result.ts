/** What the split view reads from a split task's result (a splitter writes it; nothing in it is trusted). */
import type { ModelPlan, PlanStage, SplitBalance, Task } from './types.ts'

/** What the view draws of a plan: the agent's ModelPlan type, the parts the view checks before it draws them. */
export type DrawnStage = Pick<PlanStage, 'rank' | 'layers' | 'model_layer_hash' | 'size_bytes'> & Partial<Pick<PlanStage, 'inputs' | 'outputs'>>
export interface Plan { vdag: Pick<ModelPlan['vdag'], 'name'>, stages: DrawnStage[] }

/** The task's plan if it has the shape this view draws (a splitter writes the result; it is not trusted). */
export function planOf (t: Task): Plan | null {
  const p = t.result?.plan as Partial<Plan> | undefined
  if (p == null || typeof p.vdag?.name !== 'string' || !Array.isArray(p.stages)) return null
  const ok = p.stages.every(s => typeof s?.rank === 'number' && Array.isArray(s.layers) && s.layers.length === 2 && typeof s.model_layer_hash === 'string' && typeof s.size_bytes === 'number')
  return ok ? p as Plan : null
}

/** How the splitter weighed the cut (the task result's `balance`, untrusted): a line for the plan, or null. */
export function balanceOf (t: Task): string | null {
  const b = t.result?.balance as Partial<Record<keyof SplitBalance, unknown>> | undefined
  if (b == null || (b.cost !== 'measured' && b.cost !== 'params')) return null
  if (b.cost === 'params') return 'cut by the bytes a decode step reads'
  const n = (x: unknown): string => typeof x === 'number' && Number.isFinite(x) ? String(x) : '?'
  return `cut by measured step time: the parts before the layers weigh ${n(b.pre_layers)} layer(s), the parts after them (final norm, LM head) ${n(b.post_layers)}`
}
