/**
 * Which files of a hub repo make the model (pure: a commit's listing in, a choice out): one GGUF quantization
 * (with its shards) or one ONNX variant (with its external data and the tokenizer/config side files), by
 * the variant or file asked for, else by the preference order below, else the smallest.
 */
import { posix } from 'node:path'
import { ValidationError } from '../errors.ts'
import { ModelSourceError } from './source-error.ts'

/** GGUF quantizations tried, in order, when no variant is asked for; then the smallest file. */
export const GGUF_PREFERENCE: readonly string[] = ['Q4_K_M', 'Q4_0', 'Q4_1', 'Q8_0']
/** ONNX variants (transformers.js dtypes) tried, in order, when none is asked for. */
export const ONNX_PREFERENCE: readonly string[] = ['fp32', 'fp16', 'quantized', 'int8', 'uint8', 'q4f16', 'q4', 'bnb4']
/** Files fetched next to an ONNX model when the repo has them. */
export const ONNX_SIDE_FILES: readonly string[] = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'chat_template.jinja']

/** One file of a commit. `sha256` is known for LFS files (the tree API's lfs.oid); `size` may be unknown (null). */
export interface HubFile { path: string, size: number | null, sha256?: string }
export interface HubListing { repo: string, revision: string, commit: string, files: HubFile[] }
/** What resolveHubModel fetches for a listing: the model file, its companions (shards, external data, side files). */
export interface HubPick { kind: 'gguf' | 'onnx', variant: string, model: HubFile, extras: HubFile[] }

const SHARD = /-(\d{5})-of-(\d{5})\.gguf$/i
const QUANT = /(?:^|[-._])(I?Q\d+(?:_[A-Z0-9]+)*|TQ\d_\d|MXFP4(?:_[A-Z0-9]+)*|BF16|F16|F32|FP16|FP32)(?=$|[-._])/gi

/** The quantization a GGUF file name carries ('Q4_K_M', 'IQ3_XS', 'F16', …), upper case, or undefined. */
export function ggufQuant (path: string): string | undefined {
  const base = posix.basename(path).replace(SHARD, '').replace(/\.gguf$/i, '')
  return [...base.matchAll(QUANT)].at(-1)?.[1].toUpperCase()
}

const ONNX_NAME = /^(.+?)(?:_(fp16|q4f16|q4|int8|uint8|quantized|bnb4))?\.onnx$/
const ONNX_ALIASES: Record<string, string[]> = {
  fp32: ['fp32'], float32: ['fp32'], full: ['fp32'], fp16: ['fp16'], float16: ['fp16'], half: ['fp16'],
  int8: ['int8', 'quantized'], quantized: ['quantized', 'int8'], q8: ['quantized', 'int8'], uint8: ['uint8'], q4: ['q4'], q4f16: ['q4f16'], bnb4: ['bnb4']
}
const ONNX_BASES = ['model', 'decoder_model_merged']

interface Group { key: string, variant: string, files: HubFile[], size: number }

function sizeOf (files: HubFile[]): number {
  return files.reduce((n, f) => n + (f.size ?? Infinity), 0)
}

function bySizeThenPath (a: Group, b: Group): number {
  return a.size - b.size || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)
}

function noVariant (what: string, variant: string, groups: Group[]): ModelSourceError {
  const available = [...new Set(groups.map(g => g.variant))]
  return new ModelSourceError('not_found', `${what} has no variant "${variant}": available ${available.join(', ')}`, { variant, available })
}

function ggufGroups (files: HubFile[]): Group[] {
  const groups = new Map<string, HubFile[]>()
  for (const f of files) {
    if (!/\.gguf$/i.test(f.path) || /mmproj/i.test(posix.basename(f.path))) continue
    const key = f.path.replace(SHARD, '.gguf')
    groups.set(key, [...(groups.get(key) ?? []), f])
  }
  return [...groups].map(([key, fs]) => {
    fs.sort((a, b) => a.path < b.path ? -1 : 1)
    return { key, variant: ggufQuant(key) ?? posix.basename(key, '.gguf'), files: fs, size: sizeOf(fs) }
  })
}

function pickGguf (what: string, groups: Group[], variant: string | undefined, file: string | undefined): Group {
  if (file !== undefined) {
    const g = groups.find(g => g.files.some(f => f.path === file)) ?? groups.find(g => g.files.some(f => posix.basename(f.path) === file))
    if (g === undefined) throw new ModelSourceError('not_found', `${what} has no GGUF file "${file}": it has ${groups.flatMap(g => g.files.map(f => f.path)).join(', ')}`, { file })
    return g
  }
  if (variant !== undefined) {
    const v = variant.toUpperCase()
    let hits = groups.filter(g => g.variant === v)
    if (hits.length === 0) hits = groups.filter(g => posix.basename(g.key).toUpperCase().includes(v))
    if (hits.length === 0) throw noVariant(what, variant, [...groups].sort(bySizeThenPath))
    if (hits.length > 1 && new Set(hits.map(g => g.variant)).size > 1) {
      throw new ModelSourceError('not_found', `${what}: variant "${variant}" is ambiguous: it matches ${hits.map(g => g.variant).join(', ')}`, { variant, matches: hits.map(g => g.variant) })
    }
    return hits.sort(bySizeThenPath)[0]
  }
  for (const q of GGUF_PREFERENCE) {
    const hit = groups.filter(g => g.variant === q).sort(bySizeThenPath)[0]
    if (hit !== undefined) return hit
  }
  return [...groups].sort(bySizeThenPath)[0]
}

function onnxGroups (files: HubFile[]): Array<{ dir: string, base: string, variants: Group[] }> {
  const models = new Map<string, { dir: string, base: string, variants: Group[] }>()
  for (const f of files) {
    const m = ONNX_NAME.exec(posix.basename(f.path))
    if (m === null) continue
    const dir = posix.dirname(f.path)
    const key = `${dir}/${m[1]}`
    const entry = models.get(key) ?? { dir, base: m[1], variants: [] }
    entry.variants.push({ key: f.path, variant: m[2] ?? 'fp32', files: [f], size: sizeOf([f]) })
    models.set(key, entry)
  }
  return [...models.values()]
}

function pickOnnx (what: string, files: HubFile[], variant: string | undefined, file: string | undefined): Group {
  const models = onnxGroups(files)
  if (file !== undefined) {
    for (const m of models) {
      const g = m.variants.find(v => v.key === file || posix.basename(v.key) === file)
      if (g !== undefined) return g
    }
    throw new ModelSourceError('not_found', `${what} has no ONNX file "${file}"`, { file })
  }
  const rank = (m: { dir: string, base: string }): number => {
    const b = ONNX_BASES.indexOf(m.base)
    return (b < 0 ? ONNX_BASES.length : b) * 4 + (posix.basename(m.dir) === 'onnx' ? 0 : m.dir === '.' ? 1 : 2)
  }
  models.sort((a, b) => rank(a) - rank(b))
  const model = models[0]
  if (models.length > 1 && rank(models[1]) === rank(model)) {
    throw new ModelSourceError('not_found', `${what} holds several ONNX models (${models.map(m => posix.join(m.dir, m.base)).join(', ')}): name one with hf://ORG/REPO/PATH or the file option`)
  }
  const wanted = variant === undefined ? ONNX_PREFERENCE : ONNX_ALIASES[variant.toLowerCase()]
  for (const v of wanted ?? []) {
    const hit = model.variants.find(g => g.variant === v)
    if (hit !== undefined) return hit
  }
  throw noVariant(what, variant ?? 'fp32', model.variants)
}

function escapeRe (s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

/** Decides what resolveHubModel fetches from a commit's files (see resolveHubModel). */
export function pickHubFiles (listing: HubListing, choice: { path?: string, variant?: string, file?: string } = {}): HubPick {
  const what = `${listing.repo}@${listing.revision}`
  let scope = listing.files
  let file = choice.file
  if (choice.path !== undefined) {
    const exact = listing.files.find(f => f.path === choice.path)
    if (exact !== undefined) {
      if (!/\.(gguf|onnx)$/i.test(exact.path)) throw new ValidationError(`${what}: ${exact.path} is neither a .gguf nor an .onnx file`)
      file = exact.path
    } else {
      scope = listing.files.filter(f => f.path.startsWith(`${choice.path}/`))
      if (scope.length === 0) throw new ModelSourceError('not_found', `${what} has no file or folder "${choice.path}"`, { path: choice.path })
    }
  }
  const gguf = ggufGroups(scope)
  const isGguf = file !== undefined ? /\.gguf$/i.test(file) : gguf.length > 0
  if (isGguf) {
    const g = pickGguf(what, gguf, choice.variant, file)
    return { kind: 'gguf', variant: g.variant, model: g.files[0], extras: g.files.slice(1) }
  }
  if (!scope.some(f => ONNX_NAME.test(posix.basename(f.path)))) {
    const names = scope.map(f => f.path)
    throw new ModelSourceError('not_found', `${what} has no .gguf or .onnx model: it holds ${names.slice(0, 20).join(', ')}${names.length > 20 ? ', …' : ''}`, { files: names.slice(0, 100) })
  }
  const g = pickOnnx(what, scope, choice.variant, file)
  const model = g.files[0]
  const dir = posix.dirname(model.path)
  const data = new RegExp(`^${escapeRe(posix.basename(model.path))}(?:_data|\\.data)(?:_\\d+)?$`)
  const extras = listing.files.filter(f => posix.dirname(f.path) === dir && data.test(posix.basename(f.path)))
  const sideDir = posix.basename(dir) === 'onnx' ? posix.dirname(dir) : dir
  for (const name of ONNX_SIDE_FILES) {
    const side = listing.files.find(f => f.path === posix.join(sideDir, name)) ?? listing.files.find(f => f.path === name)
    if (side !== undefined) extras.push(side)
  }
  return { kind: 'onnx', variant: g.variant, model, extras }
}
