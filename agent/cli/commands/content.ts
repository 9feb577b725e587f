import type { Command } from 'commander'
import { apiGet, apiRequest } from '../client.ts'
import { formatAge, formatBytes, table } from '../format.ts'
import { needToken, print, withTarget } from '../target.ts'
import type { TargetOpts } from '../target.ts'
import type { ContentAnswer, ContentFetchFilesAnswer, DeletedAnswer } from '../../../contracts/api.ts'

/** `blockmesh content …`: the agent's content store of model files (issue 15). */
export function registerContentCommand (program: Command): void {
  const content = program.command('content').description('the agent\'s content store: model files held for blocks and peers, transfers in progress')
  withTarget(content.command('list').description('files held (complete or partial), in use, pinned; usage against the cap; transfers in progress'))
    .action(async (opts: TargetOpts) => {
      const body = await apiGet<ContentAnswer>(opts.api, '/api/content')
      print(opts, body, () => [
        `store: ${formatBytes(body.usage.bytes)} of ${formatBytes(body.usage.capBytes)}`,
        table(['MD5', 'NAME', 'SIZE', 'STATE', 'PINNED', 'IN USE', 'LAST USED'], body.files.map(f => [
          f.md5, f.name ?? '-', formatBytes(f.size), f.state === 'complete' ? 'complete' : `partial ${Math.floor(100 * f.have / Math.max(1, f.chunks))}%`,
          f.pinned ? 'yes' : 'no', String(f.inUse), formatAge(Date.now() - f.lastUsed)])),
        ...(body.transfers.length > 0
          ? ['', table(['FETCHING', 'NAME', 'PROGRESS', 'FROM'], body.transfers.map(t => [
              t.md5, t.name ?? '-', `${formatBytes(t.receivedBytes)} of ${formatBytes(t.totalBytes)}`,
              Object.entries(t.bySource).map(([s, n]) => `${s.slice(-8)} ${formatBytes(n)}`).join(', ')]))]
          : [])
      ].join('\n'))
    })
  withTarget(content.command('pull').description('fetch a file (by MD5) or a component\'s files into this agent\'s store, from the peers that hold them (else the origin)'))
    .argument('<md5-or-component>')
    .action(async (what: string, opts: TargetOpts) => {
      const body = /^[a-f0-9]{32}$/.test(what) ? { md5: what } : { component: what }
      const r = await apiRequest<ContentFetchFilesAnswer>(opts.api, '/api/content/fetch', { method: 'POST', body, token: needToken(opts), timeoutMs: 24 * 3600_000 })
      print(opts, r, () => r.files.map(f => `${f.file.md5} ${f.file.name ?? ''} ${formatBytes(f.file.size)}: ${Object.keys(f.bySource).length === 0 ? 'already here' : Object.entries(f.bySource).map(([s, n]) => `${formatBytes(n)} from ${s}`).join(', ')}`).join('\n'))
    })
  withTarget(content.command('rm').description('remove a file from this agent\'s store (refused while a block uses it)'))
    .argument('<md5>')
    .action(async (md5: string, opts: TargetOpts) => {
      const r = await apiRequest<DeletedAnswer>(opts.api, `/api/content/${encodeURIComponent(md5)}`, { method: 'DELETE', token: needToken(opts) })
      print(opts, r, () => `removed ${r.deleted}`)
    })
}
