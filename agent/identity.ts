import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { ConfigError } from './errors.ts'

export const KEY_FILE = 'identity.key'
export const TOKEN_FILE = 'api-token'

export function ensureDataDir (dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 })
}

/** Loads the node's Ed25519 key from DIR/identity.key, creating it (0600) on first start. */
export async function loadOrCreateIdentity (dir: string): Promise<PrivateKey> {
  const path = join(dir, KEY_FILE)
  if (existsSync(path)) {
    try {
      const key = privateKeyFromProtobuf(readFileSync(path))
      if (key.type !== 'Ed25519') throw new Error(`key type ${key.type}, expected Ed25519`)
      return key
    } catch (err) {
      throw new ConfigError(`identity key ${path} is unreadable: ${(err as Error).message}`, { cause: err })
    }
  }
  const key = await generateKeyPair('Ed25519')
  writeFileSync(path, privateKeyToProtobuf(key), { mode: 0o600, flag: 'wx' })
  return key
}

/** Loads the API bearer token from DIR/api-token, creating a random one (0600) on first start. */
export function loadOrCreateToken (dir: string): string {
  const path = join(dir, TOKEN_FILE)
  if (existsSync(path)) {
    const token = readFileSync(path, 'utf8').trim()
    if (!/^[A-Za-z0-9_-]{32,256}$/.test(token)) throw new ConfigError(`API token file ${path} must hold 32-256 URL-safe characters`)
    chmodSync(path, 0o600)
    return token
  }
  const token = randomBytes(32).toString('base64url')
  writeFileSync(path, token + '\n', { mode: 0o600, flag: 'wx' })
  return token
}

/** Writes a token to DIR/api-token if none is there (used by the demo to share one token). */
export function seedToken (dir: string, token: string): void {
  const path = join(dir, TOKEN_FILE)
  if (!existsSync(path)) writeFileSync(path, token + '\n', { mode: 0o600, flag: 'wx' })
}
