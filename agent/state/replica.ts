import { createHash } from 'node:crypto'
import * as A from '@automerge/automerge'
import { envelopePayload } from '../../mesh/envelope.ts'
import type { PrivateKey } from '@libp2p/interface'
import type { Logger } from 'pino'
import type { Db } from '../db/database.ts'
import { ChangeStore } from './store.ts'
import { MAX_VALUE_BYTES, actorFor, actorPrefix, openChange, sealChange, StateFrameError } from './frame.ts'
import { TooLargeError } from '../errors.ts'
import type { Collection, OpenedChange } from './frame.ts'

/** A stored object of the desired state, with who wrote it last and when (writer's clock, informational). */
export interface Entry<T = unknown> {
  id: string
  value: T
  /** peer ID of the agent that wrote this version: checked against the Automerge actor of the change that wrote it, which is bound to its signer */
  writer: string
  /** ms: when the object was first created, and when this version was written */
  created: number
  at: number
}

interface Wrapped { value: unknown, writer: string, created: number, at: number }

type Doc = Record<string, A.ImmutableString>

export type ReceiveResult = 'applied' | 'known' | 'missing-deps'

export interface DesiredStateInit {
  db: Db
  peerId: string
  epoch: number
  privateKey: PrivateKey
  log?: Logger
}

/**
 * The mesh's desired state (components, blocks, vDAGs, split plans) as one Automerge document that every
 * agent holds in full. Writes are local Automerge changes, signed by the writer and stored in SQLite
 * before the write is acknowledged; peers' changes arrive by gossip or anti-entropy (agent/state/sync.ts),
 * are checked (agent/state/frame.ts), stored, and applied. Automerge merges concurrent changes the same way
 * on every agent: for one key, the put with the highest (Lamport counter, actor) wins; a put concurrent
 * with a delete survives (a delete removes only the versions its writer had seen).
 *
 * Objects are JSON strings under flat root keys `<collection>/<id>` (no nested maps: two agents creating
 * the same nested map concurrently would hide one of them).
 */
export class DesiredState {
  private readonly store: ChangeStore
  private readonly privateKey: PrivateKey
  private readonly log: Logger | undefined
  readonly peerId: string
  private doc: A.Doc<Doc>
  private readonly known = new Set<string>()
  private readonly clock = new Map<string, number>()
  private readonly cache = new Map<Collection, Map<string, Entry>>()
  private readonly listeners = new Set<(keys: string[], origin: 'local' | 'remote') => void>()
  private readonly localListeners = new Set<(frame: Uint8Array) => void>()
  private writing: Promise<unknown> = Promise.resolve()
  private digestCache: string | null = null

  constructor (init: DesiredStateInit) {
    this.store = new ChangeStore(init.db)
    this.privateKey = init.privateKey
    this.log = init.log
    this.peerId = init.peerId
    this.doc = A.init<Doc>({ actor: actorFor(init.peerId, init.epoch) })
    const stored = this.store.all()
    if (stored.length > 0) {
      // stored in causal order, each checked when it arrived: only the envelope is opened again
      ;[this.doc] = A.applyChanges(this.doc, stored.map(s => envelopePayload(s.frame)))
      for (const s of stored) this.note(s.hash, s.actor, s.seq)
    }
    this.rebuildCache()
  }

  /** Called with the keys a change touched, after it is applied (local writes and peers' changes). */
  onChange (fn: (keys: string[], origin: 'local' | 'remote') => void): () => void {
    this.listeners.add(fn)
    return () => this.listeners.delete(fn)
  }

  /** Called with the signed frame of each local write (to publish it). */
  onLocalWrite (fn: (frame: Uint8Array) => void): () => void {
    this.localListeners.add(fn)
    return () => this.localListeners.delete(fn)
  }

  get<T> (collection: Collection, id: string): Entry<T> | undefined {
    return this.collection(collection).get(id) as Entry<T> | undefined
  }

  /** Objects of a collection, oldest first (by creation, then id). */
  list<T> (collection: Collection): Array<Entry<T>> {
    return [...this.collection(collection).values()].sort((a, b) => a.created - b.created || (a.id < b.id ? -1 : 1)) as Array<Entry<T>>
  }

  /**
   * Writes an object. `check` runs inside the write lock against the current entry (to refuse a create of
   * an existing id, say); it may throw. Resolves once the signed change is stored in SQLite.
   */
  async put<T> (collection: Collection, id: string, value: T, check?: (current: Entry<T> | undefined) => void): Promise<Entry<T>> {
    return await this.write(() => {
      const current = this.get<T>(collection, id)
      check?.(current)
      const now = Date.now()
      const wrapped: Wrapped = { value, writer: this.peerId, created: current?.created ?? now, at: now }
      return { key: `${collection}/${id}`, json: JSON.stringify(wrapped) }
    }) as Entry<T>
  }

  /** Deletes an object; false when there was none. */
  async remove (collection: Collection, id: string, check?: (current: Entry) => void): Promise<boolean> {
    const r = await this.write(() => {
      const current = this.get(collection, id)
      if (current == null) return null
      check?.(current)
      return { key: `${collection}/${id}`, json: null }
    })
    return r !== null
  }

  private async write (plan: () => { key: string, json: string | null } | null): Promise<Entry | undefined | null> {
    const run = this.writing.then(async () => {
      const p = plan()
      if (p == null) return null
      // peers refuse (and strike the sender of) a value past MAX_VALUE_BYTES characters, or a frame past
      // MAX_STATE_FRAME_BYTES: refuse it here, before the change is made (a change made is kept). Counted in
      // UTF-8 bytes, a value within the bound also seals into a frame within its bound.
      const bytes = p.json == null ? 0 : Buffer.byteLength(p.json, 'utf8')
      if (bytes > MAX_VALUE_BYTES) throw new TooLargeError(`${p.key} would be ${bytes} bytes stored; the mesh carries at most ${MAX_VALUE_BYTES} per object`)
      const next = A.change(this.doc, d => {
        if (p.json == null) delete d[p.key]
        else d[p.key] = new A.ImmutableString(p.json)
      })
      const change = A.getLastLocalChange(next)
      if (change == null) return this.entryOf(p.key)
      const frame = await sealChange(change, this.privateKey)
      const meta = A.decodeChange(change)
      this.store.add({ hash: meta.hash as string, actor: meta.actor, seq: meta.seq, writer: this.peerId, frame })
      this.doc = next
      this.note(meta.hash as string, meta.actor, meta.seq)
      this.refresh([p.key])
      for (const fn of this.localListeners) { try { fn(frame) } catch { /* a publisher's failure is its own */ } }
      this.emit([p.key], 'local')
      return this.entryOf(p.key)
    })
    this.writing = run.catch(() => {})
    return await run
  }

  /**
   * A peer's change: checked (throws StateFrameError), then stored and applied unless already known or its
   * dependencies are not here yet ('missing-deps': nothing is kept; anti-entropy fetches it in order).
   */
  async receive (frame: Uint8Array): Promise<ReceiveResult> {
    const c = await openChange(frame)
    return this.applyOpened(c, frame)
  }

  private applyOpened (c: OpenedChange, frame: Uint8Array): ReceiveResult {
    if (this.known.has(c.hash)) return 'known'
    if (!c.deps.every(d => this.known.has(d))) return 'missing-deps'
    if (c.seq !== (this.clock.get(c.actor) ?? 0) + 1) return 'missing-deps'
    this.store.add({ hash: c.hash, actor: c.actor, seq: c.seq, writer: c.writer, frame })
    ;[this.doc] = A.applyChanges(this.doc, [c.change])
    this.note(c.hash, c.actor, c.seq)
    this.refresh(c.keys)
    this.emit(c.keys, 'remote')
    return 'applied'
  }

  /** What this agent has of each actor: the highest change number (changes of an actor arrive in order). */
  vector (): Map<string, number> {
    return new Map(this.clock)
  }

  /** Signed frames a peer lacks, in causal order, within a byte budget. */
  missingFor (have: ReadonlyMap<string, number>, budgetBytes: number, maxCount: number): { frames: Uint8Array[], more: boolean } {
    return this.store.missing(have, budgetBytes, maxCount)
  }

  /** A short digest of the document's heads: equal digests, equal states. Carried in the capacity record. */
  digest (): string {
    this.digestCache ??= createHash('sha256').update([...A.getHeads(this.doc)].sort().join(',')).digest('hex').slice(0, 16)
    return this.digestCache
  }

  /** Changes stored here. */
  changes (): number {
    return this.known.size
  }

  private note (hash: string, actor: string, seq: number): void {
    this.known.add(hash)
    if (seq > (this.clock.get(actor) ?? 0)) this.clock.set(actor, seq)
    this.digestCache = null
  }

  private collection (c: Collection): Map<string, Entry> {
    let m = this.cache.get(c)
    if (m == null) { m = new Map(); this.cache.set(c, m) }
    return m
  }

  private entryOf (key: string): Entry | undefined {
    const slash = key.indexOf('/')
    return this.collection(key.slice(0, slash) as Collection).get(key.slice(slash + 1))
  }

  private rebuildCache (): void {
    this.cache.clear()
    this.refresh(Object.keys(this.doc))
  }

  private refresh (keys: string[]): void {
    for (const key of new Set(keys)) {
      const slash = key.indexOf('/')
      const coll = this.collection(key.slice(0, slash) as Collection)
      const id = key.slice(slash + 1)
      const raw = this.doc[key]
      if (raw == null) { coll.delete(id); continue }
      try {
        const w = JSON.parse(raw.toString()) as Wrapped
        if (typeof w !== 'object' || w == null || typeof w.writer !== 'string' || typeof w.at !== 'number' || typeof w.created !== 'number') throw new Error('not a wrapped value')
        // the value names its writer; the op that wrote it carries the actor its signer was bound to
        // (frame.ts): a value naming another agent as its writer is a forgery, and is not seen here
        if (this.actorOf(key, raw.toString())?.startsWith(actorPrefix(w.writer)) !== true) {
          coll.delete(id)
          this.log?.warn({ key, writer: w.writer }, 'desired-state value names a writer other than its signer; ignored')
          continue
        }
        coll.set(id, { id, value: w.value, writer: w.writer, created: w.created, at: w.at })
      } catch (err) {
        coll.delete(id)
        this.log?.warn({ key, err: (err as Error).message }, 'desired-state value is not JSON; ignored')
      }
    }
  }

  /** The Automerge actor of the op that put `shown` at a root key (of concurrent puts, the winner shown). */
  private actorOf (key: string, shown: string): string | undefined {
    const all = A.getBackend(this.doc).getAll('_root', key) as Array<[string, unknown, string]>
    const op = all.filter(v => v[1] === shown).at(-1)?.[2]
    return op?.slice(op.indexOf('@') + 1)
  }

  private emit (keys: string[], origin: 'local' | 'remote'): void {
    for (const fn of this.listeners) {
      try { fn(keys, origin) } catch (err) { this.log?.warn({ err: (err as Error).message }, 'desired-state listener failed') }
    }
  }
}

export { StateFrameError }
