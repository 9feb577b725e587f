/**
 * Opening the content store: its table read once and reconciled with its folder. Rows whose file is gone
 * (or changed size, or whose manifest does not parse) are dropped, a partial whose verified rename was cut
 * short by a crash is taken as complete, and files without a row are deleted.
 */
import { readdirSync, rmSync, statSync } from 'node:fs'
import type { Stats } from 'node:fs'
import { join } from 'node:path'
import { bitmapBytes, fullBitmap, popcount } from './bitmap.ts'
import { storedManifest } from './manifest.ts'
import type { StoreIndex } from './store-index.ts'
import type { Item, SqlRow } from './store-table.ts'
import type { Manifest } from './types.ts'

function fileSize (path: string): number | undefined {
  let st: Stats
  try {
    st = statSync(path)
  } catch {
    return undefined
  }
  return st.isFile() ? st.size : undefined
}

/** Fills the index from the table's rows, reconciled with the folder. */
export function openIndex (ix: StoreIndex): void {
  for (const r of ix.table.rows()) {
    const item = fromRow(ix, r)
    if (item === undefined) {
      ix.table.delete(r.md5)
      continue
    }
    ix.items.set(item.md5, item)
    ix.bytes += item.manifest.size
  }
  const known = new Set<string>()
  for (const item of ix.items.values()) known.add(item.state === 'complete' ? item.md5 : `${item.md5}.part`)
  for (const name of readdirSync(ix.folder.dir)) {
    if (known.has(name)) continue
    const path = join(ix.folder.dir, name)
    try {
      if (!statSync(path).isFile()) {
        ix.log?.warn({ path }, 'content store: not a file, left alone')
        continue
      }
      rmSync(path, { force: true })
      ix.log?.warn({ path }, 'content store: stray file deleted')
    } catch (err) {
      ix.log?.warn({ path, err: (err as Error).message }, 'content store: stray file could not be deleted')
    }
  }
}

/** The item of a row whose file is there (size checked), else undefined (the row is dropped). */
function fromRow (ix: StoreIndex, r: SqlRow): Item | undefined {
  let manifest: Manifest
  try {
    manifest = storedManifest(r.manifest)
  } catch (err) {
    ix.log?.warn({ md5: r.md5, err: (err as Error).message }, 'content store: row with a bad manifest dropped')
    return undefined
  }
  const chunks = manifest.chunks.length
  if (manifest.md5 !== r.md5 || r.bitmap.length !== bitmapBytes(chunks)) {
    ix.log?.warn({ md5: r.md5 }, 'content store: row that does not match its manifest dropped')
    return undefined
  }
  let state = r.state
  let bitmap: Uint8Array = new Uint8Array(r.bitmap)
  if (chunks % 8 !== 0) bitmap[bitmap.length - 1] &= (1 << (chunks % 8)) - 1
  const finalSize = fileSize(ix.folder.finalPath(r.md5))
  if (state === 'partial' && fileSize(ix.folder.partPath(r.md5)) !== manifest.size) {
    // a crash between the rename of a verified partial and the table's update leaves the complete file
    if (finalSize === manifest.size) {
      state = 'complete'
      bitmap = fullBitmap(chunks)
      ix.table.setComplete(r.md5, bitmap, r.last_used)
    } else {
      ix.log?.warn({ md5: r.md5 }, 'content store: partial file gone, row dropped')
      return undefined
    }
  } else if (state === 'complete' && finalSize !== manifest.size) {
    ix.log?.warn({ md5: r.md5, size: finalSize }, 'content store: file gone or changed size, row dropped')
    return undefined
  }
  return {
    md5: r.md5,
    manifest,
    manifestBytes: new Uint8Array(r.manifest),
    bitmap,
    have: state === 'complete' ? chunks : popcount(bitmap),
    state,
    name: r.name,
    pinned: r.pinned === 1,
    lastUsed: r.last_used,
    savedLastUsed: r.last_used,
    addedAt: r.added_at
  }
}
