/**
 * One file of a hub repo at a commit, brought into the snapshot directory (hub-cache.ts's layout) with
 * http-download.ts: no request when a verified copy is there, the hub's 4xx in operator words, the size and
 * SHA-256 (the listing's, the hub's X-Linked-Etag) checked before the .part is renamed into place.
 */
import { rename, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { ValidationError } from '../errors.ts'
import { formatBytes } from './display.ts'
import { hashFile, statOrNull } from './file-hash.ts'
import { downloadToPart } from './http-download.ts'
import { context, enc, encPath, headers, revisionCommit, statusError, statusOf } from './hub-api.ts'
import type { Ctx, HubOptions } from './hub-api.ts'
import { isOffline, readRef, readTree, repoDir, writeAtomic } from './hub-cache.ts'
import type { HubFile } from './hub-pick.ts'
import { COMMIT, SHA256, checkRepo, checkRevision, isSafeRepoPath } from './hub-uri.ts'
import { withLock } from './lock.ts'
import { ModelSourceError } from './source-error.ts'

export interface HubDownloadOptions extends HubOptions {
  /** refuse files larger than this; default no limit */
  maxBytes?: number
  onProgress?: (p: { receivedBytes: number, totalBytes: number | null }) => void
  /** expected SHA-256 (hex), e.g. the tree API's lfs.oid; the `X-Linked-Etag` the hub sends is checked as well */
  sha256?: string
  /** expected size in bytes */
  size?: number
  /** use only what is on disk (default: env HF_HUB_OFFLINE) */
  offline?: boolean
}
export interface HubDownloaded { path: string, commit: string, sizeBytes: number, sha256: string, downloaded: boolean }

function linkedSha (v: string | null): string | undefined {
  const s = v?.replace(/^W\//, '').replace(/"/g, '').trim().toLowerCase()
  return s !== undefined && SHA256.test(s) ? s : undefined
}

/** Brings one file of `commit` into the snapshot directory (no request when it is already there); verifies LFS files' SHA-256. */
export async function fetchFile (ctx: Ctx, destDir: string, repo: string, commit: string, file: HubFile, opts: HubDownloadOptions & { offline: boolean }): Promise<HubDownloaded> {
  const path = join(repoDir(destDir, repo), commit, ...file.path.split('/'))
  const what = `download of ${repo}/${file.path}@${commit.slice(0, 12)}`
  const expected = opts.sha256?.toLowerCase() ?? file.sha256
  if (expected !== undefined && !SHA256.test(expected)) throw new ValidationError(`expected SHA-256 "${expected}" is not 64 hexadecimal digits`)
  const maxBytes = opts.maxBytes ?? Number.MAX_SAFE_INTEGER
  return await withLock(path, async () => {
    const have = await statOrNull(path)
    const size = opts.size ?? file.size
    if (have?.isFile() === true && (size === null || have.size === size)) {
      // only verified files are ever renamed into place: an LFS file's hash from the listing is trusted; other files
      // (and any hash the caller asks for) are hashed again, and a copy that does not match is fetched anew
      const sha = opts.sha256 === undefined && expected !== undefined ? expected : await hashFile(path, 'sha256', ctx.signal)
      if (expected === undefined || sha === expected) return { path, commit, sizeBytes: have.size, sha256: sha, downloaded: false }
    }
    if (opts.offline) throw new ModelSourceError('not_found', `${repo}/${file.path}@${commit} is not in ${destDir} and the hub is not to be asked (offline)`, { repo, commit, path: file.path })
    if (size !== null && size > maxBytes) {
      throw new ModelSourceError('too_large', `${what}: the file is ${formatBytes(size)}: the limit is ${formatBytes(maxBytes)}`, { repo, path: file.path, sizeBytes: size, maxBytes })
    }
    const url = new URL(`${ctx.endpoint}/${encPath(repo)}/resolve/${commit}/${encPath(file.path)}`)
    let linked: string | undefined
    let linkedSize: number | undefined
    let errorCode: string | null = null
    const part = `${path}.part`
    try {
      await downloadToPart(url, part, {
        maxBytes,
        signal: ctx.signal,
        attempts: ctx.attempts,
        headers: headers(ctx),
        onProgress: opts.onProgress,
        onResponse: (res, at) => {
          if (at.origin !== ctx.origin) return
          linked = linkedSha(res.headers.get('x-linked-etag')) ?? linked
          const ls = res.headers.get('x-linked-size')
          if (ls !== null && /^\d+$/.test(ls)) linkedSize = Number(ls)
          errorCode = res.headers.get('x-error-code') ?? errorCode
        }
      })
    } catch (err) {
      const status = statusOf(err)
      if (err instanceof ModelSourceError && err.reason === 'http_status' && status >= 400 && status < 500) throw statusError(ctx, status, errorCode, what, repo, commit, err)
      throw err
    }
    const sizeBytes = (await stat(part)).size
    for (const claim of [size, linkedSize]) {
      if (claim !== null && claim !== undefined && claim !== sizeBytes) {
        await rm(part, { force: true })
        throw new ModelSourceError('corrupt', `${what} is ${sizeBytes} bytes but the hub lists ${claim}`, { repo, path: file.path, expected: claim, actual: sizeBytes })
      }
    }
    const actual = await hashFile(part, 'sha256', ctx.signal)
    for (const [claim, by] of [[expected, 'the listing'], [linked, 'the hub (X-Linked-Etag)']] as const) {
      if (claim !== undefined && claim !== actual) {
        await rm(part, { force: true })
        throw new ModelSourceError('sha256_mismatch', `${what} has SHA-256 ${actual} but ${by} says ${claim}`, { repo, path: file.path, expected: claim, actual })
      }
    }
    await rename(part, path)
    return { path, commit, sizeBytes, sha256: actual, downloaded: true }
  })
}

/**
 * Downloads `path` of `repo` at `revision` to `destDir/{org}--{name}/{commit}/{path}` (see the module comment),
 * unless it is already there. The commit is asked of the hub (and remembered in refs/) unless `revision` is one.
 */
export async function downloadFile (repo: string, revision: string, path: string, destDir: string, opts: HubDownloadOptions = {}): Promise<HubDownloaded> {
  checkRepo(repo)
  checkRevision(revision, repo)
  if (!isSafeRepoPath(path)) throw new ValidationError(`"${path}" is not a plain relative path in the repo`)
  const ctx = context(opts)
  const offline = isOffline(opts.offline)
  const dir = repoDir(destDir, repo)
  let commit = await readRef(dir, revision)
  if (!offline && !COMMIT.test(revision)) {
    try {
      commit = (await revisionCommit(ctx, repo, revision)).sha
      await writeAtomic(join(dir, 'refs', enc(revision)), commit)
    } catch (err) {
      if (!(err instanceof ModelSourceError && err.reason === 'network') || commit === undefined) throw err
    }
  }
  if (commit === undefined) throw new ModelSourceError('not_found', `${repo}@${revision} is not in ${destDir} and the hub is not to be asked (offline)`, { repo, revision })
  const known = (await readTree(dir, repo, commit))?.find(f => f.path === path)
  return await fetchFile(ctx, destDir, repo, commit, { path, size: opts.size ?? known?.size ?? null, sha256: known?.sha256 }, { ...opts, offline })
}
