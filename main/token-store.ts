import { closeSync, fstatSync, mkdirSync, openSync, readSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { dirname } from 'node:path'
import type { SafeStorage } from 'electron'
import type { Log } from './security.ts'

/** The parts of Electron's safeStorage the store uses (getSelectedStorageBackend exists on Linux only). */
export type SafeStorageLike = Pick<SafeStorage, 'isEncryptionAvailable' | 'encryptString' | 'decryptString'> & {
  getSelectedStorageBackend?: () => string
}

/** Refuse to read a token file larger than this (a full store is well under it). */
export const MAX_TOKEN_FILE_BYTES = 2 * 1024 * 1024
/** At most this many agents' tokens are kept. */
export const MAX_ORIGINS = 256

/** An origin that is not an http(s) origin. */
export class TokenOriginError extends Error {
  constructor (origin: string) {
    super(`tokens are stored per http(s) agent origin, got ${JSON.stringify(origin)}`)
    this.name = 'TokenOriginError'
  }
}

/** The store already holds MAX_ORIGINS tokens. */
export class TokenStoreFullError extends Error {
  constructor () {
    super(`the token store already holds ${MAX_ORIGINS} agents' tokens; clear some first`)
    this.name = 'TokenStoreFullError'
  }
}

interface TokenFile {
  version: 1
  /** origin → base64 of safeStorage.encryptString(token) */
  tokens: Record<string, string>
}

export interface TokenStoreOptions {
  safeStorage: SafeStorageLike
  /** e.g. <userData>/tokens.json */
  file: string
  /** process.platform by default; decides whether Linux's 'basic_text' backend is in use */
  platform?: NodeJS.Platform
  log?: Log
}

/** "http://127.0.0.1:7700/x" → "http://127.0.0.1:7700"; throws TokenOriginError for anything not http(s). */
export function agentOrigin (url: string): string {
  let u: URL
  try { u = new URL(url) } catch { throw new TokenOriginError(url) }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new TokenOriginError(url)
  return u.origin
}

/**
 * API tokens per agent origin. With OS-backed encryption (Keychain, DPAPI,
 * libsecret/kwallet) a token is encrypted with safeStorage and kept base64 in
 * a JSON file (0600) under the app's userData. Without it the token lives in
 * memory for this run only: it is never written in plaintext. On Linux,
 * safeStorage's 'basic_text' backend (no keyring: a fixed key in Chromium's
 * source) counts as unavailable.
 */
export class TokenStore {
  readonly persistent: boolean
  private readonly opts: TokenStoreOptions
  private readonly memory = new Map<string, string>()
  private readonly log: Log

  constructor (opts: TokenStoreOptions) {
    this.opts = opts
    this.log = opts.log ?? (() => {})
    const platform = opts.platform ?? process.platform
    const weak = platform === 'linux' && opts.safeStorage.getSelectedStorageBackend?.() === 'basic_text'
    this.persistent = opts.safeStorage.isEncryptionAvailable() && !weak
    if (!this.persistent) this.log(`no OS-backed encryption for tokens${weak ? ' (only the basic_text backend)' : ''}: tokens are kept in memory for this run only`)
  }

  get (url: string): string | null {
    const origin = agentOrigin(url)
    if (!this.persistent) return this.memory.get(origin) ?? null
    const sealed = this.read().tokens[origin]
    if (sealed == null) return null
    try {
      return this.opts.safeStorage.decryptString(Buffer.from(sealed, 'base64'))
    } catch (err) {
      // e.g. the keyring was reset: the token is lost, the user enters it again
      this.log(`the stored token for ${origin} cannot be decrypted: ${(err as Error).message}`)
      return null
    }
  }

  set (url: string, token: string): void {
    const origin = agentOrigin(url)
    if (!this.persistent) {
      if (!this.memory.has(origin) && this.memory.size >= MAX_ORIGINS) throw new TokenStoreFullError()
      this.memory.set(origin, token)
      return
    }
    const file = this.read()
    if (file.tokens[origin] == null && Object.keys(file.tokens).length >= MAX_ORIGINS) throw new TokenStoreFullError()
    file.tokens[origin] = this.opts.safeStorage.encryptString(token).toString('base64')
    this.write(file)
  }

  clear (url: string): void {
    const origin = agentOrigin(url)
    this.memory.delete(origin)
    if (!this.persistent) return
    const file = this.read()
    if (file.tokens[origin] == null) return
    delete file.tokens[origin]
    this.write(file)
  }

  /** The file's tokens; a missing, oversized or malformed file reads as empty (and is replaced on the next write). */
  private read (): TokenFile {
    const empty = (): TokenFile => ({ version: 1, tokens: {} })
    let text: string
    try {
      const fd = openSync(this.opts.file, 'r')
      try {
        const size = fstatSync(fd).size
        if (size > MAX_TOKEN_FILE_BYTES) {
          this.log(`token file ${this.opts.file} is ${size} bytes (more than ${MAX_TOKEN_FILE_BYTES}): ignored`)
          return empty()
        }
        // read at most the bound even if the file grows meanwhile
        const buf = Buffer.alloc(size)
        let got = 0
        while (got < size) {
          const n = readSync(fd, buf, got, size - got, got)
          if (n === 0) break
          got += n
        }
        text = buf.subarray(0, got).toString('utf8')
      } finally { closeSync(fd) }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log(`token file ${this.opts.file} unreadable: ${(err as Error).message}`)
      return empty()
    }
    try {
      const data = JSON.parse(text) as Partial<TokenFile>
      if (data.version !== 1 || data.tokens == null || typeof data.tokens !== 'object' || Array.isArray(data.tokens)) throw new Error('not a version 1 token file')
      const tokens: Record<string, string> = {}
      for (const [origin, sealed] of Object.entries(data.tokens)) if (typeof sealed === 'string') tokens[origin] = sealed
      return { version: 1, tokens }
    } catch (err) {
      this.log(`token file ${this.opts.file} is malformed (${(err as Error).message}): ignored`)
      return empty()
    }
  }

  /** Writes a new file beside the old one (0600 from creation), then renames it over: never a half-written store. */
  private write (file: TokenFile): void {
    mkdirSync(dirname(this.opts.file), { recursive: true, mode: 0o700 })
    const tmp = `${this.opts.file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`
    try {
      writeFileSync(tmp, JSON.stringify(file) + '\n', { mode: 0o600, flag: 'wx' })
      renameSync(tmp, this.opts.file)
    } catch (err) {
      rmSync(tmp, { force: true })
      throw err
    }
  }
}
