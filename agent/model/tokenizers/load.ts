import { materializeModel } from '../source.ts'
import { ValidationError } from '../../errors.ts'
import { ByteTokenizer } from '../tokenizer.ts'
import type { TextTokenizer } from '../tokenizer.ts'
import { MAX_BUNDLE_BYTES, loadTokenizerBundle } from './bundle.ts'
import type { TokenizerSpec } from '../../registry/components.ts'

/**
 * The tokenizers this agent has loaded, by bundle MD5: a bundle is fetched (like a model file: local
 * path, file:// or http(s), MD5-checked) and built once, and shared by every block and vDAG that names it.
 * A failed load is not remembered, so a fixed file is picked up by the next request.
 */
/** Where bundles come from when the agent has a content store (agent/content/files.ts ModelFiles is one): a held, verified local copy. */
export interface BundleFiles {
  ensure: (file: { url: string, md5: string, name: string }, opts: { signal?: AbortSignal }) => Promise<{ path: string, sizeBytes: number, release: () => void }>
}

export class Tokenizers {
  private readonly cacheDir: string
  private readonly byMd5 = new Map<string, Promise<TextTokenizer>>()
  private readonly bytes = new ByteTokenizer()

  private readonly files: BundleFiles | undefined

  /** `files`: bundles come from the content store or the peers that hold them (else their URL), as model files do */
  constructor (opts: { cacheDir: string, files?: BundleFiles }) {
    this.cacheDir = opts.cacheDir
    this.files = opts.files
  }

  async get (spec: TokenizerSpec, signal?: AbortSignal): Promise<TextTokenizer> {
    if (spec.type === 'byte') return this.bytes
    let p = this.byMd5.get(spec.md5)
    if (p == null) {
      p = (async () => {
        if (this.files == null) {
          const file = await materializeModel({ url: spec.url, md5: spec.md5 }, { cacheDir: this.cacheDir, maxBytes: MAX_BUNDLE_BYTES, signal })
          return await loadTokenizerBundle(file.path)
        }
        const file = await this.files.ensure({ url: spec.url, md5: spec.md5, name: 'tokenizer bundle' }, { signal })
        try {
          if (file.sizeBytes > MAX_BUNDLE_BYTES) throw new ValidationError(`tokenizer bundle ${spec.md5} is ${file.sizeBytes} bytes (limit ${MAX_BUNDLE_BYTES})`)
          return await loadTokenizerBundle(file.path)
        } finally {
          file.release()
        }
      })()
      this.byMd5.set(spec.md5, p)
      p.catch(() => { if (this.byMd5.get(spec.md5) === p) this.byMd5.delete(spec.md5) })
    }
    return await p
  }
}
