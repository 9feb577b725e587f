/**
 * Models already pulled by Ollama (`ollama://NAME[:TAG]`), read in place from its store:
 * `<models>/manifests/<host>/<namespace>/<model>/<tag>` is an OCI-style JSON manifest whose layers live at
 * `<models>/blobs/sha256-<hex>`; the layer of media type `application/vnd.ollama.image.model` is a GGUF file.
 * The store is `modelsDir`, else env OLLAMA_MODELS, else ~/.ollama/models. Nothing is copied: the GGUF is
 * checked (size as the manifest says, GGUF magic, SHA-256 unless `verify: false`) and its path returned, with
 * the template (Go template text, raw), system prompt and params the manifest carries.
 */
import { open, readdir, readFile, stat } from 'node:fs/promises'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { z } from 'zod'
import { ValidationError } from '../errors.ts'
import { ModelSourceError, formatBytes, hashFile, statOrNull } from './source.ts'

export const OLLAMA_REGISTRY = 'registry.ollama.ai'
export const OLLAMA_LIBRARY = 'library'
/** Bound on a manifest, and on each small layer (template, system, params). */
export const MAX_MANIFEST_BYTES = 1024 * 1024
export const GGUF_MAGIC = 'GGUF'

export const MEDIA_MODEL = 'application/vnd.ollama.image.model'
export const MEDIA_TEMPLATE = 'application/vnd.ollama.image.template'
export const MEDIA_PARAMS = 'application/vnd.ollama.image.params'
export const MEDIA_SYSTEM = 'application/vnd.ollama.image.system'
export const MEDIA_PROJECTOR = 'application/vnd.ollama.image.projector'

export interface OllamaName { host: string, namespace: string, model: string, tag: string }

export interface OllamaOptions {
  /** the store; default env OLLAMA_MODELS, else ~/.ollama/models */
  modelsDir?: string
  /** stream the GGUF (and small layers) through SHA-256 and compare with their digests; default true */
  verify?: boolean
  signal?: AbortSignal
}

export interface OllamaModel {
  /** as Ollama shows it: 'llama3.2:latest', 'user/model:tag', 'host/ns/model:tag' */
  name: string
  manifestPath: string
  /** the GGUF blob, in place */
  path: string
  /** 'sha256:<hex>' from the manifest */
  digest: string
  sizeBytes: number
  /** whether the GGUF's SHA-256 was checked against its digest */
  verified: boolean
  /** the chat template, Go template syntax, raw (for information: it is not a Jinja template) */
  template?: string
  system?: string
  params?: Record<string, unknown>
  /** a vision projector blob, when the model has one */
  projectorPath?: string
}

const Layer = z.object({
  mediaType: z.string(),
  digest: z.string().regex(/^sha256:[0-9a-f]{64}$/, 'expected sha256:<64 lowercase hex digits>'),
  size: z.number().int().nonnegative()
})
type Layer = z.infer<typeof Layer>
const Manifest = z.object({ schemaVersion: z.literal(2), mediaType: z.string().optional(), config: Layer.optional(), layers: z.array(Layer).min(1) })

const PART = /^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$/
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/
const HOST = /^[A-Za-z0-9][A-Za-z0-9.-]*(:\d{1,5})?$/

/** Parses `ollama://NAME[:TAG]`: NAME is 'model', 'namespace/model' or 'host/namespace/model'; TAG defaults to 'latest'. */
export function parseOllamaUri (uri: string): OllamaName {
  const m = /^ollama:\/\/(.+)$/i.exec(uri)
  if (m === null) throw new ValidationError(`"${uri}" is not an Ollama model: write ollama://NAME[:TAG], e.g. ollama://llama3.2:1b`)
  const parts = m[1].split('/')
  if (parts.length > 3) throw new ValidationError(`${uri}: an Ollama name has at most three parts, host/namespace/model`)
  const last = parts.pop() ?? ''
  const colon = last.indexOf(':')
  const model = colon < 0 ? last : last.slice(0, colon)
  const tag = colon < 0 ? 'latest' : last.slice(colon + 1)
  const namespace = parts.pop() ?? OLLAMA_LIBRARY
  const host = parts.pop() ?? OLLAMA_REGISTRY
  if (!PART.test(model)) throw new ValidationError(`${uri}: "${model}" is not an Ollama model name`)
  if (!TAG.test(tag)) throw new ValidationError(`${uri}: "${tag}" is not an Ollama tag`)
  if (!PART.test(namespace)) throw new ValidationError(`${uri}: "${namespace}" is not an Ollama namespace`)
  if (!HOST.test(host)) throw new ValidationError(`${uri}: "${host}" is not a registry host`)
  return { host, namespace, model, tag }
}

/** The name as Ollama prints it (default host and 'library' namespace left out). */
export function displayOllamaName (n: OllamaName): string {
  const prefix = n.host !== OLLAMA_REGISTRY ? `${n.host}/${n.namespace}/` : n.namespace !== OLLAMA_LIBRARY ? `${n.namespace}/` : ''
  return `${prefix}${n.model}:${n.tag}`
}

/** The store to read: `modelsDir`, else env OLLAMA_MODELS, else ~/.ollama/models. */
export function ollamaModelsDir (modelsDir?: string): string {
  const env = process.env.OLLAMA_MODELS
  return modelsDir ?? (env !== undefined && env !== '' ? env : join(homedir(), '.ollama', 'models'))
}


async function listDir (path: string): Promise<Array<{ name: string, dir: boolean }>> {
  try {
    return (await readdir(path, { withFileTypes: true })).map(e => ({ name: e.name, dir: e.isDirectory() })).sort((a, b) => a.name < b.name ? -1 : 1)
  } catch {
    return []
  }
}

/** Up to `limit` models of the store, as Ollama names them. */
async function storeModels (root: string, limit = 30): Promise<string[]> {
  const names: string[] = []
  for (const host of await listDir(join(root, 'manifests'))) {
    for (const ns of host.dir ? await listDir(join(root, 'manifests', host.name)) : []) {
      for (const model of ns.dir ? await listDir(join(root, 'manifests', host.name, ns.name)) : []) {
        for (const tag of model.dir ? await listDir(join(root, 'manifests', host.name, ns.name, model.name)) : []) {
          if (!tag.dir && names.length < limit) names.push(displayOllamaName({ host: host.name, namespace: ns.name, model: model.name, tag: tag.name }))
        }
      }
    }
  }
  return names
}

async function noSuchModel (root: string, name: OllamaName, modelDir: string): Promise<ModelSourceError> {
  const shown = displayOllamaName(name)
  const tags = (await listDir(modelDir)).filter(e => !e.dir).map(e => e.name)
  if (tags.length > 0) {
    return new ModelSourceError('not_found', `Ollama model ${shown} is not in ${root}: the tags present for ${shown.slice(0, shown.lastIndexOf(':'))} are ${tags.join(', ')}`,
      { name: shown, tags })
  }
  const models = await storeModels(root)
  return new ModelSourceError('not_found',
    `Ollama model ${shown} is not in ${root} (pull it with: ollama pull ${shown})${models.length > 0 ? `: the store holds ${models.join(', ')}` : ': the store holds no models'}`,
    { name: shown, models })
}

function blobPath (root: string, digest: string): string {
  return join(root, 'blobs', digest.replace(':', '-'))
}

/** A layer's blob: present, a file, of the manifest's size (else a clear error); returns its path. */
async function checkBlob (root: string, layer: Layer, shown: string): Promise<string> {
  const path = blobPath(root, layer.digest)
  const st = await statOrNull(path)
  if (st === null || !st.isFile()) {
    throw new ModelSourceError('not_found', `Ollama model ${shown}: the blob ${layer.digest} (${layer.mediaType}) is missing from ${join(root, 'blobs')}: pull the model again`,
      { name: shown, digest: layer.digest, path })
  }
  if (st.size !== layer.size) {
    throw new ModelSourceError('corrupt', `Ollama model ${shown}: the blob ${path} is ${st.size} bytes but the manifest says ${layer.size}`,
      { name: shown, path, expected: layer.size, actual: st.size })
  }
  return path
}

async function verifyBlob (path: string, layer: Layer, shown: string, signal?: AbortSignal): Promise<void> {
  const actual = await hashFile(path, 'sha256', signal)
  const expected = layer.digest.slice('sha256:'.length)
  if (actual !== expected) {
    throw new ModelSourceError('sha256_mismatch', `Ollama model ${shown}: the blob ${path} has SHA-256 ${actual} but its digest says ${expected}`,
      { name: shown, path, expected, actual })
  }
}

async function smallLayer (root: string, layer: Layer | undefined, shown: string, opts: OllamaOptions): Promise<string | undefined> {
  if (layer === undefined) return undefined
  if (layer.size > MAX_MANIFEST_BYTES) {
    throw new ModelSourceError('too_large', `Ollama model ${shown}: the ${layer.mediaType} layer is ${formatBytes(layer.size)}, over the ${formatBytes(MAX_MANIFEST_BYTES)} limit`, { name: shown })
  }
  const path = await checkBlob(root, layer, shown)
  if (opts.verify !== false) await verifyBlob(path, layer, shown, opts.signal)
  return await readFile(path, 'utf8')
}

/** Finds a pulled Ollama model and checks its GGUF blob (see the module comment). */
export async function resolveOllamaModel (uri: string, opts: OllamaOptions = {}): Promise<OllamaModel> {
  const name = parseOllamaUri(uri)
  const shown = displayOllamaName(name)
  const root = ollamaModelsDir(opts.modelsDir)
  const modelDir = join(root, 'manifests', name.host, name.namespace, name.model)
  const manifestPath = join(modelDir, name.tag)
  const st = await statOrNull(manifestPath)
  if (st === null || !st.isFile()) throw await noSuchModel(root, name, modelDir)
  if (st.size > MAX_MANIFEST_BYTES) {
    throw new ModelSourceError('corrupt', `Ollama model ${shown}: the manifest ${manifestPath} is ${formatBytes(st.size)}, more than a manifest can be (${formatBytes(MAX_MANIFEST_BYTES)})`,
      { name: shown, manifestPath })
  }
  let json: unknown
  try {
    json = JSON.parse(await readFile(manifestPath, 'utf8'))
  } catch (err) {
    throw new ModelSourceError('corrupt', `Ollama model ${shown}: the manifest ${manifestPath} is not JSON: ${(err as Error).message}`, { name: shown, manifestPath }, { cause: err })
  }
  const parsed = Manifest.safeParse(json)
  if (!parsed.success) {
    const issues = parsed.error.issues.slice(0, 3).map(i => `${i.path.map(String).join('.') || '(root)'}: ${i.message}`).join('; ')
    throw new ModelSourceError('corrupt', `Ollama model ${shown}: the manifest ${manifestPath} is not a manifest: ${issues}`, { name: shown, manifestPath })
  }
  const layers = parsed.data.layers
  const find = (mediaType: string): Layer | undefined => layers.find(l => l.mediaType === mediaType)
  const model = find(MEDIA_MODEL)
  if (model === undefined) {
    throw new ModelSourceError('corrupt', `Ollama model ${shown}: the manifest ${manifestPath} has no ${MEDIA_MODEL} layer (it has ${layers.map(l => l.mediaType).join(', ')})`,
      { name: shown, manifestPath })
  }

  const path = await checkBlob(root, model, shown)
  const head = Buffer.alloc(4)
  const fh = await open(path, 'r')
  try {
    await fh.read(head, 0, 4, 0)
  } finally {
    await fh.close()
  }
  if (head.toString('latin1') !== GGUF_MAGIC) {
    throw new ModelSourceError('corrupt', `Ollama model ${shown}: the model blob ${path} is not a GGUF file (it starts with ${JSON.stringify(head.toString('latin1'))})`,
      { name: shown, path })
  }
  const verify = opts.verify !== false
  if (verify) await verifyBlob(path, model, shown, opts.signal)

  const template = await smallLayer(root, find(MEDIA_TEMPLATE), shown, opts)
  const system = await smallLayer(root, find(MEDIA_SYSTEM), shown, opts)
  const paramsText = await smallLayer(root, find(MEDIA_PARAMS), shown, opts)
  let params: Record<string, unknown> | undefined
  if (paramsText !== undefined) {
    try {
      params = z.record(z.string(), z.unknown()).parse(JSON.parse(paramsText))
    } catch (err) {
      throw new ModelSourceError('corrupt', `Ollama model ${shown}: its params layer is not a JSON object`, { name: shown }, { cause: err })
    }
  }
  const projector = find(MEDIA_PROJECTOR)
  const projectorPath = projector === undefined ? undefined : await checkBlob(root, projector, shown)

  return {
    name: shown,
    manifestPath,
    path,
    digest: model.digest,
    sizeBytes: model.size,
    verified: verify,
    ...(template !== undefined ? { template } : {}),
    ...(system !== undefined ? { system } : {}),
    ...(params !== undefined ? { params } : {}),
    ...(projectorPath !== undefined ? { projectorPath } : {})
  }
}
