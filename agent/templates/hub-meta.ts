/**
 * A template from a Hugging Face model id (`POST /api/templates {hf: "ORG/REPO"}`, seed 004 story 2): the
 * hub's own metadata fills the fields. Over the hub's real HTTP API (the endpoint is hub.ts's: option, else
 * env HF_ENDPOINT, else https://huggingface.co; HF_TOKEN goes to the hub only):
 *
 * - `GET /api/models/{repo}`: `cardData.license` (else a `license:…` tag), `gguf` (`total` parameters,
 *   `architecture`, `context_length`) for GGUF repos, `safetensors.total` and `config.model_type` otherwise;
 * - the file listing (hub.ts listFiles: revision + tree API): the GGUF files by quantization with their sizes;
 * - `config.json` when the repo has one (layers, hidden size, heads, KV heads, vocabulary, positions).
 *
 * Blockmesh serves GGUF files and ONNX exports: a repo with neither (safetensors only, say
 * mistralai/Mistral-7B-Instruct-v0.2) is refused with that reason.
 */
import { readFile } from 'node:fs/promises'
import { z } from 'zod'
import { ValidationError } from '../errors.ts'
import { DEFAULT_HF_ENDPOINT, downloadFile, ggufQuant, listFiles, pickHubFiles } from '../model/hub.ts'
import { ModelSourceError } from '../model/source.ts'
import type { ModelFacts, TemplateSource } from './schemas.ts'

const ModelInfoAnswer = z.object({
  id: z.string().optional(),
  tags: z.array(z.string()).optional(),
  cardData: z.object({ license: z.union([z.string(), z.array(z.string())]).optional() }).passthrough().nullish(),
  gguf: z.object({ total: z.number().optional(), architecture: z.string().optional(), context_length: z.number().optional() }).passthrough().nullish(),
  safetensors: z.object({ total: z.number().optional() }).passthrough().nullish(),
  config: z.object({ model_type: z.string().optional(), architectures: z.array(z.string()).optional() }).passthrough().nullish()
}).passthrough()

const HfConfig = z.object({
  model_type: z.string().optional(),
  num_hidden_layers: z.number().int().optional(),
  hidden_size: z.number().int().optional(),
  num_attention_heads: z.number().int().optional(),
  num_key_value_heads: z.number().int().optional(),
  head_dim: z.number().int().optional(),
  vocab_size: z.number().int().optional(),
  max_position_embeddings: z.number().int().optional(),
  text_config: z.record(z.string(), z.unknown()).optional()
}).passthrough()

export interface HubTemplateFacts {
  repo: string
  commit: string
  source: TemplateSource
  model: ModelFacts
  description: string
}

export interface HubMetaOptions { endpoint?: string, token?: string, cacheDir: string, signal?: AbortSignal }

async function modelInfo (repo: string, opts: HubMetaOptions): Promise<z.output<typeof ModelInfoAnswer>> {
  const endpoint = (opts.endpoint ?? process.env.HF_ENDPOINT ?? DEFAULT_HF_ENDPOINT).replace(/\/+$/, '')
  const token = opts.token ?? process.env.HF_TOKEN
  const url = `${endpoint}/api/models/${repo.split('/').map(encodeURIComponent).join('/')}`
  let res: Response
  try {
    res = await fetch(url, { headers: { accept: 'application/json', ...(token != null && token !== '' ? { authorization: `Bearer ${token}` } : {}) }, signal: opts.signal ?? AbortSignal.timeout(30_000), redirect: 'follow' })
  } catch (err) {
    throw new ModelSourceError('network', `the hub (${endpoint}) cannot be reached for ${repo}: ${(err as Error).message}`, { repo })
  }
  if (res.status === 404 || res.status === 401) {
    await res.body?.cancel().catch(() => {})
    throw new ModelSourceError('not_found', `no model repo ${repo} on the hub (${res.status === 401 ? 'or it is private or gated: set HF_TOKEN' : 'HTTP 404'})`, { repo, status: res.status })
  }
  if (!res.ok) {
    await res.body?.cancel().catch(() => {})
    throw new ModelSourceError('http_status', `the hub answered HTTP ${res.status} for ${repo}`, { repo, status: res.status })
  }
  const text = await res.text()
  if (text.length > 16 * 1024 * 1024) throw new ModelSourceError('too_large', `the hub's metadata for ${repo} is over 16 MiB`, { repo })
  let json: unknown
  try { json = JSON.parse(text) } catch { throw new ModelSourceError('corrupt', `the hub's metadata for ${repo} is not JSON`, { repo }) }
  const p = ModelInfoAnswer.safeParse(json)
  if (!p.success) throw new ModelSourceError('corrupt', `the hub's metadata for ${repo} is not a model's`, { repo })
  return p.data
}

function licenseOf (info: z.output<typeof ModelInfoAnswer>): string | undefined {
  const l = info.cardData?.license
  if (typeof l === 'string' && l !== '') return l.slice(0, 128)
  if (Array.isArray(l) && l.length > 0) return l[0].slice(0, 128)
  return info.tags?.find(t => t.startsWith('license:'))?.slice('license:'.length).slice(0, 128)
}

/** What the hub says about REPO, turned into a template version's source and model facts. */
export async function hubTemplateFacts (repo: string, opts: HubMetaOptions): Promise<HubTemplateFacts> {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*$/.test(repo)) throw new ValidationError(`"${repo}" is not a hub repo: write ORG/REPO`)
  const hubOpts = { endpoint: opts.endpoint, token: opts.token, signal: opts.signal }
  const info = await modelInfo(repo, opts)
  const listing = await listFiles(repo, 'main', hubOpts)
  const ggufs = listing.files.filter(f => /\.gguf$/i.test(f.path) && !/mmproj/i.test(f.path))
  const hasOnnx = listing.files.some(f => /\.onnx$/i.test(f.path))
  let source: TemplateSource
  if (ggufs.length > 0) {
    const pick = pickHubFiles(listing)
    source = { kind: 'hub', repo, revision: 'main', file: pick.model.path, quantization: pick.variant }
  } else if (hasOnnx) {
    source = { kind: 'uri', uri: `hf://${repo}` }
  } else {
    throw new ValidationError(`${repo} has neither GGUF files nor an ONNX export (Blockmesh serves those): pick a GGUF repo of the same model (e.g. one named …-GGUF), or export it to ONNX`, [{ field: 'hf', message: 'no GGUF or ONNX files in the repo' }])
  }
  const model: ModelFacts = {}
  const arch = info.gguf?.architecture ?? info.config?.model_type
  if (arch != null) model.architecture = arch.slice(0, 64)
  const params = info.gguf?.total ?? info.safetensors?.total
  if (params != null && params > 0) model.parameters = Math.round(params)
  if (info.gguf?.context_length != null && info.gguf.context_length > 0) model.contextLength = info.gguf.context_length
  const license = licenseOf(info)
  if (license != null) model.license = license
  if (ggufs.length > 0) {
    model.files = ggufs.slice(0, 64).map(f => ({ quantization: ggufQuant(f.path) ?? 'unknown', file: f.path, sizeBytes: f.size }))
  }
  if (listing.files.some(f => f.path === 'config.json')) {
    try {
      const d = await downloadFile(repo, listing.commit, 'config.json', opts.cacheDir, { ...hubOpts, maxBytes: 1024 * 1024 })
      const c = HfConfig.parse(JSON.parse(await readFile(d.path, 'utf8')))
      const t = c.text_config != null ? HfConfig.parse(c.text_config) : c
      if (t.num_hidden_layers != null) model.layers = t.num_hidden_layers
      if (t.hidden_size != null) model.hidden = t.hidden_size
      if (t.num_attention_heads != null) model.heads = t.num_attention_heads
      model.kvHeads = t.num_key_value_heads ?? model.heads
      if (model.kvHeads == null) delete model.kvHeads
      if (t.head_dim != null) model.headDim = t.head_dim
      if (t.vocab_size != null) model.vocab = t.vocab_size
      if (t.max_position_embeddings != null) model.contextLength ??= t.max_position_embeddings
      if (model.architecture == null && c.model_type != null) model.architecture = c.model_type.slice(0, 64)
    } catch {
      // a config.json that does not parse leaves the shape to the model file (model add reads it)
    }
  }
  const size = model.parameters != null ? `${(model.parameters / 1e9).toFixed(model.parameters < 1e9 ? 2 : 1)}B parameters` : 'size unknown'
  return { repo, commit: listing.commit, source, model, description: `${repo} from the hub (${model.architecture ?? 'architecture unknown'}, ${size}${license != null ? `, licence ${license}` : ''})` }
}
