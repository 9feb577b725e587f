import type { Command } from 'commander'
import { apiGet, apiRequest } from '../client.ts'
import { table } from '../format.ts'
import { needToken, print, withTarget } from '../target.ts'
import type { TargetOpts } from '../target.ts'
import type { MLServiceDeletedAnswer, MLServiceRollAnswer, MLServicesAnswer, MLServiceView } from '../../../contracts/api.ts'

function rolloutLine (s: MLServiceView): string {
  const r = s.rollout
  if (r == null) return '-'
  const at = r.phase === 'done' || r.phase === 'failed' ? ` at ${r.finishedAt ?? '?'}` : ` since ${r.startedAt}`
  return `${r.phase}: ${r.from.version} (${r.from.unit}) → ${r.to.version} (${r.to.unit})${at}${r.error != null ? `: ${r.error}` : ''}`
}

function showService (s: MLServiceView): string {
  return [
    `${s.name} (${s.namespace}): ${s.version}, served by ${s.target}, ${s.ready ? 'ready' : 'not serving'}`,
    `decision: ${s.decision ?? '-'}; replicas ${s.replicas ?? '-'}..${s.maxReplicas ?? '-'}; created ${s.createdAt}`,
    `rollout: ${rolloutLine(s)}`
  ].join('\n')
}

/** `blockmesh service …`: deployed template versions (MLServices) and rolling them to another version (issue 16). */
export function registerServiceCommand (program: Command): void {
  const svc = program.command('service').description('services (deployed template versions): list, show, roll to another version without dropping requests, delete')
  withTarget(svc.command('list').description('services with the version they run, the unit serving them and their rollout'))
    .action(async (opts: TargetOpts) => {
      const body = await apiGet<MLServicesAnswer>(opts.api, '/api/mlservices')
      print(opts, body, () => table(['SERVICE', 'VERSION', 'SERVED BY', 'DECISION', 'READY', 'ROLLOUT'], body.services.map(s => [
        s.name, s.version, s.target, s.decision ?? '-', s.ready ? 'yes' : 'no', s.rollout == null ? '-' : `${s.rollout.phase} → ${s.rollout.to.version}`
      ])))
    })
  withTarget(svc.command('show').description('one service and its rollout'))
    .argument('<name>')
    .action(async (name: string, opts: TargetOpts) => {
      const s = await apiGet<MLServiceView>(opts.api, `/api/mlservices/${encodeURIComponent(name)}`)
      print(opts, s, () => showService(s))
    })
  withTarget(svc.command('roll').description('deploys VERSION beside the running one, switches the name to it once it serves, then drains and stops the old one'))
    .argument('<name>', 'the service')
    .argument('<version>', 'NAME-vN, or a template name for its latest version')
    .option('--wait', 'wait until the rollout is done (or failed)')
    .action(async (name: string, version: string, opts: TargetOpts & { wait?: boolean }) => {
      let r = await apiRequest<MLServiceRollAnswer>(opts.api, `/api/mlservices/${encodeURIComponent(name)}/rollout`, { method: 'POST', body: { version }, token: needToken(opts) })
      let s = r.service
      while (opts.wait === true && (s.rollout?.phase === 'starting' || s.rollout?.phase === 'draining')) {
        await new Promise(resolve => setTimeout(resolve, 1000))
        s = await apiGet<MLServiceView>(opts.api, `/api/mlservices/${encodeURIComponent(name)}`)
      }
      r = { ...r, service: s }
      print(opts, r, () => showService(s))
      if (s.rollout?.phase === 'failed') process.exitCode = 1
    })
  withTarget(svc.command('rm').description('deletes a service: its units are drained and stopped'))
    .argument('<name>')
    .action(async (name: string, opts: TargetOpts) => {
      const r = await apiRequest<MLServiceDeletedAnswer>(opts.api, `/api/mlservices/${encodeURIComponent(name)}`, { method: 'DELETE', token: needToken(opts), timeoutMs: 180_000 })
      print(opts, r, () => `deleted ${r.deleted} (${r.units.join(', ') || 'no unit running'})`)
    })
}
