/**
 * Models from the Hugging Face hub (`hf://ORG/REPO[@REVISION][/PATH]`), over the hub's own HTTP API:
 * `GET /api/models/{repo}/revision/{rev}` (the commit), `GET /api/models/{repo}/tree/{commit}?recursive=true`
 * (sizes and LFS SHA-256s), `GET /{repo}/resolve/{commit}/{path}` (the file; LFS files answer with a 302 to a
 * CDN, carrying `X-Linked-Etag` = the SHA-256 and `X-Linked-Size`). The token (option or `HF_TOKEN`) goes to
 * the hub only: redirects are followed by hand and it is dropped once a hop leaves the hub's origin.
 *
 * Files are stored like huggingface_hub's cache, by commit: `destDir/{org}--{name}/{commit}/{path}`, with
 * `refs/{revision}` holding the commit a revision pointed at and `trees/{commit}.json` the commit's file list,
 * so a second resolution of a complete snapshot needs no download, and none at all offline. Downloads reuse
 * http-download.ts (`.part`, Range resume, retries, size limit, progress, AbortSignal); LFS files are verified
 * against their SHA-256 and only then renamed into place.
 *
 * The pieces: hub-uri.ts (names), hub-api.ts (the API client and listings), hub-cache.ts (the layout on disk),
 * hub-fetch.ts (one file), hub-pick.ts (which files make the model); this module resolves a model with them
 * and re-exports what the rest of the agent imports from hub.ts.
 */
import { join } from 'node:path'
import { context } from './hub-api.ts'
import type { HubOptions } from './hub-api.ts'
import { cachedListing, isOffline, repoDir } from './hub-cache.ts'
import { fetchFile } from './hub-fetch.ts'
import { pickHubFiles } from './hub-pick.ts'
import { parseHubUri } from './hub-uri.ts'
import { aborted, isAborted } from './source-error.ts'

export { GGUF_PREFERENCE, ONNX_PREFERENCE, ONNX_SIDE_FILES, ggufQuant, pickHubFiles } from './hub-pick.ts'
export type { HubFile, HubListing, HubPick } from './hub-pick.ts'
export { DEFAULT_HF_ENDPOINT, MAX_API_BYTES, listFiles } from './hub-api.ts'
export type { HubOptions } from './hub-api.ts'
export { downloadFile } from './hub-fetch.ts'
export type { HubDownloadOptions, HubDownloaded } from './hub-fetch.ts'
export { isSafeRepoPath, parseHubUri } from './hub-uri.ts'
export type { HubUri } from './hub-uri.ts'

export interface ResolveHubOptions extends HubOptions {
  destDir: string
  /** GGUF quantization ('q4_k_m', 'Q8_0', …, matched case-insensitively) or ONNX dtype ('fp32', 'fp16', 'q4', 'int8', 'quantized', 'q4f16', …) */
  variant?: string
  /** a model file of the repo by path (or base name) */
  file?: string
  maxBytes?: number
  offline?: boolean
  onProgress?: (p: { file: string, receivedBytes: number, totalBytes: number | null }) => void
}

/** A model made available from the hub. `files.model` is the model file (the first shard of a split GGUF); every other file is keyed by its repo path; `sha256` has the same keys. */
export interface HubModel {
  kind: 'gguf' | 'onnx'
  repo: string
  revision: string
  commit: string
  /** the quantization or dtype picked, e.g. 'Q4_K_M' or 'fp16' */
  variant: string
  /** the snapshot directory: every file lies at join(dir, repoPath) */
  dir: string
  /** repo path of the model file */
  modelFile: string
  files: { model: string } & Record<string, string>
  sha256: { model: string } & Record<string, string>
  sizeBytes: number
  /** whether this call downloaded anything */
  downloaded: boolean
}

/**
 * Makes a hub model available on disk. `hf://ORG/REPO[@REV][/PATH]`: a PATH naming a file fetches that file (a
 * folder narrows the search); otherwise a repo with `.gguf` files gives one quantization (`variant`, `file`, else
 * Q4_K_M, Q4_0, Q4_1, Q8_0, else the smallest; a split GGUF brings all its shards), and an ONNX export gives one
 * dtype of its model (`variant` fp32 (default), fp16, q4, int8/quantized, q4f16, …) with its external data files
 * and the side files (config, tokenizer, chat template) the repo has. Nothing is downloaded that is already in
 * the snapshot; offline (option or HF_HUB_OFFLINE), or when the hub cannot be reached, the snapshot a revision
 * last pointed at is used without any request.
 */
export async function resolveHubModel (uri: string, opts: ResolveHubOptions): Promise<HubModel> {
  const { repo, revision, path } = parseHubUri(uri)
  const ctx = context(opts)
  const offline = isOffline(opts.offline)
  const listing = await cachedListing(ctx, opts.destDir, repo, revision, offline)
  const pick = pickHubFiles(listing, { path, variant: opts.variant, file: opts.file })
  const files: Record<string, string> = {}
  const sha256: Record<string, string> = {}
  let sizeBytes = 0
  let downloaded = false
  for (const f of [pick.model, ...pick.extras]) {
    if (isAborted(ctx.signal)) throw aborted(`resolution of ${uri}`, ctx.signal)
    const got = await fetchFile(ctx, opts.destDir, repo, listing.commit, f, {
      maxBytes: opts.maxBytes,
      offline,
      onProgress: opts.onProgress === undefined ? undefined : p => opts.onProgress?.({ file: f.path, ...p })
    })
    const key = f === pick.model ? 'model' : f.path
    files[key] = got.path
    sha256[key] = got.sha256
    sizeBytes += got.sizeBytes
    downloaded ||= got.downloaded
  }
  return {
    kind: pick.kind,
    repo,
    revision,
    commit: listing.commit,
    variant: pick.variant,
    dir: join(repoDir(opts.destDir, repo), listing.commit),
    modelFile: pick.model.path,
    files: files as HubModel['files'],
    sha256: sha256 as HubModel['sha256'],
    sizeBytes,
    downloaded
  }
}
