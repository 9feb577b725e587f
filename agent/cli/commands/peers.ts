import type { Command } from 'commander'
import { DEFAULT_API, urlArg } from '../args.ts'
import { apiGet } from '../client.ts'
import { formatBytes, formatAge, table } from '../format.ts'
import type { PeerJson, PeersAnswer } from '../../../contracts/api.ts'
import { summarizeProviders } from '../../executor/provider-probe.ts'

export function peersTable (peers: PeerJson[]): string {
  const rows = peers.map(p => {
    const r = p.readings
    const gpus = r.gpus.length === 0
      ? '-'
      : `${r.gpus.length}x ${formatBytes(r.gpus.reduce((s, g) => s + (g.memoryFreeBytes ?? 0), 0))}/${formatBytes(r.gpus.reduce((s, g) => s + g.memoryTotalBytes, 0))} free` +
        (r.gpus.some(g => g.utilisation != null) ? ` ${Math.round(Math.max(...r.gpus.map(g => g.utilisation ?? 0)))}%` : '') +
        (r.gpus.some(g => g.simulated) ? ' (simulated)' : '')
    return [
      p.name + (p.self ? ' *' : ''),
      p.cluster,
      p.peerId.slice(0, 8) + '…' + p.peerId.slice(-6),
      p.status,
      String(r.cpu.count),
      `${r.cpu.load1.toFixed(2)}/${r.cpu.load5.toFixed(2)}/${r.cpu.load15.toFixed(2)}`,
      `${formatBytes(r.memory.availableBytes)}/${formatBytes(r.memory.totalBytes)}`,
      gpus,
      p.self ? 'self' : formatAge(p.lastSeenAgoMs),
      // absent from older agents' records; empty until the agent's probe ends
      summarizeProviders(p.providers ?? [])
    ]
  })
  return table(['NAME', 'CLUSTER', 'PEER', 'STATUS', 'CPUS', 'LOAD 1/5/15', 'RAM AVAIL/TOTAL', 'GPUS', 'LAST SEEN', 'PROVIDERS'], rows)
}

export function registerPeersCommand (program: Command): void {
  program.command('peers')
    .description('list every peer in the mesh with its capacity and last-seen age')
    .option('--api <url>', 'agent API to ask (env BLOCKMESH_API)', urlArg, DEFAULT_API)
    .option('--all', 'include expired peers')
    .option('--json', 'print the API answer as JSON')
    .action(async (opts: { api: string, all?: boolean, json?: boolean }) => {
      const body = await apiGet<PeersAnswer>(opts.api, `/api/peers?include=${opts.all === true ? 'all' : 'live'}`)
      if (opts.json === true) {
        process.stdout.write(JSON.stringify(body, null, 2) + '\n')
        return
      }
      process.stdout.write(peersTable(body.peers) + '\n')
      process.stdout.write(`${body.peers.length} peer(s); * = the agent asked (${opts.api}); PROVIDERS: execution providers that load there (--json has the reasons)\n`)
    })
}
