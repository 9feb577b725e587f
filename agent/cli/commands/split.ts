import { isAbsolute, resolve } from 'node:path'
import type { Command } from 'commander'
import { intArg } from '../args.ts'
import { apiRequest } from '../client.ts'
import { table } from '../format.ts'
import { needToken, print, withTarget } from '../target.ts'
import type { TargetOpts } from '../target.ts'
import { AgentError, ValidationError } from '../../errors.ts'
import { ensureGeneratedModel } from '../../model/cache.ts'
import { PRESETS } from '../../model/spec.ts'
import type { ComponentsAnswer, SplitJobStarted, SplitTaskResult, Task, TaskAnswer, TasksAnswer, Vdag, VdagAnswer, VdagDeployAnswer, VdagsAnswer } from '../../../contracts/api.ts'

/** Where `blockmesh split --model PRESET` keeps the models it generates (shared with npm start). */
export const MODELS_DIR = '.blockmesh/models'

/** Preset names `split --model` accepts, with the issue's spelling `demo-100m` for 100m. */
function presetOf (name: string): string | undefined {
  const n = name.replace(/^demo-(?=.)/, '')
  return PRESETS[n] != null ? n : undefined
}

interface SplitOpts extends TargetOpts {
  model?: string
  modelUrl?: string
  name?: string
  worldSize: number
  image: string
  storage: string
  balance?: string
  cost?: string
  capacity?: string
  config?: string
  wait?: boolean
  deploy?: boolean
  vdagName?: string
}

function taskLine (t: Task): string {
  return `${t.task_id}  ${t.status}  ${Math.round(t.progress * 100)}%${t.message != null ? `  ${t.message}` : ''}${t.error != null ? `\n  error: ${t.error}` : ''}`
}

function planSummary (t: Task): string {
  // any splitter's result: the built-in one writes all of SplitTaskResult, others may write less
  const r = t.result as Partial<SplitTaskResult> | null
  if (r?.plan == null) return ''
  const rows = r.plan.stages.map(s => [String(s.rank), `${s.layers[0]}..${s.layers[1] - 1}`, s.model_layer_hash, `${(s.size_bytes / 1024 / 1024).toFixed(1)} MiB`])
  const b = r.balance
  const cut = b?.cost === 'measured' ? `, cut by measured step time (before the layers ${b.pre_layers ?? '?'} layer(s), after them ${b.post_layers ?? '?'})` : b?.cost === 'params' ? ', cut by the bytes a step reads' : ''
  return `model plan: vDAG ${r.plan.vdag.name}, verified (max abs diff ${r.max_abs_diff ?? '?'})${cut}\n${table(['STAGE', 'LAYERS', 'MD5', 'SIZE'], rows)}`
}

async function waitFor (api: string, id: string, onChange: (t: Task) => void): Promise<Task> {
  let last = ''
  for (;;) {
    const t = (await apiRequest<TaskAnswer>(api, `/tasks/${encodeURIComponent(id)}`)).data
    const line = taskLine(t)
    if (line !== last) { onChange(t); last = line }
    if (t.status === 'complete' || t.status === 'failed') return t
    await new Promise(resolve => setTimeout(resolve, 500))
  }
}

function vdagRows (vdags: Array<Vdag & { ready?: boolean }>): string {
  return table(['NAME', 'READY', 'STAGES', 'CONTEXT'], vdags.map(v => [v.name, v.ready === true ? 'yes' : 'no', v.stages.join(' → '), String(v.contextLength)]))
}

export function registerSplitCommands (program: Command): void {
  withTarget(program.command('split')
    .description('split a model into pipeline stages (a tracked split task); with --deploy, serve it as a vDAG')
    .option('--model <name|path>', `a generated model (${Object.keys(PRESETS).join(', ')}, demo-100m; generated locally once) or a local .onnx path`)
    .option('--model-url <url>', 'or: the model to download (http(s), file://), as the splitter sees it')
    .option('--name <name>', 'model_name of the task (default: from --model)')
    .requiredOption('--world-size <n>', 'number of stages', intArg(1, 64))
    .option('--image <name>', 'container_image: a splitter program registered on the agent, or an image for a Kubernetes Job', 'blockmesh/onnx-splitter')
    .option('--storage <size>', 'storage_size for a Kubernetes Job\'s volume', '1Gi')
    .option('--balance <how>', 'params (by parameter bytes) or capacity (with --capacity)')
    .option('--capacity <weights>', 'relative capacity per stage, e.g. 2,1,1')
    .option('--cost <how>', 'what a stage\'s work is weighed by: measured (default: layers by the bytes a step reads, the embeddings and LM head timed against a layer) or params (bytes a step reads)')
    .option('--config <json>', 'more model_split_config (JSON object)')
    .option('--wait', 'follow the task until it ends')
    .option('--deploy', 'when the task completes, deploy its plan (implies --wait)')
    .option('--vdag-name <name>', 'name to serve the vDAG under (default: the plan\'s, MODEL-pipeline)'))
    .action(async (opts: SplitOpts) => {
      if ((opts.model == null) === (opts.modelUrl == null)) throw new ValidationError('give one of --model NAME|PATH or --model-url URL')
      let url = opts.modelUrl as string
      let name = opts.name
      let modelConfig: Record<string, unknown> = {}
      if (opts.model != null) {
        const preset = presetOf(opts.model)
        if (preset != null) {
          // the names npm start and the benchmarks use, so the cached files are shared
          const cached = preset === 'demo' ? 'demo-gpt' : `gpt-${preset}`
          const m = await ensureGeneratedModel({ ...PRESETS[preset], seed: 1 }, resolve(MODELS_DIR), cached, line => process.stderr.write(line + '\n'))
          url = m.path
          name ??= cached
        } else if (/\.onnx$/i.test(opts.model)) {
          url = isAbsolute(opts.model) ? opts.model : resolve(opts.model)
          name ??= opts.model.replace(/^.*\//, '').replace(/\.onnx$/i, '')
        } else {
          // a component registered on the agent (blockmesh model add): its model file, MD5, tokenizer and context
          const { components } = await apiRequest<ComponentsAnswer>(opts.api, '/api/components')
          const c = components.filter(x => x.spec.name === opts.model || x.uri === opts.model).at(-1)
          if (c == null || c.spec.model == null) {
            throw new ValidationError(`--model: ${JSON.stringify(opts.model)} is neither a preset (${Object.keys(PRESETS).join(', ')}, demo-100m), an .onnx file, nor a model component on the agent (see blockmesh model list)`)
          }
          url = c.spec.model.url
          name ??= c.spec.name
          modelConfig = { md5: c.spec.model.md5, tokenizer: c.spec.tokenizer, ...(c.spec.contextLength != null ? { context_length: c.spec.contextLength } : {}) }
        }
      }
      name ??= url.replace(/[?#].*$/, '').replace(/^.*\//, '').replace(/\.onnx$/i, '') || 'model'
      let config: Record<string, unknown> = {}
      if (opts.config != null) {
        try { config = JSON.parse(opts.config) } catch (err) { throw new ValidationError(`--config is not JSON: ${(err as Error).message}`) }
        if (typeof config !== 'object' || config == null || Array.isArray(config)) throw new ValidationError('--config must be a JSON object')
      }
      config = { ...modelConfig, ...config }
      if (opts.balance != null) config.balance = opts.balance
      if (opts.cost != null) {
        if (opts.cost !== 'measured' && opts.cost !== 'params') throw new ValidationError(`--cost: measured or params, got ${JSON.stringify(opts.cost)}`)
        config.cost = opts.cost
      }
      if (opts.capacity != null) {
        const w = opts.capacity.split(',').map(Number)
        if (w.some(x => !Number.isFinite(x) || x <= 0)) throw new ValidationError(`--capacity: positive numbers, comma-separated, got ${JSON.stringify(opts.capacity)}`)
        config.capacity = w
        config.balance ??= 'capacity'
      }
      if (opts.vdagName != null) config.vdag_name = opts.vdagName
      const token = needToken(opts)
      const started = await apiRequest<SplitJobStarted>(opts.api, '/start_model_split_job', {
        method: 'POST',
        token,
        body: { task_data: { model_name: name.replace(/[^A-Za-z0-9._-]/g, '-'), model_download_url: url, world_size: opts.worldSize, model_split_config: config }, container_image: opts.image, storage_size: opts.storage }
      })
      if (opts.wait !== true && opts.deploy !== true) {
        print(opts, started, () => `started split task ${started.task_id}\nfollow it with: blockmesh task get ${started.task_id}`)
        return
      }
      if (opts.json !== true) process.stderr.write(`started split task ${started.task_id}\n`)
      const t = await waitFor(opts.api, started.task_id, t => { if (opts.json !== true) process.stderr.write(taskLine(t) + '\n') })
      if (t.status === 'failed') throw new AgentError(`split task ${t.task_id} failed: ${t.error ?? ''}`, 'split_failed', 500)
      if (opts.deploy !== true) {
        print(opts, t, () => planSummary(t))
        return
      }
      const d = await apiRequest<VdagDeployAnswer>(opts.api, '/api/vdags/deploy', { method: 'POST', token, body: { task_id: t.task_id, ...(opts.vdagName != null ? { name: opts.vdagName } : {}) } })
      print(opts, { task: t, deployed: d }, () => `${planSummary(t)}\ndeployed vDAG ${d.vdag.name}: ${d.blocks.map(b => `${b.id}${b.reused ? ' (reused)' : ''}`).join(' → ')}\nask it: curl ${opts.api}/v1/chat/completions -H "Authorization: Bearer $BLOCKMESH_TOKEN" -H 'content-type: application/json' -d '{"model":"${d.vdag.name}","messages":[{"role":"user","content":"Hello"}]}'`)
    })

  const task = program.command('task').description('tasks: split tasks and their results')
  withTarget(task.command('list').description('list tasks, newest first')).action(async (opts: TargetOpts) => {
    const body = await apiRequest<TasksAnswer>(opts.api, '/tasks')
    print(opts, body.data, () => table(['ID', 'TYPE', 'STATUS', 'PROGRESS', 'RUNNER', 'MODEL', 'WORLD', 'CREATED', 'MESSAGE / ERROR'], body.data.map(t => [
      t.task_id, t.task_type, t.status, `${Math.round(t.progress * 100)}%`, t.runner, t.task_data.model_name, String(t.task_data.world_size), t.created_at, ((t.error ?? t.message ?? '').split('\n')[0] ?? '').slice(0, 60)
    ])))
  })
  withTarget(task.command('get').description('show a task (with --wait: follow it until it ends)').argument('<id>').option('--wait', 'follow the task until it ends'))
    .action(async (id: string, opts: TargetOpts & { wait?: boolean }) => {
      const t = opts.wait === true
        ? await waitFor(opts.api, id, t => { if (opts.json !== true) process.stderr.write(taskLine(t) + '\n') })
        : (await apiRequest<TaskAnswer>(opts.api, `/tasks/${encodeURIComponent(id)}`)).data
      print(opts, t, () => [taskLine(t), `runner ${t.runner}, image ${t.container_image}, model ${t.task_data.model_name} (${t.task_data.model_download_url}), world size ${t.task_data.world_size}`, planSummary(t)].filter(Boolean).join('\n'))
      if (opts.wait === true && t.status === 'failed') process.exitCode = 1
    })

  const vdag = program.command('vdag').description('vDAGs: blocks chained and served as one model')
  withTarget(vdag.command('list').description('list vDAGs')).action(async (opts: TargetOpts) => {
    const body = await apiRequest<VdagsAnswer>(opts.api, '/api/vdags')
    print(opts, body, () => vdagRows(body.vdags))
  })
  withTarget(vdag.command('get').description('show a vDAG and the route a request takes now').argument('<name>')).action(async (name: string, opts: TargetOpts) => {
    const v = await apiRequest<VdagAnswer>(opts.api, `/api/vdags/${encodeURIComponent(name)}`)
    print({ ...opts, json: true }, v, () => '')
  })
  withTarget(vdag.command('delete').description('delete a vDAG (its stage blocks stay; delete them with blockmesh block delete)').argument('<name>')).action(async (name: string, opts: TargetOpts) => {
    const body = await apiRequest(opts.api, `/api/vdags/${encodeURIComponent(name)}`, { method: 'DELETE', token: needToken(opts) })
    print(opts, body, () => `deleted vDAG ${name}`)
  })
  withTarget(vdag.command('deploy').description('deploy a complete split task\'s model plan: stage blocks (reused when running) and the vDAG').argument('<task-id>').option('--name <name>', 'serve it under this name'))
    .action(async (id: string, opts: TargetOpts & { name?: string }) => {
      const d = await apiRequest<VdagDeployAnswer>(opts.api, '/api/vdags/deploy', { method: 'POST', token: needToken(opts), body: { task_id: id, ...(opts.name != null ? { name: opts.name } : {}) } })
      print(opts, d, () => `deployed vDAG ${d.vdag.name}: ${d.blocks.map(b => `${b.id}${b.reused ? ' (reused)' : ''}`).join(' → ')}`)
    })
}
