import { join } from 'node:path'
import { generateModel } from '../../agent/model/generate.ts'
import type { GeneratedModel } from '../../agent/model/generate.ts'
import { PRESETS } from '../../agent/model/spec.ts'
import type { AgentProcess } from './agents.ts'
import { tempDir, until } from './agents.ts'

/** The tiny test model (≈150k parameters) with a long context, so a generation can outlast a test's actions. */
export function tinyModel (dir = tempDir('bm-model-'), seed = 5): GeneratedModel {
  return generateModel({ ...PRESETS.tiny, maxPositions: 4096, seed }, join(dir, `tiny-${seed}.onnx`))
}

export function componentSpec (m: Pick<GeneratedModel, 'path' | 'md5' | 'spec'>, name = 'tiny-gpt', over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name, version: m.md5.slice(0, 8), runtime: 'onnx',
    model: { url: m.path, md5: m.md5 },
    contextLength: m.spec.maxPositions,
    defaults: { maxTokens: 64, temperature: 0.7, topP: 0.95 },
    ...over
  }
}

/** Creates the component and a block on an agent and waits until the block is ready (or failed). */
export async function deploy (agent: AgentProcess, component: Record<string, unknown>, block: Record<string, unknown>): Promise<any> {
  const c = await agent.api('/api/components', { method: 'POST', body: component })
  if (c.status !== 201 && c.status !== 409) throw new Error(`component: ${c.status} ${JSON.stringify(c.body)}`)
  const b = await agent.api('/api/blocks', { method: 'POST', body: block })
  if (b.status !== 201) throw new Error(`block: ${b.status} ${JSON.stringify(b.body)}`)
  return await until(async () => {
    const r = await agent.api(`/api/blocks/${b.body.id as string}`)
    return r.body.status === 'ready' || r.body.status === 'failed' ? r.body : undefined
  }, `block ${b.body.id as string} to load`, 60_000, 100)
}

/** Runs a real split task (the built-in ONNX splitter, local runner) on `agent` and deploys its plan as a vDAG; returns the task. */
export async function splitAndDeploy (agent: AgentProcess, opts: { modelName: string, modelPath: string, worldSize: number, config?: Record<string, unknown> }): Promise<any> {
  const start = await agent.api('/start_model_split_job', {
    method: 'POST',
    body: { task_data: { model_name: opts.modelName, model_download_url: opts.modelPath, world_size: opts.worldSize, ...(opts.config != null ? { model_split_config: opts.config } : {}) }, container_image: 'blockmesh/onnx-splitter', storage_size: '1Gi' }
  })
  if (start.status !== 201) throw new Error(`split: ${start.status} ${JSON.stringify(start.body)}`)
  const task = await until(async () => {
    const t = (await agent.api(`/tasks/${start.body.task_id as string}`)).body.data
    return t.status === 'complete' || t.status === 'failed' ? t : undefined
  }, 'the split task to finish', 120_000, 250)
  if (task.status !== 'complete') throw new Error(`split task failed: ${task.error as string}`)
  const deployed = await agent.api('/api/vdags/deploy', { method: 'POST', body: { task_id: task.task_id } })
  if (deployed.status !== 201) throw new Error(`deploy: ${deployed.status} ${JSON.stringify(deployed.body)}`)
  return task
}
