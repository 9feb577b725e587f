import { Query } from 'mingo'
import { update as applyUpdate } from 'mingo/updater'
import type { Modifier } from 'mingo/updater'
import { MingoError } from 'mingo/util'
import type { z } from 'zod'
import type { Db } from '../db/database.ts'
import { NotFoundError, ValidationError, formatIssues } from '../errors.ts'
import { ConflictError } from './components.ts'

/** A JSON document as stored: a plain object. */
export type JsonDocument = Record<string, unknown>

/** Bounds on what clients may send and store (seed 002 registries). */
export const DOCUMENT_LIMITS = {
  /** a filter or update document, serialized */
  maxRequestBytes: 64 * 1024,
  /** nesting of objects/arrays in a filter, update or stored document */
  maxDepth: 32,
  /** a stored document, serialized */
  maxDocumentBytes: 256 * 1024,
  /** results of one find() unless the caller asks for fewer */
  defaultLimit: 1000,
  maxLimit: 1000
} as const

/** Operators that run client-supplied code (MongoDB server-side JavaScript): always refused. */
export const CODE_OPERATORS: ReadonlySet<string> = new Set(['$where', '$function', '$accumulator'])

/** Path segments refused anywhere (filters, updates, document keys): prototype pollution guards. */
const FORBIDDEN_SEGMENTS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype'])

/** mingo options for every query: no script operators, whatever mingo's default. */
const QUERY_OPTIONS = { scriptEnabled: false } as const

/** Options of a {@link DocumentCollection}. */
export interface DocumentCollectionOptions<T extends JsonDocument> {
  db: Db
  /** SQLite table with columns (keyColumn TEXT PRIMARY KEY, doc TEXT, created_at INTEGER, updated_at INTEGER) */
  table: string
  keyColumn: string
  /** the document field that holds the primary key */
  keyField: keyof T & string
  /** validates (and normalises) a whole stored document: on insert and after every update */
  schema: z.ZodType<T>
  /** human name in messages, e.g. "split runner" */
  noun: string
  /** maps a key from a URL to the stored form (e.g. lowercase) */
  normalizeKey?: (key: string) => string
  /** top-level fields an update may not change (the key field always is) */
  immutable?: readonly string[]
  /**
   * Top-level fields clients never read back (secrets): filters cannot see them (they match
   * against {@link DocumentCollectionOptions.view}), and updates may only replace them whole
   * (`$set`) or remove them (`$unset`), never move or inspect them.
   */
  writeOnly?: readonly string[]
  /** what clients see of a document; filters are matched against it (default: the document) */
  view?: (doc: T) => JsonDocument
}

/** Options of {@link DocumentCollection.find}. */
export interface FindOptions {
  /** at most this many documents, oldest first (default and maximum {@link DOCUMENT_LIMITS}) */
  limit?: number
}

/** Result of {@link DocumentCollection.update}. */
export interface UpdateOutcome<T> {
  doc: T
  /** paths mingo reported as modified; empty: the document was unchanged and not written */
  modified: string[]
}

const SAFE_IDENTIFIER = /^[a-z_][a-z0-9_]*$/

/**
 * A collection of JSON documents in one SQLite table (key column + `doc` column), with
 * MongoDB-style filters and update documents evaluated by mingo. Every document written is
 * validated with the collection's zod schema; every write runs in a transaction.
 * Queries scan the table (these registries hold hundreds of documents, not millions).
 */
export class DocumentCollection<T extends JsonDocument> {
  private readonly db: Db
  private readonly opts: DocumentCollectionOptions<T>
  private readonly immutable: ReadonlySet<string>
  private readonly writeOnly: ReadonlySet<string>

  constructor (opts: DocumentCollectionOptions<T>) {
    if (!SAFE_IDENTIFIER.test(opts.table) || !SAFE_IDENTIFIER.test(opts.keyColumn)) throw new Error(`bad table or column name ${opts.table}.${opts.keyColumn}`)
    this.db = opts.db
    this.opts = opts
    this.immutable = new Set([opts.keyField, ...(opts.immutable ?? [])])
    this.writeOnly = new Set(opts.writeOnly ?? [])
  }

  private key (key: string): string {
    return this.opts.normalizeKey != null ? this.opts.normalizeKey(key) : key
  }

  /** Validates a whole document; a failure is a 400 listing each bad field. */
  private validate (doc: unknown, context: string): T {
    const result = this.opts.schema.safeParse(doc)
    if (!result.success) {
      const issues = formatIssues(result.error.issues)
      throw new ValidationError(`${context}: ${issues.map(i => `${i.field}: ${i.message}`).join('; ')}`, issues)
    }
    const out = result.data
    checkDocumentKeys(out, this.writeOnly, context)
    const bytes = Buffer.byteLength(JSON.stringify(out))
    if (bytes > DOCUMENT_LIMITS.maxDocumentBytes) {
      throw new ValidationError(`${context}: the ${this.opts.noun} would be ${bytes} bytes as JSON; the limit is ${DOCUMENT_LIMITS.maxDocumentBytes}`, [{ field: '(root)', message: `over ${DOCUMENT_LIMITS.maxDocumentBytes} bytes` }])
    }
    return out
  }

  /** Validates and stores a new document; a taken key is a 409. */
  insert (doc: unknown): T {
    const valid = this.validate(doc, `invalid ${this.opts.noun}`)
    const key = valid[this.opts.keyField]
    if (typeof key !== 'string' || key === '') throw new ValidationError(`invalid ${this.opts.noun}: ${this.opts.keyField} is required`, [{ field: this.opts.keyField, message: 'required' }])
    const now = Date.now()
    try {
      this.db.transaction(() => {
        this.db.prepare(`INSERT INTO ${this.opts.table} (${this.opts.keyColumn}, doc, created_at, updated_at) VALUES (?, ?, ?, ?)`)
          .run(key, JSON.stringify(valid), now, now)
      })()
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw new ConflictError(`${this.opts.noun} ${key} exists`)
      throw err
    }
    return valid
  }

  /** The stored document, or undefined. */
  tryGet (key: string): T | undefined {
    const text = this.db.prepare(`SELECT doc FROM ${this.opts.table} WHERE ${this.opts.keyColumn} = ?`).pluck().get(this.key(key)) as string | undefined
    return text == null ? undefined : JSON.parse(text) as T
  }

  /** The stored document; unknown key: 404. */
  get (key: string): T {
    const doc = this.tryGet(key)
    if (doc == null) throw new NotFoundError(`no ${this.opts.noun} ${key}`)
    return doc
  }

  /**
   * Documents matching a MongoDB-style filter (mingo: `$eq`, `$in`, `$gt`, `$and`, `$elemMatch`,
   * dotted paths, array membership, …), oldest first, at most `limit`. The filter is matched
   * against the collection's view of each document. Bad filters, unknown operators and
   * code-executing operators are 400s.
   */
  find (filter: unknown = {}, opts: FindOptions = {}): T[] {
    const limit = opts.limit ?? DOCUMENT_LIMITS.defaultLimit
    if (!Number.isInteger(limit) || limit < 1 || limit > DOCUMENT_LIMITS.maxLimit) {
      throw new ValidationError(`limit must be an integer from 1 to ${DOCUMENT_LIMITS.maxLimit}`, [{ field: 'limit', message: `an integer from 1 to ${DOCUMENT_LIMITS.maxLimit}` }])
    }
    const criteria = checkFilter(filter)
    let query: Query
    try {
      query = new Query(criteria, QUERY_OPTIONS)
    } catch (err) {
      throw mingoError('invalid filter', err)
    }
    const out: T[] = []
    const rows = this.db.prepare(`SELECT doc FROM ${this.opts.table} ORDER BY created_at, rowid`).pluck().iterate() as IterableIterator<string>
    for (const text of rows) {
      const doc = JSON.parse(text) as T
      let match: boolean
      try {
        match = query.test(this.opts.view != null ? this.opts.view(doc) : doc)
      } catch (err) {
        throw mingoError('invalid filter', err)
      }
      if (match) out.push(doc)
      if (out.length >= limit) break
    }
    return out
  }

  /**
   * Applies a MongoDB-style update document (`$set`, `$unset`, `$inc`, `$push`, `$addToSet`,
   * `$pull`, … through mingo) to one document, atomically. Refused with 400, nothing stored:
   * a document that is not made only of operators, an unknown or code-executing operator,
   * a change to the key or another immutable field, a result the schema rejects.
   */
  update (key: string, modifier: unknown): UpdateOutcome<T> {
    const mod = checkUpdate(modifier, this.writeOnly)
    const k = this.key(key)
    return this.db.transaction((): UpdateOutcome<T> => {
      const before = this.get(k)
      const next = structuredClone(before)
      let modified: string[]
      try {
        modified = applyUpdate(next, mod as Modifier<T>, undefined, undefined, { cloneMode: 'deep' })
      } catch (err) {
        throw mingoError('invalid update', err)
      }
      if (modified.length === 0) return { doc: before, modified }
      for (const field of this.immutable) {
        if (JSON.stringify(next[field]) !== JSON.stringify(before[field])) {
          const what = field === this.opts.keyField ? 'is the primary key' : 'is set by the registry'
          throw new ValidationError(`invalid update: ${field} ${what} and cannot be changed`, [{ field, message: 'cannot be changed' }])
        }
      }
      const valid = this.validate(next, `invalid update: the ${this.opts.noun} would be invalid`)
      this.db.prepare(`UPDATE ${this.opts.table} SET doc = ?, updated_at = ? WHERE ${this.opts.keyColumn} = ?`)
        .run(JSON.stringify(valid), Date.now(), k)
      return { doc: valid, modified }
    }).immediate()
  }

  /** Deletes one document; unknown key: 404. Returns the document deleted. */
  delete (key: string): T {
    const k = this.key(key)
    return this.db.transaction((): T => {
      const doc = this.get(k)
      this.db.prepare(`DELETE FROM ${this.opts.table} WHERE ${this.opts.keyColumn} = ?`).run(k)
      return doc
    }).immediate()
  }

  /** How many documents the collection holds. */
  count (): number {
    return this.db.prepare(`SELECT COUNT(*) FROM ${this.opts.table}`).pluck().get() as number
  }
}

function isPlainObject (v: unknown): v is JsonDocument {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false
  const proto = Object.getPrototypeOf(v)
  return proto === Object.prototype || proto === null
}

function mingoError (what: string, err: unknown): ValidationError {
  // mingo raises MingoError for unknown operators and malformed expressions; anything else
  // thrown while compiling or evaluating comes from the client's document as well
  const message = err instanceof MingoError || err instanceof Error ? err.message : String(err)
  return new ValidationError(`${what}: ${message}`, [{ field: '(root)', message }])
}

/** Throws when `value` (a filter or update document) is too large or too deep. */
function checkBounds (value: unknown, what: string): void {
  const text = JSON.stringify(value)
  const bytes = Buffer.byteLength(text ?? '')
  if (bytes > DOCUMENT_LIMITS.maxRequestBytes) throw new ValidationError(`${what} is ${bytes} bytes as JSON; the limit is ${DOCUMENT_LIMITS.maxRequestBytes}`, [{ field: '(root)', message: `over ${DOCUMENT_LIMITS.maxRequestBytes} bytes` }])
  if (depth(value, 0) > DOCUMENT_LIMITS.maxDepth) throw new ValidationError(`${what} nests deeper than ${DOCUMENT_LIMITS.maxDepth} levels`, [{ field: '(root)', message: `deeper than ${DOCUMENT_LIMITS.maxDepth} levels` }])
}

/** Nesting depth, giving up (returning a value over the limit) as soon as it passes the limit. */
function depth (value: unknown, d: number): number {
  if (d > DOCUMENT_LIMITS.maxDepth) return d
  if (value === null || typeof value !== 'object') return d
  let max = d + 1
  for (const v of Object.values(value)) {
    max = Math.max(max, depth(v, d + 1))
    if (max > DOCUMENT_LIMITS.maxDepth) return max
  }
  return max
}

/** Refuses code-executing operators and prototype keys anywhere in a client document. */
function checkKeysDeep (value: unknown, what: string, path: string[] = []): void {
  if (value === null || typeof value !== 'object') return
  for (const [k, v] of Object.entries(value)) {
    const here = [...path, k]
    if (CODE_OPERATORS.has(k)) throw new ValidationError(`${what}: ${k} runs code and is not allowed`, [{ field: here.join('.'), message: `${k} is not allowed` }])
    if (k.split('.').some(s => FORBIDDEN_SEGMENTS.has(s))) throw new ValidationError(`${what}: the key ${JSON.stringify(k)} is not allowed`, [{ field: here.join('.'), message: 'not allowed' }])
    checkKeysDeep(v, what, here)
  }
}

/** Checks a filter document's shape and bounds; returns it as mingo criteria. */
export function checkFilter (filter: unknown): JsonDocument {
  if (filter === undefined || filter === null) return {}
  if (!isPlainObject(filter)) throw new ValidationError('invalid filter: a filter is a JSON object such as {"field": "value", "tags": {"$in": ["a"]}}', [{ field: '(root)', message: 'expected an object' }])
  checkBounds(filter, 'filter')
  checkKeysDeep(filter, 'invalid filter')
  return filter
}

/** Checks an update document: only `$`-operators, each over an object of paths; no code, no prototype paths. */
export function checkUpdate (modifier: unknown, writeOnly: ReadonlySet<string> = new Set()): JsonDocument {
  if (!isPlainObject(modifier)) throw new ValidationError('invalid update: an update is a JSON object of update operators such as {"$set": {"field": "value"}}', [{ field: '(root)', message: 'expected an object' }])
  checkBounds(modifier, 'update')
  checkKeysDeep(modifier, 'invalid update')
  const ops = Object.keys(modifier)
  if (ops.length === 0) throw new ValidationError('invalid update: no update operators', [{ field: '(root)', message: 'expected at least one operator such as $set' }])
  const fields = ops.filter(k => !k.startsWith('$'))
  if (fields.length > 0) {
    throw new ValidationError(`invalid update: an update document is made of update operators ($set, $unset, $inc, $push, $addToSet, $pull, …); ${fields.map(f => JSON.stringify(f)).join(', ')} ${fields.length === 1 ? 'is' : 'are'} not (replacing a whole document is not supported)`,
      fields.map(f => ({ field: f, message: 'not an update operator' })))
  }
  for (const op of ops) {
    const paths = modifier[op]
    if (!isPlainObject(paths)) throw new ValidationError(`invalid update: ${op} takes an object of field paths`, [{ field: op, message: 'expected an object of field paths' }])
    for (const [path, value] of Object.entries(paths)) {
      const targets = op === '$rename' && typeof value === 'string' ? [path, value] : [path]
      for (const target of targets) {
        if (target.split('.').some(s => s === '')) throw new ValidationError(`invalid update: ${op} path ${JSON.stringify(target)} has an empty segment`, [{ field: `${op}.${path}`, message: 'empty path segment' }])
        const top = target.split('.')[0]
        if (writeOnly.has(top) && op !== '$set' && op !== '$unset') {
          throw new ValidationError(`invalid update: ${top} can only be replaced ($set) or removed ($unset)`, [{ field: `${op}.${path}`, message: `${op} is not allowed on ${top}` }])
        }
      }
    }
  }
  return modifier
}

/**
 * Refuses stored keys that would be unreachable or ambiguous to filters and updates: keys
 * starting with `$`, prototype names, and (outside write-only fields) keys containing dots.
 */
function checkDocumentKeys (doc: unknown, writeOnly: ReadonlySet<string>, context: string): void {
  const walk = (value: unknown, path: string[], dotsAllowed: boolean): void => {
    if (value === null || typeof value !== 'object') return
    if (path.length > DOCUMENT_LIMITS.maxDepth) throw new ValidationError(`${context}: nests deeper than ${DOCUMENT_LIMITS.maxDepth} levels`, [{ field: path.join('.'), message: 'too deep' }])
    for (const [k, v] of Object.entries(value)) {
      const here = [...path, k]
      const bad = k.startsWith('$') ? 'keys may not start with "$"' : FORBIDDEN_SEGMENTS.has(k) ? 'reserved key' : !dotsAllowed && k.includes('.') ? 'keys may not contain "."' : undefined
      if (bad != null && !Array.isArray(value)) throw new ValidationError(`${context}: ${here.join('.')}: ${bad}`, [{ field: here.join('.'), message: bad }])
      walk(v, here, dotsAllowed || (path.length === 0 && writeOnly.has(k)))
    }
  }
  walk(doc, [], false)
}
