import { availableParallelism } from 'node:os'
import { isAbsolute, resolve } from 'node:path'
import type { Logger } from 'pino'
import { ModelEngine } from '../executor/engine.ts'
import type { GpuPresence } from '../executor/providers.ts'
import { materializeModel } from '../model/source.ts'
import { BlockSpecSchema, BlockStore, newBlockId } from '../registry/blocks.ts'
import type { BlockRecord, BlockSpec, BlockSpecInput } from '../registry/blocks.ts'
import { ComponentRegistry } from '../registry/components.ts'
import type { Component } from '../registry/components.ts'
import { AgentError } from '../errors.ts'
import type { AgentMetrics } from '../metrics.ts'

export interface BlockManagerInit {
  store: BlockStore
  components: ComponentRegistry
  /** where downloaded models are kept */
  modelsDir: string
  maxModelBytes: number
  /** real (not simulated) GPUs on this box, for the execution provider choice */
  gpus: () => GpuPresence
  /** ONNX Runtime threads for blocks that do not set their own (0: autoThreads) */
  intraOpThreads?: number
  log: Logger
  metrics?: AgentMetrics
}

/**
 * Intra-op threads for a model when the block does not say. On a small box a
 * small model decodes faster with one core left to the HTTP and streaming
 * work than with every core busy in ONNX Runtime (measured on 2 cores: 5M
 * model 715 vs 472 tok/s through the API); a large, memory-bound model needs
 * every core (~100M model: 56 vs 37 tok/s). 0 = ONNX Runtime's default.
 */
export function autoThreads (modelBytes: number, cores = availableParallelism()): number {
  if (cores <= 4 && modelBytes < 256 * 1024 * 1024) return Math.max(1, cores - 1)
  return 0
}

export class ModelNotReadyError extends AgentError {
  constructor (id: string, status: string) {
    super(`block ${id} is ${status}, not ready`, 'model_not_ready', 503)
    this.name = 'ModelNotReadyError'
  }
}

/** A block as the API shows it: the stored record plus live figures. */
export interface BlockView extends BlockRecord {
  activeSequences: number
  queuedSequences: number
}

/**
 * Runs this agent's blocks: each is loaded (model fetched and checked, then
 * an engine started in its worker thread) in the background, moving from
 * pending to loading to ready, or to failed with the reason. A failing block
 * never affects the others. Blocks are stored, so a restarted agent loads
 * them again.
 */
export class BlockManager {
  private readonly init: BlockManagerInit
  private readonly engines = new Map<string, ModelEngine>()
  private readonly loads = new Map<string, { abort: AbortController, done: Promise<void> }>()

  constructor (init: BlockManagerInit) {
    this.init = init
  }

  /** Validates and stores a block, then loads it in the background. */
  create (input: BlockSpecInput): BlockRecord {
    const parsed = BlockSpecSchema.parse(input)
    const component = this.init.components.get(parsed.component)
    const spec: BlockSpec = { ...parsed, id: parsed.id ?? newBlockId(component.spec.name) }
    const record = this.init.store.insert(spec)
    this.startLoad(spec.id)
    return record
  }

  list (): BlockView[] {
    return this.init.store.list().map(r => this.view(r))
  }

  get (id: string): BlockView {
    return this.view(this.init.store.get(id))
  }

  /** The engine and component of a ready block; throws if missing or not ready. */
  serving (id: string): { engine: ModelEngine, component: Component, block: BlockRecord } {
    const block = this.init.store.get(id)
    const engine = this.engines.get(id)
    if (engine == null || block.status !== 'ready') throw new ModelNotReadyError(id, block.status)
    return { engine, component: this.init.components.get(block.component), block }
  }

  readyIds (): string[] {
    return this.init.store.list().filter(b => b.status === 'ready' && this.engines.has(b.id)).map(b => b.id)
  }

  async delete (id: string): Promise<void> {
    this.init.store.get(id)
    await this.unload(id)
    this.init.store.delete(id)
    this.init.log.info({ block: id }, 'block deleted')
  }

  /** Loads every stored block again (after a restart). */
  resume (): void {
    for (const b of this.init.store.list()) this.startLoad(b.id)
  }

  async stopAll (): Promise<void> {
    await Promise.all(this.init.store.list().map(async b => { await this.unload(b.id) }))
  }

  private view (r: BlockRecord): BlockView {
    const e = this.engines.get(r.id)
    return { ...r, activeSequences: e?.active ?? 0, queuedSequences: e?.waiting ?? 0 }
  }

  private async unload (id: string): Promise<void> {
    const load = this.loads.get(id)
    if (load != null) {
      load.abort.abort()
      await load.done.catch(() => {})
    }
    const engine = this.engines.get(id)
    this.engines.delete(id)
    if (engine != null) await engine.close()
  }

  private startLoad (id: string): void {
    const abort = new AbortController()
    const done = this.load(id, abort.signal).finally(() => { this.loads.delete(id) })
    this.loads.set(id, { abort, done })
  }

  private async load (id: string, signal: AbortSignal): Promise<void> {
    const { store, components, log } = this.init
    const block = store.get(id)
    store.setStatus(id, 'loading')
    try {
      const component = components.get(block.component)
      const { model } = component.spec
      const url = /^[a-z][a-z0-9+.-]*:\/\//i.test(model.url) || isAbsolute(model.url) ? model.url : resolve(model.url)
      let lastLog = 0
      const file = await materializeModel({ url, md5: model.md5 }, {
        cacheDir: this.init.modelsDir,
        maxBytes: this.init.maxModelBytes,
        signal,
        onProgress: ({ receivedBytes, totalBytes }) => {
          if (Date.now() - lastLog < 2000) return
          lastLog = Date.now()
          log.info({ block: id, receivedBytes, totalBytes }, 'downloading model')
        }
      })
      signal.throwIfAborted()
      const threads = block.spec.threads > 0 ? block.spec.threads : (this.init.intraOpThreads ?? 0) > 0 ? this.init.intraOpThreads as number : autoThreads(file.sizeBytes)
      const engine = await ModelEngine.start({
        modelPath: file.path,
        provider: block.spec.executionProvider,
        gpus: this.init.gpus(),
        contextLength: component.spec.contextLength,
        maxBatch: block.spec.maxBatch,
        intraOpThreads: threads
      })
      if (signal.aborted) {
        await engine.close()
        return
      }
      this.engines.set(id, engine)
      this.init.metrics?.watchEngine(id, engine)
      engine.on('crashed', (err: Error) => {
        this.engines.delete(id)
        if (store.find(id) != null) store.setStatus(id, 'failed', { error: `model worker crashed: ${err.message}` })
        log.error({ block: id, err: err.message }, 'block failed')
      })
      store.setStatus(id, 'ready', {
        runtime: {
          provider: engine.provider.name,
          providerTried: engine.provider.tried,
          modelPath: file.path,
          modelBytes: file.sizeBytes,
          loadMs: Math.round(engine.loadMs),
          threads
        }
      })
      log.info({ block: id, provider: engine.provider.name, loadMs: Math.round(engine.loadMs) }, 'block ready')
    } catch (err) {
      if (signal.aborted) return
      const message = (err as Error).message
      if (store.find(id) != null) store.setStatus(id, 'failed', { error: message })
      log.warn({ block: id, err: message }, 'block failed to load')
    }
  }
}
