import { availableParallelism } from 'node:os'
import { isAbsolute, join, resolve } from 'node:path'
import type { Logger } from 'pino'
import type { Db } from '../db/database.ts'
import { ModelEngine } from '../executor/engine.ts'
import { StageEngine } from '../executor/stage-engine.ts'
import type { GpuPresence } from '../executor/providers.ts'
import { materializeModel } from '../model/source.ts'
import type { ModelFiles } from '../content/files.ts'
import type { Tokenizers } from '../model/tokenizers/load.ts'
import { ExternalBackend } from '../openai/external.ts'
import type { InitProcess } from './init-process.ts'
import { ComponentSpecSchema, componentUri } from '../registry/components.ts'
import type { Component, ComponentSpec } from '../registry/components.ts'
import { BlockSpecSchema } from '../registry/blocks.ts'
import type { BlockRuntime, BlockSpec, BlockStatus } from '../registry/blocks.ts'
import type { InstanceReport } from '../../mesh/capacity/record.ts'
import { AgentError, NotFoundError } from '../errors.ts'
import { HostedStore } from './hosted-store.ts'
import type { HostedRow } from './hosted-store.ts'
import type { AgentMetrics } from '../metrics.ts'
import { PythonEnvs } from '../python/envs.ts'
import { startBlockInit } from './block-init.ts'

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
    super(`block ${id} is ${status} here, not ready`, 'model_not_ready', 503)
    this.name = 'ModelNotReadyError'
  }
}

/** An instance's order to run, from its block's owner (this agent or a peer). */
export interface Assignment {
  block: string
  instance: string
  owner: string
  spec: BlockSpec
  component: ComponentSpec
  /** the fence of the reconciler that placed it (orders from a lower term are refused) */
  term?: number
}

/** How a local instance answers requests. */
export type LocalServing =
  | { kind: 'onnx', engine: ModelEngine, component: Component, instance: string }
  | { kind: 'stage', engine: StageEngine, component: Component, instance: string }
  | { kind: 'external', backend: ExternalBackend, component: Component, instance: string }

export interface HostedView {
  block: string
  instance: string
  owner: string
  component: string
  status: BlockStatus
  error: string | null
  runtime: BlockRuntime | null
  activeSequences: number
  queuedSequences: number
  /** the init process running next to the instance, if any */
  /** url: the process (its readiness); endpoint: the system it deployed (the same unless it reports another) */
  initProcess: { url: string, pid: number, endpoint: string } | null
  /** ms: when it was assigned here */
  assignedAt: number
}


interface Live {
  instance: string
  serving?: LocalServing
  init?: InitProcess
  abort: AbortController
  done: Promise<void>
  health?: NodeJS.Timeout
  /** ends the use of the model file in the content store (set once loaded) */
  releaseFile?: () => void
}

export interface InstanceHostInit {
  db: Db
  dataDir: string
  modelsDir: string
  maxModelBytes: number
  /** a block whose tokenizer cannot load fails with that reason (and nothing else does) */
  tokenizers?: Tokenizers
  gpus: () => GpuPresence
  intraOpThreads?: number
  log: Logger
  metrics?: AgentMetrics
  /** seconds between health checks of external systems */
  healthEverySeconds?: number
  /** model files from the content store, peers, or the origin (without it: the origin only, as before issue 15) */
  files?: ModelFiles
  /** virtual environments for init processes written in Python (default: the machine's shared cache) */
  pythonEnvs?: PythonEnvs
}

/**
 * Runs the block instances placed on this agent — by this agent or by a
 * peer that owns the block. Each instance is an ONNX Runtime engine (runtime
 * onnx) or a proxy to an OpenAI-compatible server (runtime external), with
 * an optional init process started first and stopped with it. At most one
 * instance of a block per agent. Instances are stored, so a restarted agent
 * starts them again.
 */
export class InstanceHost {
  private readonly init: InstanceHostInit
  private readonly live = new Map<string, Live>()
  private readonly hosted: HostedStore
  private readonly pythonEnvs: PythonEnvs

  constructor (init: InstanceHostInit) {
    this.pythonEnvs = init.pythonEnvs ?? new PythonEnvs({ log: init.log })
    this.init = init
    this.hosted = new HostedStore(init.db)
  }

  /** Stores the assignment and starts loading; the same instance again is a no-op. */
  accept (a: Assignment): HostedView {
    const spec = BlockSpecSchema.parse(a.spec) as BlockSpec
    const component = ComponentSpecSchema.parse(a.component)
    const existing = this.row(a.block)
    if (existing != null && existing.instance === a.instance) return this.view(existing)
    if (existing != null) void this.unload(a.block)
    const row = this.hosted.assign({ block: a.block, instance: a.instance, owner: a.owner, spec: { ...spec, id: a.block }, component, term: a.term ?? 0 })
    this.start(a.block)
    return this.view(row)
  }

  /** The fence of the instance of `block` here (0 when none or placed before fences existed). */
  term (block: string): number {
    return this.row(block)?.term ?? 0
  }

  /**
   * Stops the instance of a block. With `drainMs`, new requests stop going to it at once (it no longer
   * reports ready) and the sequences it is generating may finish, for up to drainMs, before it unloads.
   */
  async stop (block: string, instance?: string, opts: { drainMs?: number } = {}): Promise<boolean> {
    const row = this.row(block)
    if (row == null || (instance != null && row.instance !== instance)) return false
    if (opts.drainMs != null && opts.drainMs > 0) {
      this.setStatus(block, row.instance, 'pending')
      const deadline = Date.now() + opts.drainMs
      const busy = (): boolean => { const v = this.view(row); return v.activeSequences + v.queuedSequences > 0 }
      while (busy() && Date.now() < deadline && this.row(block)?.instance === row.instance) await new Promise(resolve => setTimeout(resolve, 100))
      if (this.row(block)?.instance !== row.instance) return true
    }
    await this.unload(block)
    this.hosted.remove(block, row.instance)
    this.init.log.info({ block, instance: row.instance }, 'instance stopped')
    return true
  }

  list (): HostedView[] {
    return this.hosted.all().map(r => this.view(r))
  }

  has (block: string): boolean {
    return this.row(block) != null
  }

  /** The local instance of a block, ready to serve. */
  serving (block: string): LocalServing {
    const row = this.row(block)
    if (row == null) throw new NotFoundError(`no instance of ${block} here`)
    const s = this.live.get(block)?.serving
    if (row.status !== 'ready' || s == null) throw new ModelNotReadyError(block, row.status)
    return s
  }

  /** What this agent gossips about its instances. */
  reports (rate: (block: string) => number = () => 0): InstanceReport[] {
    return this.hosted.all().map(row => {
      const v = this.view(row)
      const spec = row.spec
      return {
        block: v.block,
        instance: v.instance,
        owner: v.owner,
        status: v.status,
        error: v.error?.slice(0, 512) ?? null,
        provider: v.runtime?.provider.slice(0, 32) ?? null,
        component: v.component.slice(0, 130),
        active: v.activeSequences,
        queued: v.queuedSequences,
        tokensPerSecond: rate(v.block),
        affinity: spec.loadBalancing?.sessionAffinity ?? true,
        sessionTtl: spec.loadBalancing?.sessionTtl ?? 600,
        term: row.term
      }
    })
  }

  /** Starts every stored instance again (after a restart). */
  resume (): void {
    for (const r of this.hosted.all()) this.start(r.block)
  }

  /** Unloads everything (at shutdown); the assignments stay stored. */
  async stopAll (): Promise<void> {
    await Promise.all([...this.live.keys()].map(async b => { await this.unload(b) }))
  }

  private row (block: string): HostedRow | undefined {
    return this.hosted.get(block)
  }

  private view (r: HostedRow): HostedView {
    const entry = this.live.get(r.block)
    const s = entry?.serving
    const engine = s?.kind === 'onnx' || s?.kind === 'stage' ? s.engine : undefined
    return {
      block: r.block,
      instance: r.instance,
      owner: r.owner,
      component: r.uri,
      status: r.status,
      error: r.error,
      runtime: r.runtime,
      activeSequences: engine?.active ?? 0,
      queuedSequences: engine?.waiting ?? 0,
      initProcess: entry?.init != null ? { url: entry.init.url, pid: entry.init.pid, endpoint: entry.init.endpoint } : null,
      assignedAt: r.createdAt
    }
  }

  private setStatus (block: string, instance: string, status: BlockStatus, fields: { error?: string | null, runtime?: BlockRuntime } = {}): void {
    this.hosted.setStatus(block, instance, status, fields)
  }

  private start (block: string): void {
    const row = this.row(block)
    if (row == null) return
    const abort = new AbortController()
    const entry: Live = { instance: row.instance, abort, done: Promise.resolve() }
    this.live.set(block, entry)
    entry.done = this.load(block, row, entry).catch(() => {})
  }

  private async unload (block: string): Promise<void> {
    const entry = this.live.get(block)
    if (entry == null) return
    this.live.delete(block)
    entry.abort.abort()
    clearInterval(entry.health)
    await entry.done
    if (entry.serving?.kind === 'onnx') {
      this.init.metrics?.forgetEngine(block, entry.serving.engine)
      await entry.serving.engine.close()
    } else if (entry.serving?.kind === 'stage') {
      await entry.serving.engine.close()
    }
    await entry.init?.stop()
    entry.releaseFile?.()
  }

  private async load (block: string, row: HostedRow, entry: Live): Promise<void> {
    const { log } = this.init
    const signal = entry.abort.signal
    const instance = row.instance
    // a copy: loading adds the init process's endpoint to it
    const spec = structuredClone(row.spec)
    const compSpec = ComponentSpecSchema.parse(row.component)
    const component: Component = { uri: componentUri(compSpec), spec: compSpec, createdAt: new Date().toISOString() }
    this.setStatus(block, instance, 'loading')
    try {
      if (compSpec.init != null) {
        entry.init = await startBlockInit(compSpec.init, { block, instance, blockInitData: spec.blockInitData, pythonEnvs: this.pythonEnvs, dataDir: this.init.dataDir, signal, log })
        // the deployed system's endpoint (the process's own URL unless it reports another); `control`: the process
        spec.blockInitData = { ...spec.blockInitData, initContainer: { url: entry.init.endpoint, pid: entry.init.pid, control: entry.init.url } }
        const init = entry.init
        void init.exited.then(({ code, signal: sig }) => {
          if (this.live.get(block) !== entry || signal.aborted) return
          this.setStatus(block, instance, 'failed', { error: `init process exited (${code ?? sig ?? '?'})` })
          log.warn({ block, code, signal: sig }, 'init process exited')
        })
      }
      if (compSpec.runtime === 'external') {
        const ext = compSpec.external as NonNullable<ComponentSpec['external']>
        const backend = new ExternalBackend({ url: ext.url ?? (entry.init as InitProcess).endpoint, model: ext.model, apiKey: ext.apiKey, healthPath: ext.healthPath })
        await backend.health(signal)
        if (signal.aborted) return
        entry.serving = { kind: 'external', backend, component, instance }
        this.setStatus(block, instance, 'ready', { runtime: { provider: 'external', providerTried: [], modelPath: ext.url ?? (entry.init as InitProcess).endpoint, modelBytes: 0, loadMs: 0, threads: 0 } })
        this.watchHealth(block, entry, backend)
        log.info({ block, instance, url: ext.url ?? entry.init?.endpoint }, 'external instance ready')
        return
      }
      const model = compSpec.model as NonNullable<ComponentSpec['model']>
      let lastLog = 0
      const onProgress = (receivedBytes: number, totalBytes: number | null, extra: Record<string, unknown> = {}): void => {
        if (Date.now() - lastLog < 2000) return
        lastLog = Date.now()
        log.info({ block, receivedBytes, totalBytes, ...extra }, 'fetching model')
      }
      let file: { path: string, sizeBytes: number }
      if (this.init.files != null) {
        const f = await this.init.files.ensureModel({ url: model.url, md5: model.md5, sizeBytes: model.sizeBytes, name: row.uri, externalData: model.externalData }, join(this.init.modelsDir, 'linked'), {
          signal,
          onProgress: p => { onProgress(p.receivedBytes, p.totalBytes, { sources: Object.keys(p.bySource).length }) }
        })
        entry.releaseFile = f.release
        if (signal.aborted) f.release()
        file = f
        log.info({ block, md5: f.md5, via: f.via }, 'model file ready')
      } else {
        const url = /^[a-z][a-z0-9+.-]*:\/\//i.test(model.url) || isAbsolute(model.url) ? model.url : resolve(model.url)
        file = await materializeModel({ url, md5: model.md5 }, {
          cacheDir: this.init.modelsDir,
          maxBytes: this.init.maxModelBytes,
          signal,
          onProgress: ({ receivedBytes, totalBytes }) => { onProgress(receivedBytes, totalBytes) }
        })
      }
      signal.throwIfAborted()
      // the tokenizer is checked before the model loads: a broken one fails this block alone, with its reason
      if (compSpec.stage == null) await this.init.tokenizers?.get(compSpec.tokenizer, signal)
      const threads = spec.threads > 0 ? spec.threads : (this.init.intraOpThreads ?? 0) > 0 ? this.init.intraOpThreads as number : autoThreads(file.sizeBytes)
      // the prompt time budget (BlockSpec.promptBudgetMs): 0 is none; the runtime reports the engine's
      const promptMsFirst = spec.promptBudgetMs === 0 ? Infinity : spec.promptBudgetMs
      const budgetOf = (e: { promptMsFirst: number }): number => Number.isFinite(e.promptMsFirst) ? e.promptMsFirst : 0
      if (compSpec.stage != null) {
        const stage = await StageEngine.start({ modelPath: file.path, provider: spec.executionProvider, gpus: this.init.gpus(), maxBatch: spec.maxBatch, intraOpThreads: threads, promptMsFirst })
        if (signal.aborted) { await stage.close(); return }
        entry.serving = { kind: 'stage', engine: stage, component, instance }
        this.init.metrics?.watchStage(block, stage)
        stage.on('crashed', (err: Error) => {
          if (this.live.get(block) !== entry) return
          entry.serving = undefined
          this.setStatus(block, instance, 'failed', { error: `stage worker crashed: ${err.message}` })
        })
        this.setStatus(block, instance, 'ready', {
          runtime: { provider: stage.provider.name, providerTried: stage.provider.tried, modelPath: file.path, modelBytes: file.sizeBytes, loadMs: Math.round(stage.loadMs), threads, promptBudgetMs: budgetOf(stage) }
        })
        log.info({ block, instance, stage: compSpec.stage.index, provider: stage.provider.name }, 'stage instance ready')
        return
      }
      const engine = await ModelEngine.start({
        modelPath: file.path,
        provider: spec.executionProvider,
        gpus: this.init.gpus(),
        contextLength: compSpec.contextLength as number,
        maxBatch: spec.maxBatch,
        intraOpThreads: threads,
        promptMsFirst
      })
      if (signal.aborted) { await engine.close(); return }
      entry.serving = { kind: 'onnx', engine, component, instance }
      this.init.metrics?.watchEngine(block, engine)
      engine.on('crashed', (err: Error) => {
        if (this.live.get(block) !== entry) return
        entry.serving = undefined
        this.setStatus(block, instance, 'failed', { error: `model worker crashed: ${err.message}` })
        log.error({ block, err: err.message }, 'instance failed')
      })
      this.setStatus(block, instance, 'ready', {
        runtime: { provider: engine.provider.name, providerTried: engine.provider.tried, modelPath: file.path, modelBytes: file.sizeBytes, loadMs: Math.round(engine.loadMs), threads, promptBudgetMs: budgetOf(engine) }
      })
      log.info({ block, instance, provider: engine.provider.name, loadMs: Math.round(engine.loadMs) }, 'instance ready')
    } catch (err) {
      if (signal.aborted) return
      const message = (err as Error).message
      this.setStatus(block, instance, 'failed', { error: message })
      await entry.init?.stop().catch(() => {})
      log.warn({ block, instance, err: message }, 'instance failed to load')
    }
  }

  /** External systems are checked while they serve: 3 failed checks in a row fail the instance; a good one heals it. */
  private watchHealth (block: string, entry: Live, backend: ExternalBackend): void {
    let failures = 0
    entry.health = setInterval(() => {
      void backend.health(AbortSignal.timeout(5000)).then(() => {
        if (failures >= 3 && this.live.get(block) === entry) this.setStatus(block, entry.instance, 'ready')
        failures = 0
      }, (err: Error) => {
        failures++
        if (failures === 3 && this.live.get(block) === entry) {
          this.setStatus(block, entry.instance, 'failed', { error: `external system unhealthy: ${err.message}` })
          this.init.log.warn({ block, err: err.message }, 'external system unhealthy')
        }
      })
    }, (this.init.healthEverySeconds ?? 10) * 1000)
    entry.health.unref()
  }
}
