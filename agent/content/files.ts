/**
 * Model files as blocks, stage hosts and tokenizers need them: from this agent's content store when it has
 * the file, else from the peers that hold it (over the mesh, chunk by chunk, each chunk checked), else from
 * the file's origin (a path on this machine, HTTP, S3 — the URL a component names). What a block loads stays
 * marked in use until the block stops, so the store never evicts it.
 */
import { basename, isAbsolute, join, resolve } from 'node:path'
import { mkdir, rename, rm, symlink } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { existsSync } from 'node:fs'
import { materializeModel } from '../model/source.ts'
import type { ContentReport } from '../../mesh/capacity/record.ts'
import type { GossipDirectory, HolderView } from './directory.ts'
import { MAX_ADVERTISED, MAX_ADVERTISED_TRANSFERS } from './types.ts'
import type { ContentEntry, ContentFetcher, ContentStore, OriginSource, TransferProgress } from './types.ts'

export interface ModelFile {
  /** 'file:///abs/path', a plain path, an http(s):// or s3:// URL: the origin, used when no peer holds the file */
  url: string
  md5: string
  sizeBytes?: number
  name?: string
}

export interface LocalFile {
  path: string
  md5: string
  sizeBytes: number
  /** where the bytes came from: 'store' (already here), 'mesh' (peers), 'origin' */
  via: 'store' | 'mesh' | 'origin'
  /** ends the use (the store may evict the file afterwards) */
  release: () => void
}

export interface ModelFilesInit {
  store: ContentStore
  fetcher: ContentFetcher
  directory: GossipDirectory
  /** reads (a local file) or downloads a file from its origin, MD5-checked (originDownloader) */
  origin?: OriginDownload
  /** this agent, as holder lists name it */
  self: { peerId: string, name: string }
}

/** A URL as the origin downloader takes it: relative paths made absolute. */
export function originUrl (url: string): string {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(url) || isAbsolute(url) ? url : resolve(url)
}

/** The local file a URL names (a path, or file://), else undefined (http, s3...). */
/** A finished split plan's stage files (its components' model files). */
export function stageFilesOf (plan: unknown): Array<{ url: string, md5: string, name: string }> {
  const components = (plan as { components?: unknown[] } | null)?.components
  if (!Array.isArray(components)) return []
  return components.flatMap(c => {
    const x = c as { name?: string, version?: string, model?: { url?: unknown, md5?: unknown } }
    return typeof x.model?.url === 'string' && typeof x.model.md5 === 'string' ? [{ url: x.model.url, md5: x.model.md5, name: `${x.name ?? 'stage'}:${x.version ?? ''}` }] : []
  })
}

/** A component's files: its model and its tokenizer bundle. */
export function filesOf (spec: { name: string, version: string, model?: { url: string, md5: string, externalData?: Array<{ name: string, url: string, md5: string }> }, tokenizer: { type: string, url?: string, md5?: string } }): Array<{ url: string, md5: string, name: string }> {
  const uri = `${spec.name}:${spec.version}`
  return [
    ...(spec.model != null ? [{ url: spec.model.url, md5: spec.model.md5, name: uri }] : []),
    ...(spec.model?.externalData ?? []).map(d => ({ url: d.url, md5: d.md5, name: `${uri} ${d.name}` })),
    ...(spec.tokenizer.url != null && spec.tokenizer.md5 != null ? [{ url: spec.tokenizer.url, md5: spec.tokenizer.md5, name: `${uri} tokenizer` }] : [])
  ]
}

export function localPath (url: string): string | undefined {
  if (/^file:\/\//i.test(url)) return fileURLToPath(url)
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) return undefined
  return resolve(url)
}

/**
 * The fetcher's origin: the URL's bytes on local disk (a local file as it is; a download into `cacheDir`
 * with resume, size bound and MD5 check), to be imported into the store.
 */
export type OriginDownload = (origin: OriginSource, md5: string, signal?: AbortSignal) => Promise<string>

export function originDownloader (opts: { cacheDir: string, maxBytes: number }): OriginDownload {
  return async (origin, md5, signal) => (await materializeModel({ url: originUrl(origin.url), md5 }, { cacheDir: opts.cacheDir, maxBytes: opts.maxBytes, signal })).path
}

export class ModelFiles {
  readonly store: ContentStore
  readonly fetcher: ContentFetcher

  readonly directory: GossipDirectory
  private readonly self: { peerId: string, name: string }
  private readonly origin: OriginDownload | undefined

  constructor (init: ModelFilesInit) {
    this.store = init.store
    this.fetcher = init.fetcher
    this.directory = init.directory
    this.self = init.self
    this.origin = init.origin
  }

  /**
   * Adds a file on this machine (a path or file:// URL) to the store, pinned (never evicted), so peers can
   * fetch it from here; undefined for a URL that is not local (its hosts fetch it from there).
   */
  async add (url: string, opts: { name?: string, signal?: AbortSignal } = {}): Promise<ContentEntry | undefined> {
    const path = localPath(url)
    if (path == null) return undefined
    return await this.store.importFile(path, { name: opts.name, pin: true, signal: opts.signal })
  }

  /**
   * Shares the files of a component (or plan) that exist on this machine: each local `{ url, md5 }` whose
   * bytes have that MD5 joins the store, pinned, so hosts elsewhere fetch it from here. Files that are not
   * here, or not what the MD5 says, are skipped (returned in `skipped`, with why): the block that needs them
   * fails with that reason where it loads, as before.
   */
  async share (files: Array<{ url: string, md5: string, name?: string }>, signal?: AbortSignal): Promise<{ added: string[], skipped: Array<{ url: string, reason: string }> }> {
    const added: string[] = []
    const skipped: Array<{ url: string, reason: string }> = []
    for (const f of files) {
      const path = localPath(f.url)
      if (path == null) continue
      if (this.store.pathOf(f.md5) != null) { added.push(f.md5); continue }
      if (!existsSync(path)) { skipped.push({ url: f.url, reason: 'not on this machine' }); continue }
      const before = new Set(this.store.list().map(x => x.md5))
      const e = await this.store.importFile(path, { name: f.name, pin: true, signal })
      if (e.md5 !== f.md5) {
        if (!before.has(e.md5) && e.inUse === 0) this.store.remove(e.md5)
        skipped.push({ url: f.url, reason: `its MD5 is ${e.md5}, not ${f.md5}` })
        continue
      }
      added.push(e.md5)
    }
    return { added, skipped }
  }

  /** What this agent's capacity record says: files held (most recently used first) and transfers in progress. */
  report (): ContentReport {
    const held = this.store.list().filter(e => e.state === 'complete').sort((a, b) => b.lastUsed - a.lastUsed).map(e => e.md5)
    const fetching = this.fetcher.transfers().map(t => ({ md5: t.md5, name: t.name, receivedBytes: t.receivedBytes, totalBytes: t.totalBytes }))
    return { held: held.slice(0, MAX_ADVERTISED), fetching: fetching.slice(0, MAX_ADVERTISED_TRANSFERS) }
  }

  /** Who holds `md5` or is fetching it: this agent first, then its live peers. */
  holders (md5: string): HolderView[] {
    const out: HolderView[] = []
    const own = this.store.get(md5)
    const t = this.fetcher.transfers().find(x => x.md5 === md5)
    if (own?.state === 'complete') out.push({ peerId: this.self.peerId, name: this.self.name, state: 'complete', receivedBytes: null, totalBytes: null })
    else if (t != null) out.push({ peerId: this.self.peerId, name: this.self.name, state: 'partial', receivedBytes: t.receivedBytes, totalBytes: t.totalBytes })
    return [...out, ...this.directory.views(md5)]
  }

  /** Bytes fetched into the store: from peers (mesh) and from origins (metrics). */
  readonly received = { mesh: 0, origin: 0 }

  /**
   * Fetches a file into the store (from peers, else its origin) without using it: the API's pull. Resolves
   * with the entry and the bytes per source.
   */
  async pull (md5: string, opts: { url?: string, name?: string, signal?: AbortSignal } = {}): Promise<{ file: ContentEntry, bySource: Record<string, number> }> {
    let bySource: Record<string, number> = {}
    const file = await this.fetcher.fetch(md5, {
      signal: opts.signal,
      name: opts.name,
      ...(opts.url != null ? { origin: { url: opts.url } } : {}),
      onProgress: p => { bySource = p.bySource }
    })
    this.count(bySource)
    return { file, bySource }
  }

  private count (bySource: Record<string, number>): void {
    for (const [source, n] of Object.entries(bySource)) this.received[source === 'origin' ? 'origin' : 'mesh'] += n
  }

  /**
   * A model and its external data files on local disk, in use until `release()`. Without external data this
   * is `ensure`; with it, the files are put side by side (symbolic links into the store, under
   * `linkDir/<md5>/`, named as the model names them), since ONNX Runtime finds external data beside the model.
   */
  async ensureModel (model: ModelFile & { externalData?: Array<{ name: string, url: string, md5: string, sizeBytes?: number }> }, linkDir: string, opts: { signal?: AbortSignal, onProgress?: (p: TransferProgress) => void } = {}): Promise<LocalFile> {
    const main = await this.ensure(model, opts)
    const data = model.externalData ?? []
    if (data.length === 0) return main
    const held: LocalFile[] = [main]
    try {
      for (const d of data) held.push(await this.ensure({ url: d.url, md5: d.md5, sizeBytes: d.sizeBytes, name: `${model.name ?? model.md5} ${d.name}` }, opts))
      const dir = join(linkDir, model.md5)
      await mkdir(dir, { recursive: true })
      const modelName = basename(localPath(model.url) ?? 'model.onnx')
      // a link made under a temporary name and renamed over the old one: two loads of one model at once
      // (a block reassigned while loading) each end with the right link, never EEXIST
      const place = async (name: string, target: string): Promise<void> => {
        const at = join(dir, name)
        const tmp = `${at}.${randomBytes(6).toString('hex')}.tmp`
        await symlink(target, tmp)
        try {
          await rename(tmp, at)
        } catch (err) {
          await rm(tmp, { force: true })
          throw err
        }
      }
      await place(modelName, main.path)
      for (const [i, d] of data.entries()) await place(d.name, held[i + 1].path)
      return { ...main, path: join(dir, modelName), sizeBytes: held.reduce((n, f) => n + f.sizeBytes, 0), release: () => { for (const f of held) f.release() } }
    } catch (err) {
      for (const f of held) f.release()
      throw err
    }
  }

  /** The file on local disk, in use until `release()`. */
  async ensure (file: ModelFile, opts: { signal?: AbortSignal, onProgress?: (p: TransferProgress) => void } = {}): Promise<LocalFile> {
    for (let attempt = 0; ; attempt++) {
      const held = this.store.pathOf(file.md5) != null
      let entry: ContentEntry | undefined
      let via: LocalFile['via'] = 'store'
      const local = localPath(file.url)
      if (!held && local != null && existsSync(local) && this.origin != null) {
        // the file is on this machine already: checked (MD5) and added to the store, no transfer
        const path = await this.origin({ url: local }, file.md5, opts.signal)
        await this.store.importFile(path, { name: file.name, pin: false, signal: opts.signal })
        via = 'origin'
      } else if (!held) {
        let fromOrigin = false
        let bySource: Record<string, number> = {}
        // a path that is not on this machine is another agent's file: only peers can give it (the fetcher waits for them)
        const origin = local == null ? { url: file.url, ...(file.sizeBytes != null ? { sizeBytes: file.sizeBytes } : {}) } : undefined
        entry = await this.fetcher.fetch(file.md5, {
          signal: opts.signal,
          name: file.name,
          ...(origin != null ? { origin } : {}),
          onProgress: p => { bySource = p.bySource; fromOrigin = (p.bySource.origin ?? 0) > 0; opts.onProgress?.(p) }
        })
        this.count(bySource)
        via = fromOrigin ? 'origin' : 'mesh'
      }
      const release = this.store.acquire(file.md5)
      const path = this.store.pathOf(file.md5)
      entry = this.store.get(file.md5)
      if (path != null && entry != null) return { path, md5: file.md5, sizeBytes: entry.size, via, release: once(release) }
      // evicted between the fetch and the acquire: fetch again (once)
      release()
      if (attempt > 0) throw new Error(`${file.md5} left the content store while it was being loaded`)
    }
  }
}

function once (fn: () => void): () => void {
  let done = false
  return () => { if (!done) { done = true; fn() } }
}
