/**
 * A Hugging Face ONNX export on disk (the optimum / transformers.js layout): `onnx/model*.onnx` with
 * optional `.onnx_data` files beside it, `config.json`, `tokenizer.json`, `tokenizer_config.json`,
 * `generation_config.json`, `chat_template.jinja`. Served in place; ONNX Runtime finds external data
 * next to the model file.
 */
import { existsSync, readdirSync, statSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { AgentError } from '../errors.ts'
import { BUNDLE_FORMAT, HfTextTokenizer, MAX_BUNDLE_BYTES, TokenizerError } from './tokenizers/bundle.ts'
import type { TokenizerBundle } from './tokenizers/bundle.ts'
import type { ModelInfo } from '../registry/components.ts'

/** Variant names → the file names exports use for them. */
export const ONNX_VARIANTS: Record<string, string> = {
  fp32: 'model.onnx',
  fp16: 'model_fp16.onnx',
  q4: 'model_q4.onnx',
  q4f16: 'model_q4f16.onnx',
  int8: 'model_int8.onnx',
  uint8: 'model_uint8.onnx',
  quantized: 'model_quantized.onnx',
  bnb4: 'model_bnb4.onnx'
}

export class ExportError extends AgentError {
  constructor (message: string) {
    super(message, 'invalid_model', 422)
    this.name = 'ExportError'
  }
}

const ConfigSchema = z.object({
  model_type: z.string().max(64).optional(),
  architectures: z.array(z.string().max(128)).max(8).optional(),
  num_hidden_layers: z.number().int().positive().optional(),
  hidden_size: z.number().int().positive().optional(),
  num_attention_heads: z.number().int().positive().optional(),
  num_key_value_heads: z.number().int().positive().optional(),
  head_dim: z.number().int().positive().nullish(),
  vocab_size: z.number().int().positive().optional(),
  max_position_embeddings: z.number().int().positive().optional(),
  bos_token_id: z.union([z.number().int(), z.null()]).optional(),
  eos_token_id: z.union([z.number().int(), z.array(z.number().int()).max(64), z.null()]).optional()
}).passthrough()

const GenerationConfigSchema = z.object({
  bos_token_id: z.union([z.number().int(), z.null()]).optional(),
  eos_token_id: z.union([z.number().int(), z.array(z.number().int()).max(64), z.null()]).optional()
}).passthrough()

async function readJson (path: string, what: string): Promise<unknown> {
  if (!existsSync(path)) return undefined
  if (statSync(path).size > MAX_BUNDLE_BYTES) throw new ExportError(`${what} ${path} is larger than ${MAX_BUNDLE_BYTES} bytes`)
  try {
    return JSON.parse(await readFile(path, 'utf8'))
  } catch (err) {
    throw new TokenizerError('invalid_tokenizer', `${what} ${path} is not JSON: ${(err as Error).message}`, { cause: err })
  }
}

const ids = (v: number | number[] | null | undefined): number[] => v == null ? [] : Array.isArray(v) ? v : [v]

export interface HfExport { modelPath: string, variant: string, bundle: TokenizerBundle, info: Omit<ModelInfo, 'source' | 'digest'> }

/** The export's model file for `variant` (default fp32, else the first present), its tokenizer bundle and model facts. */
export async function readHfExport (dir: string, opts: { variant?: string, file?: string } = {}): Promise<HfExport> {
  const onnxDir = existsSync(join(dir, 'onnx')) ? join(dir, 'onnx') : dir
  const present = readdirSync(onnxDir).filter(f => f.endsWith('.onnx'))
  if (present.length === 0) throw new ExportError(`${dir} holds no .onnx file (expected onnx/model.onnx and friends)`)
  let file: string | undefined
  let variant: string
  if (opts.file != null) {
    file = present.find(f => f === opts.file || join('onnx', f) === opts.file)
    if (file == null) throw new ExportError(`${dir} has no ${opts.file}; present: ${present.join(', ')}`)
    variant = Object.entries(ONNX_VARIANTS).find(([, f]) => f === file)?.[0] ?? file
  } else if (opts.variant != null) {
    const wanted = ONNX_VARIANTS[opts.variant.toLowerCase()]
    if (wanted == null || !present.includes(wanted)) {
      const available = Object.entries(ONNX_VARIANTS).filter(([, f]) => present.includes(f)).map(([v]) => v)
      throw new ExportError(`${dir} has no variant "${opts.variant}"; available: ${available.join(', ') || present.join(', ')}`)
    }
    file = wanted
    variant = opts.variant.toLowerCase()
  } else {
    const pick = Object.entries(ONNX_VARIANTS).find(([, f]) => present.includes(f))
    file = pick?.[1] ?? present[0]
    variant = pick?.[0] ?? file
  }
  const config = ConfigSchema.safeParse(await readJson(join(dir, 'config.json'), 'config') ?? {})
  if (!config.success) throw new ExportError(`${dir}/config.json: ${config.error.issues.map(i => `${i.path.join('.')}: ${i.message}`).join('; ')}`)
  const gen = GenerationConfigSchema.safeParse(await readJson(join(dir, 'generation_config.json'), 'generation config') ?? {})
  if (!gen.success) throw new ExportError(`${dir}/generation_config.json: ${gen.error.issues.map(i => `${i.path.join('.')}: ${i.message}`).join('; ')}`)
  const tokenizer = await readJson(join(dir, 'tokenizer.json'), 'tokenizer')
  if (tokenizer == null || typeof tokenizer !== 'object') throw new TokenizerError('invalid_tokenizer', `${dir} has no tokenizer.json`)
  const tokConfig = (await readJson(join(dir, 'tokenizer_config.json'), 'tokenizer config') ?? {}) as Record<string, unknown>
  const templateFile = join(dir, 'chat_template.jinja')
  const chatTemplate = existsSync(templateFile) ? await readFile(templateFile, 'utf8') : typeof tokConfig.chat_template === 'string' ? tokConfig.chat_template : null
  const c = config.data
  const vocabOf = (t: unknown): Map<string, number> => {
    const m = new Map<string, number>()
    const model = (t as { model?: { vocab?: unknown } }).model
    if (model?.vocab != null && typeof model.vocab === 'object' && !Array.isArray(model.vocab)) for (const [k, v] of Object.entries(model.vocab as Record<string, number>)) m.set(k, v)
    for (const a of (t as { added_tokens?: Array<{ id: number, content: string }> }).added_tokens ?? []) m.set(a.content, a.id)
    return m
  }
  const vocab = vocabOf(tokenizer)
  const tokenId = (v: unknown): number | undefined => {
    const s = typeof v === 'string' ? v : (v as { content?: string } | null)?.content
    return s != null ? vocab.get(s) : undefined
  }
  const eosIds = [...new Set([...ids(gen.data.eos_token_id), ...ids(c.eos_token_id), ...(tokenId(tokConfig.eos_token) != null ? [tokenId(tokConfig.eos_token) as number] : [])])]
  const bosId = gen.data.bos_token_id ?? c.bos_token_id ?? tokenId(tokConfig.bos_token) ?? null
  const bundle: TokenizerBundle = {
    format: BUNDLE_FORMAT,
    tokenizer: tokenizer as Record<string, unknown>,
    config: tokConfig,
    bosId,
    eosIds,
    addBos: tokConfig.add_bos_token === true,
    chatTemplate
  }
  const checked = new HfTextTokenizer(bundle)
  const layers = c.num_hidden_layers
  return {
    modelPath: join(onnxDir, file),
    variant,
    bundle,
    info: {
      format: 'onnx',
      architecture: c.model_type ?? c.architectures?.[0] ?? 'unknown',
      parameters: 0,
      quantization: variant,
      contextLength: c.max_position_embeddings ?? 2048,
      vocabSize: c.vocab_size ?? checked.vocabSize,
      ...(layers != null ? { layers } : {}),
      ...(c.hidden_size != null ? { hidden: c.hidden_size } : {}),
      ...(c.num_attention_heads != null ? { heads: c.num_attention_heads } : {}),
      ...(c.num_key_value_heads != null ? { kvHeads: c.num_key_value_heads } : {}),
      chatTemplate: checked.hasChatTemplate
    }
  }
}
