/** A registry answer in the seed's envelope. */
interface Envelope<T> { success: boolean, data?: T, error?: string, code?: string }

export class RegistryError extends Error {
  readonly status: number
  readonly code: string | undefined
  constructor (status: number, message: string, code?: string) {
    super(message)
    this.name = 'RegistryError'
    this.status = status
    this.code = code
  }
}

async function call<T> (url: string, method: string, token: string | undefined, body?: unknown): Promise<T> {
  const res = await fetch(url, {
    method,
    headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...(token != null ? { authorization: `Bearer ${token}` } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(30_000)
  })
  const text = await res.text()
  let json: unknown = null
  try { json = JSON.parse(text) } catch { /* not JSON */ }
  const env = json as Envelope<T> | null
  if (!res.ok || env == null || (typeof env === 'object' && 'success' in env && env.success === false)) {
    const err = env?.error as unknown
    const message = typeof err === 'string' ? err : (err as { message?: string } | undefined)?.message ?? text.slice(0, 300)
    throw new RegistryError(res.status, `${method} ${url}: ${res.status} ${message}`, env?.code)
  }
  return ('data' in (env as object) ? (env as Envelope<T>).data : env) as T
}

/** The model layers registry (seed: ModelLayerClient); base URL from MODEL_LAYERS_REGISTRY_URL. */
export class ModelLayerClient {
  readonly baseUrl: string
  readonly token: string | undefined

  constructor (baseUrl = process.env.MODEL_LAYERS_REGISTRY_URL ?? '', token = process.env.TASK_TOKEN) {
    if (baseUrl === '') throw new Error('MODEL_LAYERS_REGISTRY_URL is not set')
    this.baseUrl = baseUrl.replace(/\/$/, '')
    this.token = token
  }

  async createModelLayer (payload: Record<string, unknown>): Promise<Record<string, unknown>> {
    return await call(`${this.baseUrl}/model-layer`, 'POST', this.token, payload)
  }

  async getModelLayer (layerHash: string): Promise<Record<string, unknown>> {
    return await call(`${this.baseUrl}/model-layer/${encodeURIComponent(layerHash)}`, 'GET', this.token)
  }

  async queryModelLayers (queryFilter: Record<string, unknown>): Promise<Array<Record<string, unknown>>> {
    return await call(`${this.baseUrl}/model-layers`, 'POST', this.token, queryFilter)
  }
}

/** Running blocks by component and layer hash (seed: Blocks); base URL from BLOCK_DB_URL. */
export class Blocks {
  readonly baseUrl: string
  readonly token: string | undefined

  constructor (baseUrl = process.env.BLOCK_DB_URL ?? '', token = process.env.TASK_TOKEN) {
    if (baseUrl === '') throw new Error('BLOCK_DB_URL is not set')
    this.baseUrl = baseUrl.replace(/\/$/, '')
    this.token = token
  }

  /** Blocks in the mesh that run component `componentUri` whose model file has MD5 `hash`. */
  async query (componentUri: string, hash: string): Promise<Array<Record<string, unknown>>> {
    const body = await call<{ blocks: Array<Record<string, unknown>> }>(`${this.baseUrl}/api/blocks/query`, 'POST', this.token, { component: componentUri, model_layer_hash: hash })
    return body.blocks
  }
}
