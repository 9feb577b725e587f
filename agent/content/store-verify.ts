/**
 * The content store's checks of fetched bytes: a chunk against its manifest (length and SHA-256) before it is
 * written, and a whole partial against its MD5 and SHA-256 before it becomes complete (a mismatch discards
 * it).
 */
import { createHash } from 'node:crypto'
import { fullBitmap } from './bitmap.ts'
import { ChunkHashError, ContentDigestError, ContentNotFoundError } from './errors.ts'
import { hashFile } from './manifest.ts'
import type { FileDigests } from './manifest.ts'
import { evict } from './store-evict.ts'
import { chunkLength } from './store-folder.ts'
import type { StoreIndex } from './store-index.ts'
import type { Item } from './store-table.ts'
import type { ContentEntry } from './types.ts'

/** ChunkHashError when `bytes` are not chunk `index` of `item` as its manifest describes it. */
export function checkChunk (item: Item, index: number, bytes: Uint8Array): void {
  const md5 = item.md5
  const length = chunkLength(item.manifest, index)
  if (bytes.length !== length) throw new ChunkHashError(md5, index, `chunk ${index} of ${md5} is ${bytes.length} bytes, not ${length}`)
  if (createHash('sha256').update(bytes).digest('base64') !== item.manifest.chunks[index]) throw new ChunkHashError(md5, index)
}

/**
 * One pass over a partial with every chunk for MD5 and SHA-256: a match renames it to its final name (then
 * evicts), a mismatch discards it (row and file) with ContentDigestError.
 */
export async function verify (ix: StoreIndex, item: Item, signal?: AbortSignal): Promise<ContentEntry> {
  const md5 = item.md5
  let d: FileDigests
  try {
    d = await hashFile(ix.folder.partPath(md5), { signal })
  } catch (err) {
    const now = ix.items.get(md5)
    if (now?.state === 'complete') return ix.entry(now)
    if (now !== item) throw new ContentNotFoundError(`${md5} was removed while it was checked`)
    throw err
  }
  const now = ix.items.get(md5)
  if (now !== item) {
    if (now?.state === 'complete') return ix.entry(now)
    throw new ContentNotFoundError(`${md5} was removed while it was checked`)
  }
  if (d.md5 !== md5 || d.sha256 !== item.manifest.sha256 || d.size !== item.manifest.size) {
    ix.drop(item)
    ix.log?.warn({ md5, got: { md5: d.md5, sha256: d.sha256, size: d.size }, adder: item.manifest.adder }, 'content store: fetched file does not match its manifest, discarded')
    ix.changed()
    throw new ContentDigestError(`the file fetched for ${md5} does not match its manifest (MD5 ${d.md5}, SHA-256 ${d.sha256}): discarded`,
      { md5, sha256: item.manifest.sha256, got: { md5: d.md5, sha256: d.sha256, size: d.size }, adder: item.manifest.adder })
  }
  await ix.folder.promote(md5)
  const after = ix.items.get(md5)
  if (after !== item) {
    // removed while it was renamed (an import's complete copy has the same bytes and stays)
    if (after?.state === 'complete') return ix.entry(after)
    ix.folder.removeFinal(md5)
    throw new ContentNotFoundError(`${md5} was removed while it was completed`)
  }
  const t = ix.now()
  item.state = 'complete'
  item.bitmap = fullBitmap(item.manifest.chunks.length)
  item.have = item.manifest.chunks.length
  item.lastUsed = t
  item.savedLastUsed = t
  ix.table.setComplete(md5, item.bitmap, t)
  ix.log?.info({ md5, size: item.manifest.size }, 'content store: file complete')
  ix.changed()
  evict(ix)
  return ix.entry(item)
}
