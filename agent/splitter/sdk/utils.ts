import { createWriteStream } from 'node:fs'
import { copyFile, mkdir, stat } from 'node:fs/promises'
import { dirname, isAbsolute } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'
import type { ReadableStream as WebReadable } from 'node:stream/web'
import { md5File } from '../../model/source.ts'

const CHUNK = 4 * 1024 * 1024

/** Downloads a URL (or copies a local path / file:// URL) to a file, creating directories (seed: FileDownloader). */
export class FileDownloader {
  /** true on success, false on failure (the reason goes to `lastError`) */
  lastError: string | null = null

  async download (url: string, targetPath: string): Promise<boolean> {
    this.lastError = null
    try {
      await mkdir(dirname(targetPath), { recursive: true })
      if (url.startsWith('file://') || isAbsolute(url)) {
        await copyFile(url.startsWith('file://') ? fileURLToPath(url) : url, targetPath)
        return true
      }
      const res = await fetch(url, { signal: AbortSignal.timeout(30 * 60_000) })
      if (!res.ok || res.body == null) throw new Error(`HTTP ${res.status}`)
      // written in 4 MiB chunks at most
      await pipeline(Readable.fromWeb(res.body as unknown as WebReadable<Uint8Array>, { highWaterMark: CHUNK }), createWriteStream(targetPath, { highWaterMark: CHUNK }))
      return true
    } catch (err) {
      this.lastError = `download of ${url} failed: ${(err as Error).message}`
      return false
    }
  }
}

/** MD5 of a model or layer file, streamed (seed: LayerHash). */
export class LayerHash {
  /** the hex digest, or null when the file is missing or unreadable */
  async getHash (filePath: string): Promise<string | null> {
    try {
      if (!(await stat(filePath)).isFile()) return null
      return await md5File(filePath)
    } catch {
      return null
    }
  }
}
