/**
 * The hub's files on disk, laid out like huggingface_hub's cache: `destDir/{org}--{name}/{commit}/{path}`,
 * `refs/{revision}` (the commit a revision pointed at) and `trees/{commit}.json` (the commit's file list), written
 * atomically; and a revision's listing from the hub or, offline or when the hub cannot be reached, from there.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { enc, revisionCommit, statusOf, treeFiles } from './hub-api.ts'
import type { Ctx, RevisionInfo } from './hub-api.ts'
import type { HubFile, HubListing } from './hub-pick.ts'
import { COMMIT, SHA256, isSafeRepoPath } from './hub-uri.ts'
import { ModelSourceError } from './source-error.ts'

const CachedTree = z.object({ repo: z.string(), commit: z.string().regex(COMMIT), files: z.array(z.object({ path: z.string(), size: z.number().nullable(), sha256: z.string().regex(SHA256).optional() })) })

/** Whether to use only what is on disk: the option, else env HF_HUB_OFFLINE. */
export function isOffline (opt: boolean | undefined): boolean {
  return opt ?? /^(1|true|yes|on)$/i.test(process.env.HF_HUB_OFFLINE ?? '')
}

/** The directory of `repo` under `destDir`: `{org}--{name}`. */
export function repoDir (destDir: string, repo: string): string {
  return join(destDir, repo.replace('/', '--'))
}

/** Writes `text` to `path` by way of a temporary file and a rename: a reader never sees half a file. */
export async function writeAtomic (path: string, text: string): Promise<void> {
  await mkdir(join(path, '..'), { recursive: true })
  const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`
  await writeFile(tmp, text)
  await rename(tmp, path)
}

/** The commit `revision` points at: itself when it is a commit, else what refs/ recorded, else undefined. */
export async function readRef (dir: string, revision: string): Promise<string | undefined> {
  if (COMMIT.test(revision)) return revision
  try {
    const sha = (await readFile(join(dir, 'refs', enc(revision)), 'utf8')).trim()
    return COMMIT.test(sha) ? sha : undefined
  } catch {
    return undefined
  }
}

/** The file list recorded for `commit` in trees/, or undefined when there is none or it does not fit. */
export async function readTree (dir: string, repo: string, commit: string): Promise<HubFile[] | undefined> {
  try {
    const parsed = CachedTree.safeParse(JSON.parse(await readFile(join(dir, 'trees', `${commit}.json`), 'utf8')))
    if (!parsed.success || parsed.data.repo !== repo || parsed.data.commit !== commit || !parsed.data.files.every(f => isSafeRepoPath(f.path))) return undefined
    return parsed.data.files
  } catch {
    return undefined
  }
}

/**
 * The listing of `revision`, from the hub, or from disk when offline, when the revision is a commit already
 * listed, or when the hub cannot be reached and an earlier call recorded where the revision pointed.
 */
export async function cachedListing (ctx: Ctx, destDir: string, repo: string, revision: string, offline: boolean): Promise<HubListing> {
  const dir = repoDir(destDir, repo)
  const fromDisk = async (): Promise<HubListing | undefined> => {
    const commit = await readRef(dir, revision)
    const files = commit === undefined ? undefined : await readTree(dir, repo, commit)
    return commit !== undefined && files !== undefined ? { repo, revision, commit, files } : undefined
  }
  if (offline || COMMIT.test(revision)) {
    const hit = await fromDisk()
    if (hit !== undefined) return hit
    if (offline) throw new ModelSourceError('not_found', `${repo}@${revision} is not in ${destDir} and the hub is not to be asked (offline)`, { repo, revision })
  }
  let info: z.infer<typeof RevisionInfo>
  try {
    info = await revisionCommit(ctx, repo, revision)
  } catch (err) {
    if (err instanceof ModelSourceError && (err.reason === 'network' || statusOf(err) >= 500)) {
      const hit = await fromDisk()
      if (hit !== undefined) return hit
    }
    throw err
  }
  let files = await readTree(dir, repo, info.sha)
  if (files === undefined) {
    files = await treeFiles(ctx, repo, info.sha, info.siblings)
    await writeAtomic(join(dir, 'trees', `${info.sha}.json`), JSON.stringify({ repo, commit: info.sha, files }))
  }
  if (!COMMIT.test(revision)) await writeAtomic(join(dir, 'refs', enc(revision)), info.sha)
  return { repo, revision, commit: info.sha, files }
}
