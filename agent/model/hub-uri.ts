/**
 * Names on the hub: `hf://ORG/REPO[@REVISION][/PATH]` parsed and validated, and the checks on repo names,
 * revisions, repo paths, commits and SHA-256s that the hub modules apply before a name reaches a URL or a path.
 */
import { ValidationError } from '../errors.ts'

export interface HubUri { repo: string, revision: string, path?: string }

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/
const REF_SEGMENT = /^[A-Za-z0-9._-]+$/
export const COMMIT = /^[0-9a-f]{40}$/
export const SHA256 = /^[0-9a-f]{64}$/

function checkName (part: string, what: string, uri: string): void {
  if (!NAME.test(part) || part.length > 96 || part.endsWith('.git')) {
    throw new ValidationError(`${uri}: the ${what} "${part}" is not a hub name (letters, digits, '.', '_' and '-', starting with a letter or digit)`)
  }
}

function decode (s: string, uri: string): string {
  try {
    return decodeURIComponent(s)
  } catch {
    throw new ValidationError(`${uri}: "${s}" is not valid percent-encoding`)
  }
}

/** A repo path safe to join under a directory: relative, '/'-separated, no '.', '..' or empty segments, no backslash or control characters. */
export function isSafeRepoPath (path: string): boolean {
  if (path === '' || path.length > 1024 || /[\\\u0000-\u001f]/.test(path)) return false
  return path.split('/').every(s => s !== '' && s !== '.' && s !== '..')
}

export function checkRevision (revision: string, uri: string): void {
  if (revision.length > 255 || !revision.split('/').every(s => REF_SEGMENT.test(s) && s !== '.' && s !== '..')) {
    throw new ValidationError(`${uri}: the revision "${revision}" is not a branch, tag or commit name`)
  }
}

/** Parses `hf://ORG/REPO[@REVISION][/PATH]` (revision default 'main'; a revision with slashes is written percent-encoded, `@refs%2Fpr%2F1`). */
export function parseHubUri (uri: string): HubUri {
  const m = /^hf:\/\/(.*)$/i.exec(uri)
  if (m === null) throw new ValidationError(`"${uri}" is not a hub model: write hf://ORG/REPO[@REVISION][/PATH]`)
  if (/[?#]/.test(m[1])) throw new ValidationError(`${uri}: a hub model URI has no query or fragment`)
  const parts = m[1].split('/')
  if (parts.length < 2 || parts[0] === '' || parts[1] === '') throw new ValidationError(`${uri}: write hf://ORG/REPO[@REVISION][/PATH], e.g. hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF`)
  const at = parts[1].indexOf('@')
  const org = parts[0]
  const name = at < 0 ? parts[1] : parts[1].slice(0, at)
  checkName(org, 'organisation', uri)
  checkName(name, 'repo name', uri)
  let revision = 'main'
  if (at >= 0) {
    revision = decode(parts[1].slice(at + 1), uri)
    if (revision === '') throw new ValidationError(`${uri}: the revision after '@' is empty`)
    checkRevision(revision, uri)
  }
  const rest = parts.slice(2)
  while (rest.length > 0 && rest[rest.length - 1] === '') rest.pop()
  if (rest.length === 0) return { repo: `${org}/${name}`, revision }
  const path = rest.map(s => decode(s, uri)).join('/')
  if (!isSafeRepoPath(path)) throw new ValidationError(`${uri}: the path "${path}" is not a plain relative path in the repo`)
  return { repo: `${org}/${name}`, revision, path }
}

export function checkRepo (repo: string): void {
  const parts = repo.split('/')
  if (parts.length !== 2) throw new ValidationError(`"${repo}" is not a hub repo: write ORG/NAME`)
  checkName(parts[0], 'organisation', repo)
  checkName(parts[1], 'repo name', repo)
}
