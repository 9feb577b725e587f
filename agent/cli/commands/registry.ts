import { dirname, isAbsolute, resolve } from 'node:path'
import type { Command } from 'commander'
import { intArg, readSpecFile } from '../args.ts'
import { needToken, print, withTarget } from '../target.ts'
import type { TargetOpts } from '../target.ts'
import { apiRequest } from '../client.ts'
import { table } from '../format.ts'
import { ValidationError } from '../../errors.ts'
import type { BlocksAnswer, BlockView, Component, ComponentsAnswer } from '../../../contracts/api.ts'

/** Relative local model paths in a spec file are relative to the file, not to where the CLI runs. */
function absoluteModelUrl (spec: unknown, file: string): unknown {
  const s = spec as { model?: { url?: unknown } }
  const url = s?.model?.url
  if (typeof url === 'string' && !/^[a-z][a-z0-9+.-]*:\/\//i.test(url) && !isAbsolute(url)) {
    return { ...s, model: { ...s.model, url: resolve(dirname(file), url) } }
  }
  return spec
}

function blockRows (blocks: BlockView[]): string {
  return table(['ID', 'COMPONENT', 'STATUS', 'INSTANCES', 'ON', 'ACTIVE', 'QUEUED', 'ERROR'], blocks.map(b => [
    b.id, b.component, b.status,
    `${b.instances.filter(i => i.status === 'ready').length}/${b.target}`,
    b.instances.map(i => `${i.peerName}(${i.status})`).join(' ') || '-',
    String(b.activeSequences), String(b.queuedSequences), (b.error ?? '').slice(0, 80)
  ]))
}

/** Where a block's instances went, or why they could not be placed. */
function placement (b: BlockView): string {
  const lines = [`block ${b.id}: ${b.status}, ${b.instances.length} of ${b.target} instance(s) placed`]
  for (const i of b.instances) lines.push(`  ${i.instance} on ${i.peerName} (${i.peerId.slice(0, 12)}…): ${i.status}${i.error != null ? ` — ${i.error}` : ''}`)
  for (const r of b.refusal ?? []) lines.push(`  not placed [${r.filter}]: ${r.message}`)
  return lines.join('\n')
}

export function registerComponentCommand (program: Command): void {
  const cmd = program.command('component').description('components: deployable units (a model and what it needs)')
  withTarget(cmd.command('create').description('create a component from a JSON or YAML spec file').requiredOption('-f, --file <file>', 'spec file'))
    .action(async (opts: TargetOpts & { file: string }) => {
      const spec = absoluteModelUrl(readSpecFile(opts.file), opts.file)
      const c = await apiRequest<Component>(opts.api, '/api/components', { method: 'POST', body: spec, token: needToken(opts) })
      print(opts, c, () => `created component ${c.uri}`)
    })
  withTarget(cmd.command('list').description('list components')).action(async (opts: TargetOpts) => {
    const body = await apiRequest<ComponentsAnswer>(opts.api, '/api/components')
    print(opts, body, () => table(['URI', 'RUNTIME', 'CONTEXT', 'MODEL / ENDPOINT'], body.components.map(c => [
      c.uri, c.spec.runtime, c.spec.contextLength != null ? String(c.spec.contextLength) : '-',
      c.spec.model?.url ?? (c.spec.external != null ? `${c.spec.external.url ?? '(init process)'} (${c.spec.external.model})` : '-')
    ])))
  })
  withTarget(cmd.command('get').description('show one component').argument('<uri>', 'name:version')).action(async (uri: string, opts: TargetOpts) => {
    const c = await apiRequest<Component>(opts.api, `/api/components/${encodeURIComponent(uri)}`)
    print({ ...opts, json: true }, c, () => '')
  })
  withTarget(cmd.command('delete').description('delete a component (no block may use it)').argument('<uri>', 'name:version')).action(async (uri: string, opts: TargetOpts) => {
    const body = await apiRequest(opts.api, `/api/components/${encodeURIComponent(uri)}`, { method: 'DELETE', token: needToken(opts) })
    print(opts, body, () => `deleted component ${uri}`)
  })
}

export function registerBlockCommand (program: Command): void {
  const cmd = program.command('block').description('blocks: running instances of components')
  withTarget(cmd.command('create').description('create a block from a JSON or YAML spec file, or from --component and --id')
    .option('-f, --file <file>', 'spec file')
    .option('--component <uri>', 'component URI (name:version), without a spec file')
    .option('--id <id>', 'block id (its model name on /v1), with --component'))
    .action(async (opts: TargetOpts & { file?: string, component?: string, id?: string }) => {
      if ((opts.file == null) === (opts.component == null)) throw new ValidationError('give -f SPEC_FILE, or --component URI with --id ID')
      if (opts.component != null && opts.id == null) throw new ValidationError('--component needs --id (the block\'s model name)')
      const spec = opts.file != null ? readSpecFile(opts.file) : { id: opts.id, component: opts.component }
      const b = await apiRequest<BlockView>(opts.api, '/api/blocks', { method: 'POST', body: spec, token: needToken(opts) })
      print(opts, b, () => `${placement(b)}\nfollow it with: blockmesh block get ${b.id}`)
    })
  withTarget(cmd.command('list').description('list blocks')).action(async (opts: TargetOpts) => {
    const body = await apiRequest<BlocksAnswer>(opts.api, '/api/blocks')
    print(opts, body, () => blockRows(body.blocks))
  })
  withTarget(cmd.command('get').description('show one block').argument('<id>')).action(async (id: string, opts: TargetOpts) => {
    const b = await apiRequest<BlockView>(opts.api, `/api/blocks/${encodeURIComponent(id)}`)
    print({ ...opts, json: true }, b, () => '')
  })
  withTarget(cmd.command('delete').description('stop and delete a block').argument('<id>')).action(async (id: string, opts: TargetOpts) => {
    const body = await apiRequest(opts.api, `/api/blocks/${encodeURIComponent(id)}`, { method: 'DELETE', token: needToken(opts) })
    print(opts, body, () => `deleted block ${id}`)
  })
  withTarget(cmd.command('scale').description('set the number of instances (between minInstances and maxInstances)').argument('<id>')
    .requiredOption('--instances <n>', 'instances wanted', intArg(0, 1024)))
    .action(async (id: string, opts: TargetOpts & { instances: number }) => {
      const b = await apiRequest<BlockView>(opts.api, `/api/blocks/${encodeURIComponent(id)}/scale`, { method: 'PUT', body: { instances: opts.instances }, token: needToken(opts) })
      print(opts, b, () => placement(b))
    })
}
