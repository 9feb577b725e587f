import { z } from 'zod'
import type { FastifyInstance } from 'fastify'
import type { ApiContext } from '../context.ts'
import { parseWith } from '../validate.ts'
import { NotFoundError } from '../../errors.ts'
import { Md5Hex } from '../../content/types.ts'
import type { ContentAnswer, ContentFetchAnswer, ContentFetchFilesAnswer, DeletedAnswer } from '../../../contracts/api.ts'

export const ContentFetchBodySchema = z.union([
  z.object({ md5: Md5Hex }).strict(),
  /** a component's files: its model and tokenizer bundle */
  z.object({ component: z.string().min(1).max(130) }).strict()
])

/**
 * This agent's content store (issue 15): what it holds, the transfers in progress, fetching a file (or a
 * model's files) from the peers that hold it ahead of a deployment, and removing a file no block uses.
 */
export function registerContentRoutes (app: FastifyInstance, ctx: ApiContext): void {
  app.get('/api/content', async (): Promise<ContentAnswer> => ({
    usage: ctx.content.store.usage(),
    files: ctx.content.store.list(),
    transfers: ctx.content.fetcher.transfers()
  }))

  app.post('/api/content/fetch', async (req): Promise<ContentFetchFilesAnswer> => {
    const body = parseWith(ContentFetchBodySchema, req.body)
    const ac = new AbortController()
    req.raw.on('close', () => { if (!req.raw.complete) ac.abort() })
    const wanted: Array<{ md5: string, url?: string, name?: string }> = []
    if ('md5' in body) {
      wanted.push({ md5: body.md5 })
    } else {
      const c = ctx.components.get(body.component).spec
      if (c.model != null) wanted.push({ md5: c.model.md5, url: c.model.url, name: `${c.name}:${c.version}` })
      if (c.tokenizer.type === 'bundle') wanted.push({ md5: c.tokenizer.md5, url: c.tokenizer.url, name: 'tokenizer bundle' })
    }
    const files: ContentFetchAnswer[] = []
    for (const w of wanted) files.push(await ctx.content.pull(w.md5, { url: w.url, name: w.name, signal: ac.signal }))
    return { files }
  })

  app.delete<{ Params: { md5: string } }>('/api/content/:md5', async (req): Promise<DeletedAnswer> => {
    const md5 = parseWith(Md5Hex, req.params.md5)
    if (ctx.content.store.get(md5) == null) throw new NotFoundError(`${md5} is not in this agent's content store`)
    ctx.content.store.remove(md5)
    return { deleted: md5 }
  })
}
