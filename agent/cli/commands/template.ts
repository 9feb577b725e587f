import type { Command } from 'commander'
import { Option } from 'commander'
import { apiGet, apiRequest } from '../client.ts'
import { intArg } from '../args.ts'
import { formatBytes, table } from '../format.ts'
import { needToken, print, withTarget } from '../target.ts'
import type { TargetOpts } from '../target.ts'
import type { TemplateAnswer, TemplateDeployAnswer, TemplatesAnswer, TemplateUpdateAnswer } from '../../../contracts/api.ts'

interface EditOpts extends TargetOpts {
  name?: string
  description?: string
  hf?: string
  file?: string
  quantization?: string
  weights?: string
  contextLength?: number
  maxSequences?: number
  temperature?: number
  topP?: number
  maxTokens?: number
  replicas?: number
  maxReplicas?: number
}

const floatArg = (min: number, max: number) => (v: string): number => {
  const n = Number(v)
  if (!Number.isFinite(n) || n < min || n > max) throw new Error(`expected a number in ${min}–${max}, got ${JSON.stringify(v)}`)
  return n
}

function withEditOptions (cmd: Command): Command {
  return cmd
    .option('--description <text>', 'what the template is')
    .option('--file <path>', 'the GGUF file of the hub repo to serve')
    .option('--quantization <q>', 'the GGUF quantization to serve (Q4_K_M, Q8_0, …)')
    .addOption(new Option('--weights <mode>', 'conversion mode of model add').choices(['q8', 'q4', 'int8', 'f32']))
    .option('--context-length <n>', 'positions per sequence (prompt + completion)', intArg(16, 1_048_576))
    .option('--max-sequences <n>', 'sequences decoded together (max concurrent sequences)', intArg(1, 256))
    .option('--temperature <t>', 'sampling default', floatArg(0, 2))
    .option('--top-p <p>', 'sampling default', floatArg(0.0001, 1))
    .option('--max-tokens <n>', 'sampling default: completion tokens', intArg(1, 1_000_000))
    .option('--replicas <n>', 'deploymentConfig.replicas: instances started', intArg(1, 1024))
    .option('--max-replicas <n>', 'deploymentConfig.maxReplicas: autoscaling bound', intArg(1, 1024))
}

/** The body fields the edit flags give (create and update). */
function editBody (o: EditOpts, repo?: string): Record<string, unknown> {
  const sampling = { ...(o.temperature != null ? { temperature: o.temperature } : {}), ...(o.topP != null ? { topP: o.topP } : {}), ...(o.maxTokens != null ? { maxTokens: o.maxTokens } : {}) }
  const deploymentConfig = { ...(o.replicas != null ? { replicas: o.replicas } : {}), ...(o.maxReplicas != null ? { maxReplicas: o.maxReplicas } : {}) }
  return {
    ...(o.description != null ? { description: o.description } : {}),
    ...(repo != null && (o.file != null || o.quantization != null) ? { source: { kind: 'hub', repo, ...(o.file != null ? { file: o.file } : {}), ...(o.quantization != null ? { quantization: o.quantization.toUpperCase() } : {}) } } : {}),
    ...(o.weights != null ? { weights: o.weights } : {}),
    ...(o.contextLength != null ? { contextLength: o.contextLength } : {}),
    ...(o.maxSequences != null ? { maxConcurrentSequences: o.maxSequences } : {}),
    ...(Object.keys(sampling).length > 0 ? { sampling } : {}),
    ...(Object.keys(deploymentConfig).length > 0 ? { deploymentConfig } : {})
  }
}

function sizeOf (n: number | null | undefined): string {
  return n == null ? '-' : formatBytes(n)
}

function showTemplate (t: TemplateAnswer): string {
  const latest = t.versions.at(-1)
  return [
    `${t.name}${t.builtin ? ' (built-in)' : ''}: ${t.description}`,
    `licence ${t.license ?? '-'}, ${t.parameters != null ? `${(t.parameters / 1e6).toFixed(0)}M parameters` : 'parameters unknown'}, context ${t.contextLength ?? '-'}${t.hf != null ? `, from hf://${t.hf}` : ''}`,
    ...(t.availability != null ? [`on this machine: ${t.availability.state === 'cached' ? `in the weight cache (${t.availability.path})` : t.availability.state === 'pypi' ? `obtainable through PyPI (${t.availability.requirement})` : t.availability.note}`] : []),
    '',
    table(['QUANT', 'REPO', 'FILE', 'MEMORY (latest version)'], t.estimates.map(e => {
      const s = t.sources.find(x => x.quantization === e.quantization)
      return [e.quantization, s?.repo ?? '-', s?.file ?? '-', sizeOf(e.totalBytes)]
    })),
    '',
    table(['VERSION', 'SOURCE', 'WEIGHTS', 'CONTEXT', 'SEQS', 'REPLICAS', 'CREATED'], t.versions.map(v => [
      v.name, v.modelSource, v.spec.weights, String(v.spec.contextLength), String(v.spec.maxConcurrentSequences),
      `${v.spec.deploymentConfig.replicas}..${v.spec.deploymentConfig.maxReplicas ?? v.spec.deploymentConfig.replicas}`, v.createdAt ?? 'built-in'])),
    ...(latest != null ? ['', `sampling (${latest.name}): temperature ${latest.spec.sampling.temperature}, top-p ${latest.spec.sampling.topP}, max tokens ${latest.spec.sampling.maxTokens}`] : [])
  ].join('\n')
}

function showDeploy (d: TemplateDeployAnswer): string {
  const dec = d.decision
  const lines = [`${d.version} → ${d.model}: ${d.deployed ? 'deployed' : 'not deployed'}`]
  if (d.estimate != null) lines.push(`memory needed: ${formatBytes(d.estimate.totalBytes)} (${d.estimate.quantization}, weights ${formatBytes(d.estimate.weightsBytes)}, KV cache ${formatBytes(d.estimate.kvCacheBytes)}; ${d.estimate.estimator})`)
  if (dec != null) {
    lines.push(`decision: ${dec.kind}: ${dec.reason}`)
    lines.push(`free per peer: ${Object.entries(dec.freeBytes).map(([n, b]) => `${n} ${formatBytes(b)}`).join(', ')}`)
  }
  if (d.block != null) lines.push(`block ${d.block.id} (${d.block.status}); chat with model "${d.model}" on /v1/chat/completions`)
  if (d.note != null) lines.push(d.note)
  return lines.join('\n')
}

/** `blockmesh template …`: model templates, their versions, one-click deployment (issue 16). */
export function registerTemplateCommand (program: Command): void {
  const tpl = program.command('template').description('model templates: the built-in catalogue and yours, versions NAME-vN, one-click deploy')
  withTarget(tpl.command('list').description('templates: built-in catalogue and yours, with licence, size, memory and availability here'))
    .action(async (opts: TargetOpts) => {
      const body = await apiGet<TemplatesAnswer>(opts.api, '/api/templates')
      print(opts, body, () => table(['TEMPLATE', 'LATEST', 'LICENCE', 'PARAMS', 'CONTEXT', 'MEMORY', 'HERE'], body.templates.map(t => {
        const mem = t.estimates.filter(e => e.totalBytes != null).map(e => `${e.quantization} ${formatBytes(e.totalBytes as number)}`).join(', ')
        return [t.name, t.latest, t.license ?? '-', t.parameters != null ? `${(t.parameters / 1e6).toFixed(0)}M` : '-', String(t.contextLength ?? '-'), mem === '' ? '-' : mem, t.availability?.state ?? (t.builtin ? '-' : 'yours')]
      })))
    })
  withTarget(tpl.command('show').description('a template with its sources, memory per quantization and versions'))
    .argument('<name>', 'NAME or NAME-vN')
    .action(async (name: string, opts: TargetOpts) => {
      const t = await apiGet<TemplateAnswer>(opts.api, `/api/templates/${encodeURIComponent(name)}`)
      print(opts, t, () => showTemplate(t))
    })
  withEditOptions(withTarget(tpl.command('create').description('a new template from a Hugging Face model id (the hub\'s metadata fills it) or a model source')))
    .option('--hf <org/repo>', 'the hub repo (GGUF files or an ONNX export)')
    .option('--source <source>', 'any source model add takes (a .gguf path, hf://…, ollama://…, https://…)')
    .option('--name <name>', 'the template\'s name (default: from the repo)')
    .action(async (opts: EditOpts & { source?: string }) => {
      if (opts.hf == null && opts.source == null) throw new Error('give --hf ORG/REPO or --source SOURCE')
      const body = { ...(opts.name != null ? { name: opts.name } : {}), ...(opts.hf != null ? { hf: opts.hf } : {}), ...(opts.source != null ? { source: { kind: 'uri', uri: opts.source } } : {}), ...editBody(opts, opts.hf) }
      const t = await apiRequest<TemplateAnswer>(opts.api, '/api/templates', { method: 'POST', body, token: needToken(opts), timeoutMs: 120_000 })
      print(opts, t, () => `created ${t.latest}\n\n${showTemplate(t)}`)
    })
  withEditOptions(withTarget(tpl.command('update').description('a new version NAME-vN+1: the latest with these changes (earlier versions stay as they are)')))
    .argument('<name>')
    .option('--repo <org/repo>', 'with --file/--quantization: another hub repo')
    .action(async (name: string, opts: EditOpts & { repo?: string }) => {
      const current = opts.repo ?? (opts.file != null || opts.quantization != null ? await apiGet<TemplateAnswer>(opts.api, `/api/templates/${encodeURIComponent(name)}`).then(t => { const s = t.versions.at(-1)?.spec.source; return s?.kind === 'hub' ? s.repo : undefined }) : undefined)
      const r = await apiRequest<TemplateUpdateAnswer>(opts.api, `/api/templates/${encodeURIComponent(name)}`, { method: 'PUT', body: editBody(opts, current), token: needToken(opts) })
      print(opts, r, () => `created ${r.version.name}\n\n${showTemplate(r.template)}`)
    })
  withTarget(tpl.command('deploy').description('one click: the mesh decides whole vs split from live free memory, then adds the model and serves it under the template\'s name'))
    .argument('<name>', 'NAME (its latest version) or NAME-vN')
    .option('--replicas <n>', 'instances (default: the version\'s deploymentConfig.replicas)', intArg(1, 1024))
    .option('--name <model>', 'the block / served model name (default: the template\'s name)')
    .option('--dry-run', 'only show the decision')
    .action(async (name: string, opts: TargetOpts & { replicas?: number, name?: string, dryRun?: boolean }) => {
      const body = { ...(opts.replicas != null ? { replicas: opts.replicas } : {}), ...(opts.name != null ? { name: opts.name } : {}), ...(opts.dryRun === true ? { dryRun: true } : {}) }
      const r = await apiRequest<TemplateDeployAnswer>(opts.api, `/api/templates/${encodeURIComponent(name)}/deploy`, { method: 'POST', body, token: needToken(opts), timeoutMs: 24 * 3600_000 })
      print(opts, r, () => showDeploy(r))
    })
}
