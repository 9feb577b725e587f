import { materializeModel } from '../source.ts'
import { ByteTokenizer } from '../tokenizer.ts'
import type { TextTokenizer } from '../tokenizer.ts'
import { MAX_BUNDLE_BYTES, loadTokenizerBundle } from './bundle.ts'
import type { TokenizerSpec } from '../../registry/components.ts'

/**
 * The tokenizers this agent has loaded, by bundle MD5: a bundle is fetched (like a model file: local
 * path, file:// or http(s), MD5-checked) and built once, and shared by every block and vDAG that names it.
 * A failed load is not remembered, so a fixed file is picked up by the next request.
 */
export class Tokenizers {
  private readonly cacheDir: string
  private readonly byMd5 = new Map<string, Promise<TextTokenizer>>()
  private readonly bytes = new ByteTokenizer()

  constructor (opts: { cacheDir: string }) {
    this.cacheDir = opts.cacheDir
  }

  async get (spec: TokenizerSpec, signal?: AbortSignal): Promise<TextTokenizer> {
    if (spec.type === 'byte') return this.bytes
    let p = this.byMd5.get(spec.md5)
    if (p == null) {
      p = (async () => {
        const file = await materializeModel({ url: spec.url, md5: spec.md5 }, { cacheDir: this.cacheDir, maxBytes: MAX_BUNDLE_BYTES, signal })
        return await loadTokenizerBundle(file.path)
      })()
      this.byMd5.set(spec.md5, p)
      p.catch(() => { if (this.byMd5.get(spec.md5) === p) this.byMd5.delete(spec.md5) })
    }
    return await p
  }
}
