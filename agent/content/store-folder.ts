/**
 * The content store's folder: `<dir>/<md5>` for a complete file, `<dir>/<md5>.part` for a partial one
 * (preallocated to its full size, chunks read and written at their offsets), imports linked in under a
 * temporary name and renamed. Paths and bytes only: what is held is the store's business (./store.ts).
 */
import { randomBytes } from 'node:crypto'
import { closeSync, ftruncateSync, mkdirSync, openSync, rmSync } from 'node:fs'
import * as fsp from 'node:fs/promises'
import { join } from 'node:path'
import { ValidationError } from '../errors.ts'
import { ContentNotFoundError } from './errors.ts'
import type { Item } from './store-table.ts'
import type { Manifest } from './types.ts'

/** Bytes of a chunk: the chunk size, or the remainder for the last chunk. */
export function chunkLength (m: Manifest, index: number): number {
  return Math.min(m.chunkSize, m.size - index * m.chunkSize)
}

export function isMissing (err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code
  return code === 'ENOENT' || code === 'ENOTDIR'
}

export class StoreFolder {
  readonly dir: string

  /** Creates the folder when missing. */
  constructor (dir: string) {
    this.dir = dir
    mkdirSync(this.dir, { recursive: true })
  }

  finalPath (md5: string): string { return join(this.dir, md5) }
  partPath (md5: string): string { return join(this.dir, `${md5}.part`) }

  /** A new partial file of `size` bytes (replacing any). */
  allocate (md5: string, size: number): void {
    const part = this.partPath(md5)
    const fd = openSync(part, 'w')
    try {
      ftruncateSync(fd, size)
    } finally {
      closeSync(fd)
    }
  }

  /** Chunk `index` of an item's file, read from disk; undefined when the file is not there. */
  async readChunk (item: Item, index: number): Promise<Uint8Array | undefined> {
    const md5 = item.md5
    const path = item.state === 'complete' ? this.finalPath(md5) : this.partPath(md5)
    let fh: fsp.FileHandle
    try {
      fh = await fsp.open(path, 'r')
    } catch (err) {
      if (isMissing(err)) return undefined
      throw err
    }
    try {
      const length = chunkLength(item.manifest, index)
      const buf = Buffer.alloc(length)
      let got = 0
      while (got < length) {
        const { bytesRead } = await fh.read(buf, got, length - got, index * item.manifest.chunkSize + got)
        if (bytesRead === 0) throw new ContentNotFoundError(`chunk ${index} of ${md5} could not be read whole (the file is shorter than its manifest)`)
        got += bytesRead
      }
      return new Uint8Array(buf.buffer, buf.byteOffset, buf.length)
    } finally {
      await fh.close()
    }
  }

  /** Writes a chunk of a partial file at its offset. */
  async writeChunk (md5: string, index: number, chunkSize: number, bytes: Uint8Array): Promise<void> {
    const length = bytes.length
    const fh = await fsp.open(this.partPath(md5), 'r+')
    try {
      let done = 0
      while (done < length) {
        const { bytesWritten } = await fh.write(bytes, done, length - done, index * chunkSize + done)
        done += bytesWritten
      }
    } finally {
      await fh.close()
    }
  }

  /**
   * Puts the file at `path` in the folder as the complete file of `manifest`: hard-linked (copied when linking
   * fails, `onCopy` told why) under a temporary name, its size checked, renamed. Returns whether it was linked.
   */
  async linkIn (path: string, manifest: Manifest, signal: AbortSignal | undefined, onCopy: (err: unknown) => void): Promise<boolean> {
    const tmp = join(this.dir, `.import-${randomBytes(8).toString('hex')}.tmp`)
    let linked = true
    try {
      try {
        await fsp.link(path, tmp)
      } catch (err) {
        linked = false
        onCopy(err)
        await fsp.copyFile(path, tmp)
      }
      const size = (await fsp.stat(tmp)).size
      if (size !== manifest.size) throw new ValidationError(`${path} changed while it was added (${manifest.size} bytes hashed, ${size} stored)`)
      signal?.throwIfAborted()
      await fsp.rename(tmp, this.finalPath(manifest.md5))
    } catch (err) {
      await fsp.rm(tmp, { force: true })
      throw err
    }
    return linked
  }

  /** A partial file renamed to its final name. */
  async promote (md5: string): Promise<void> {
    await fsp.rename(this.partPath(md5), this.finalPath(md5))
  }

  removeFinal (md5: string): void { rmSync(this.finalPath(md5), { force: true }) }
  removePartial (md5: string): void { rmSync(this.partPath(md5), { force: true }) }
}
