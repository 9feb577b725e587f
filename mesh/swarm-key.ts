import { readFileSync, writeFileSync } from 'node:fs'
import { generateKey } from '@libp2p/pnet'
import { InvalidSwarmKeyError } from './errors.ts'

/** The go-ipfs / libp2p pnet v1 swarm key file format (95 bytes). */
const HEADER = '/key/swarm/psk/1.0.0/'
const SWARM_KEY_RE = /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n([0-9a-fA-F]{64})\s*$/

/** Parses and checks a swarm key; returns the bytes `@libp2p/pnet` expects. */
export function parseSwarmKey (text: string): Uint8Array {
  const m = SWARM_KEY_RE.exec(text.trim() + '\n')
  if (m == null) {
    throw new InvalidSwarmKeyError(`not a libp2p swarm key: expected "${HEADER}", "/base16/" and 64 hex digits on three lines`)
  }
  return new TextEncoder().encode(`${HEADER}\n/base16/\n${m[1].toLowerCase()}`)
}

export function readSwarmKeyFile (path: string): Uint8Array {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new InvalidSwarmKeyError(`cannot read swarm key file ${path}: ${(err as Error).message}`, { cause: err })
  }
  try {
    return parseSwarmKey(text)
  } catch (err) {
    throw new InvalidSwarmKeyError(`${path}: ${(err as Error).message}`, { cause: err })
  }
}

/** Generates a fresh random swarm key and writes it with mode 0600. */
export function writeNewSwarmKey (path: string): void {
  const bytes = new Uint8Array(95)
  generateKey(bytes)
  writeFileSync(path, bytes, { mode: 0o600, flag: 'wx' })
}
