/**
 * `blockmesh model add SOURCE`: a model from wherever the operator has it, turned into a component the
 * mesh can deploy or split. SOURCE is a local `.gguf` file, a directory with a Hugging Face ONNX export,
 * `hf://ORG/REPO[@REV][/PATH]`, `ollama://NAME[:TAG]` or an `http(s)://` URL of a GGUF. GGUF models are
 * converted to ONNX (cached by digest); the tokenizer, stop ids and chat template go in a tokenizer bundle.
 */
import { createHash } from 'node:crypto'
import { closeSync, existsSync, openSync, readdirSync, readSync, statSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'
import { AgentError, ValidationError } from '../errors.ts'
import { convertGguf } from './gguf/convert.ts'
import type { ConvertPhase } from './gguf/convert.ts'
import { GGUF_MAGIC } from './gguf/file.ts'
import { readHfExport } from './hf-export.ts'
import { resolveHubModel } from './hub.ts'
import { resolveOllamaModel } from './ollama.ts'
import { materializeModel, md5File } from './source.ts'
import { slugOf } from './names.ts'
import type { ComponentSpecInput, ModelInfo } from '../registry/components.ts'

/** The context a model gets by default when its own is longer (KV caches grow with it); --context-length overrides. */
export const DEFAULT_CONTEXT_CAP = 8192

export interface ImportOptions {
  /** where converted models, downloads and tokenizer bundles go (the agent's models directory) */
  cacheDir: string
  maxBytes: number
  name?: string
  /** a file of a hub repo / export directory */
  file?: string
  /** a quantization (GGUF on the hub) or dtype (ONNX export) */
  variant?: string
  weights?: 'f32' | 'q4' | 'q8' | 'int8'
  contextLength?: number
  onProgress?: (p: ImportProgress) => void
  signal?: AbortSignal
}

export type ImportProgress =
  | { phase: 'download', file: string, receivedBytes: number, totalBytes: number | null }
  | { phase: ConvertPhase, done: number, total: number }

export interface Imported { spec: ComponentSpecInput, cached: boolean }

function isGguf (path: string): boolean {
  const fd = openSync(path, 'r')
  try {
    const b = Buffer.alloc(4)
    return readSync(fd, b, 0, 4, 0) === 4 && b.readUInt32LE(0) === GGUF_MAGIC
  } finally {
    closeSync(fd)
  }
}

function md5 (text: string): string {
  return createHash('md5').update(text).digest('hex')
}

function componentOf (o: { name: string, info: ModelInfo, onnxPath: string, onnxMd5: string, onnxBytes: number, tokenizerPath: string, tokenizerMd5: string, contextLength?: number }): ComponentSpecInput {
  const ctx = o.contextLength ?? Math.min(o.info.contextLength, DEFAULT_CONTEXT_CAP)
  return {
    name: slugOf(o.name),
    // the same file under another conversion mode or context is another component (q8 and the model's own context: no suffix)
    version: [o.info.digest.replace(/^[a-z0-9]+:/, '').slice(0, 12), /-(q4|int8|f32)$/.exec(o.info.converter ?? '')?.[1], o.contextLength != null ? `ctx${o.contextLength}` : undefined].filter(Boolean).join('-'),
    runtime: 'onnx',
    description: `${o.info.name ?? o.info.architecture} (${o.info.architecture}, ${(o.info.parameters / 1e6).toFixed(0)}M parameters, ${o.info.quantization}) from ${o.info.source}`,
    model: { url: o.onnxPath, md5: o.onnxMd5, sizeBytes: o.onnxBytes },
    tokenizer: { type: 'bundle', url: o.tokenizerPath, md5: o.tokenizerMd5 },
    contextLength: ctx,
    defaults: { maxTokens: 512, temperature: 0.7, topP: 0.95 },
    resources: { ram: Math.ceil(o.onnxBytes * 1.5) },
    modelInfo: o.info
  }
}

async function fromGguf (path: string, source: string, defaultName: string, opts: ImportOptions): Promise<Imported> {
  const c = await convertGguf(path, {
    cacheDir: opts.cacheDir,
    weights: opts.weights,
    source,
    signal: opts.signal,
    onProgress: p => { opts.onProgress?.(p) }
  })
  return {
    spec: componentOf({ name: opts.name ?? defaultName, ...c, contextLength: opts.contextLength }),
    cached: c.cached
  }
}

async function fromExportDir (dir: string, source: string, digest: string, defaultName: string, opts: ImportOptions): Promise<Imported> {
  const e = await readHfExport(dir, { variant: opts.variant, file: opts.file })
  const bundleText = JSON.stringify(e.bundle)
  const bundleMd5 = md5(bundleText)
  const bundleDir = join(opts.cacheDir, 'tokenizers')
  await mkdir(bundleDir, { recursive: true })
  const tokenizerPath = join(bundleDir, `${bundleMd5}.json`)
  if (!existsSync(tokenizerPath)) await writeFile(tokenizerPath, bundleText)
  const onnxMd5 = await md5File(e.modelPath, opts.signal)
  const info: ModelInfo = { ...e.info, source, digest: digest !== '' ? digest : `md5:${onnxMd5}` }
  // the model's external data (model.onnx_data, model.onnx_data_1…) travels with it: hosts elsewhere fetch it too
  const base = basename(e.modelPath)
  const externalData = []
  for (const name of readdirSync(dirname(e.modelPath)).filter(f => f.startsWith(`${base}_data`)).sort()) {
    const path = join(dirname(e.modelPath), name)
    externalData.push({ name, url: path, md5: await md5File(path, opts.signal), sizeBytes: statSync(path).size })
  }
  const spec = componentOf({ name: opts.name ?? defaultName, info, onnxPath: e.modelPath, onnxMd5, onnxBytes: statSync(e.modelPath).size, tokenizerPath, tokenizerMd5: bundleMd5, contextLength: opts.contextLength })
  if (externalData.length > 0 && spec.model != null) spec.model = { ...spec.model, externalData }
  return { spec, cached: false }
}

/** Onboards SOURCE as a component spec (not yet registered). Throws AgentError subclasses with the reason. */
export async function importModel (source: string, opts: ImportOptions): Promise<Imported> {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(source)?.[1]?.toLowerCase()
  const download = (file: string) => (p: { receivedBytes: number, totalBytes: number | null }) => { opts.onProgress?.({ phase: 'download', file, ...p }) }
  if (scheme === 'hf') {
    const m = await resolveHubModel(source, {
      destDir: join(opts.cacheDir, 'hub'),
      variant: opts.variant,
      file: opts.file,
      maxBytes: opts.maxBytes,
      signal: opts.signal,
      onProgress: p => { opts.onProgress?.({ phase: 'download', ...p }) }
    })
    const name = m.repo.split('/').pop() as string
    if (m.kind === 'gguf') return await fromGguf(m.files.model, source, name, opts)
    return await fromExportDir(m.dir, source, `sha256:${m.sha256.model}`, name, { ...opts, file: m.modelFile })
  }
  if (scheme === 'ollama') {
    const m = await resolveOllamaModel(source, { signal: opts.signal })
    return await fromGguf(m.path, source, m.name, opts)
  }
  if (scheme === 'http' || scheme === 'https') {
    const file = await materializeModel({ url: source }, { cacheDir: join(opts.cacheDir, 'downloads'), maxBytes: opts.maxBytes, signal: opts.signal, onProgress: download(source) })
    if (!isGguf(file.path)) throw new ValidationError(`${source} is not a GGUF file; for an ONNX model register a component with its URL (blockmesh component create) or give a Hugging Face export directory`)
    const base = new URL(source).pathname.split('/').pop() ?? 'model'
    return await fromGguf(file.path, source, base.replace(/\.gguf$/i, ''), opts)
  }
  if (scheme !== undefined && scheme !== 'file') throw new ValidationError(`model source ${source}: scheme "${scheme}" is not supported (a path, hf://, ollama://, http(s)://)`)
  const path = resolve(scheme === 'file' ? new URL(source).pathname : source)
  if (!existsSync(path)) throw new AgentError(`model source ${path} does not exist`, 'not_found', 404)
  const st = statSync(path)
  const base = path.replace(/\/+$/, '').split('/').pop() as string
  if (st.isDirectory()) return await fromExportDir(path, source, '', base, opts)
  if (st.size > opts.maxBytes) throw new ValidationError(`model file ${path} is ${st.size} bytes: the limit is ${opts.maxBytes}`)
  if (isGguf(path)) return await fromGguf(path, source, base.replace(/\.gguf$/i, ''), opts)
  throw new ValidationError(`${path} is neither a GGUF file nor a directory with a Hugging Face ONNX export`)
}
