/**
 * GGUF → the files Blockmesh serves: an ONNX decoder (optimum IO layout) and a tokenizer bundle, plus
 * what the model is. Cached by the GGUF's SHA-256 and the converter version under
 * `<cacheDir>/converted/<sha256>-c<version>-<weights>/`, so a second conversion of the same file is
 * a hash and a look-up.
 */
import { createHash } from 'node:crypto'
import { createReadStream, existsSync } from 'node:fs'
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { GGMLFileQuantizationType } from '@huggingface/gguf'
import { encodeModel } from '../onnx.ts'
import { openGguf } from './file.ts'
import type { GgufFile } from './file.ts'
import { decoderConfig, parameterCount } from './arch.ts'
import type { DecoderConfig } from './arch.ts'
import { CONVERTER_VERSION, buildDecoder } from './decoder-graph.ts'
import { tokenizerFromGguf } from './vocab.ts'
import { BUNDLE_FORMAT, HfTextTokenizer } from '../tokenizers/bundle.ts'
import type { TokenizerBundle } from '../tokenizers/bundle.ts'
import type { ModelInfo } from '../../registry/components.ts'

export interface ConvertedModel {
  onnxPath: string
  onnxMd5: string
  onnxBytes: number
  tokenizerPath: string
  tokenizerMd5: string
  info: ModelInfo
  config: DecoderConfig
  /** true when the cache already had it */
  cached: boolean
}

export type ConvertPhase = 'hashing' | 'reading' | 'building' | 'writing'
export interface ConvertOptions {
  cacheDir: string
  weights?: 'f32' | 'q4' | 'q8' | 'int8'
  /** what the user named as the source (recorded in the model info) */
  source?: string
  onProgress?: (p: { phase: ConvertPhase, done: number, total: number }) => void
  signal?: AbortSignal
}

async function sha256File (path: string, signal?: AbortSignal): Promise<string> {
  const h = createHash('sha256')
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20, signal })) h.update(chunk as Buffer)
  return h.digest('hex')
}

function md5 (bytes: Uint8Array | string): string {
  return createHash('md5').update(bytes).digest('hex')
}

function quantizationName (file: GgufFile): string {
  const t = file.metadata['general.file_type']
  const name = typeof t === 'number' ? (GGMLFileQuantizationType as unknown as Record<number, string>)[t] : undefined
  return name ?? 'unknown'
}

/** Converts (or finds in the cache) the GGUF at `path`. Throws GgufError / TokenizerError with the reason. */
export async function convertGguf (path: string, opts: ConvertOptions): Promise<ConvertedModel> {
  const weights = opts.weights ?? 'q8'
  const progress = opts.onProgress ?? (() => {})
  progress({ phase: 'hashing', done: 0, total: 1 })
  const file = await openGguf(path)
  try {
    const config = decoderConfig(file)
    const sha = await sha256File(path, opts.signal)
    progress({ phase: 'hashing', done: 1, total: 1 })
    const dir = join(opts.cacheDir, 'converted', `${sha.slice(0, 32)}-c${CONVERTER_VERSION}-${weights}`)
    const infoPath = join(dir, 'info.json')
    const onnxPath = join(dir, 'model.onnx')
    const tokenizerPath = join(dir, 'tokenizer.json')
    if (existsSync(infoPath) && existsSync(onnxPath) && existsSync(tokenizerPath)) {
      try {
        const saved = JSON.parse(await readFile(infoPath, 'utf8')) as Omit<ConvertedModel, 'cached' | 'onnxPath' | 'tokenizerPath'>
        return { ...saved, info: { ...saved.info, source: opts.source ?? saved.info.source }, onnxPath, tokenizerPath, cached: true }
      } catch { /* rebuild */ }
    }

    // the tokenizer first: a vocabulary or template that cannot work fails before the long part
    const tok = tokenizerFromGguf(file)
    const bundle: TokenizerBundle = {
      format: BUNDLE_FORMAT,
      tokenizer: tok.tokenizer,
      config: tok.config,
      bosId: tok.bosId,
      eosIds: tok.eosIds,
      addBos: tok.config.add_bos_token,
      chatTemplate: tok.chatTemplate
    }
    const checked = new HfTextTokenizer(bundle)

    const raw = (name: string): { type: number, shape: number[], data: Uint8Array } | undefined => {
      const t = file.tensors.get(name)
      if (t == null) return undefined
      opts.signal?.throwIfAborted()
      return { type: t.type, shape: t.shape, data: file.read(name) }
    }
    const info: ModelInfo = {
      format: 'gguf',
      architecture: config.architecture,
      name: typeof file.metadata['general.name'] === 'string' ? file.metadata['general.name'] : undefined,
      parameters: parameterCount(file),
      quantization: quantizationName(file),
      contextLength: config.contextLength,
      vocabSize: config.vocab,
      layers: config.layers,
      hidden: config.hidden,
      heads: config.heads,
      kvHeads: config.kvHeads,
      chatTemplate: checked.hasChatTemplate,
      source: opts.source ?? path,
      digest: `sha256:${sha}`,
      converter: `gguf-c${CONVERTER_VERSION}-${weights}`
    }
    const model = buildDecoder(config, raw, {
      weights,
      metadata: { 'blockmesh.source_sha256': sha, 'blockmesh.architecture': config.architecture },
      onProgress: (done, total) => { progress({ phase: 'building', done, total }) }
    })
    progress({ phase: 'writing', done: 0, total: 1 })
    const bytes = encodeModel(model)
    const bundleText = JSON.stringify(bundle)
    const tmp = `${dir}.tmp-${process.pid}`
    await rm(tmp, { recursive: true, force: true })
    await mkdir(tmp, { recursive: true })
    const saved = { onnxMd5: md5(bytes), onnxBytes: bytes.length, tokenizerMd5: md5(bundleText), info, config }
    await writeFile(join(tmp, 'model.onnx'), bytes)
    await writeFile(join(tmp, 'tokenizer.json'), bundleText)
    await writeFile(join(tmp, 'info.json'), JSON.stringify(saved, null, 2) + '\n')
    await rm(dir, { recursive: true, force: true })
    await mkdir(join(opts.cacheDir, 'converted'), { recursive: true })
    await rename(tmp, dir)
    progress({ phase: 'writing', done: 1, total: 1 })
    return { ...saved, onnxPath, tokenizerPath, cached: false }
  } finally {
    file.close()
  }
}
