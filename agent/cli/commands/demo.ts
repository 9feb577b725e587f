import type { Command } from 'commander'
import { Demo } from '../../demo.ts'
import { collect, intArg } from '../args.ts'
import { parseSimulatedGpus } from '../../hardware/gpus.ts'

export function registerDemoCommand (program: Command): void {
  program.command('demo')
    .description('start a local mesh of N agents (separate processes) on loopback, with the dashboard')
    .option('--agents <n>', 'number of agents', intArg(1, 64), 3)
    .option('--base-port <port>', 'API port of agent 0; agent i gets base+i (0: any free ports)', intArg(0, 65_000), 7700)
    .option('--data-dir <dir>', 'where the agents keep their state', '.blockmesh/demo')
    .option('--heartbeat-ms <ms>', 'capacity gossip interval', intArg(250, 60_000), 2000)
    .option('--cluster <label>', 'cluster label(s), assigned round-robin (repeat or comma-separate)', collect)
    .option('--simulate-gpus <spec>', 'give every agent these simulated GPUs (shown as simulated)')
    .action(async (opts: { agents: number, basePort: number, dataDir: string, heartbeatMs: number, cluster?: string[], simulateGpus?: string }) => {
      if (opts.simulateGpus != null) parseSimulatedGpus(opts.simulateGpus) // bad spec: exit 2 before any process starts
      const out = (line: string): void => { process.stdout.write(line + '\n') }
      const demo = new Demo({
        agents: opts.agents,
        basePort: opts.basePort,
        dataDir: opts.dataDir,
        heartbeatMs: opts.heartbeatMs,
        simulateGpus: opts.simulateGpus,
        clusters: opts.cluster ?? ['demo'],
        out
      })
      let stopping = false
      const stop = (why: string): void => {
        if (stopping) return
        stopping = true
        out(`\n${why}: stopping ${demo.agents.length} agent(s)…`)
        void demo.stop().then(() => { out('all agents stopped'); process.exit(0) })
      }
      process.on('SIGINT', () => { stop('SIGINT') })
      process.on('SIGTERM', () => { stop('SIGTERM') })
      process.on('SIGHUP', () => { stop('SIGHUP') })

      out(`Starting ${opts.agents} agent(s) on loopback; state in ${opts.dataDir}`)
      try {
        await demo.start()
      } catch (err) {
        out(`demo failed: ${(err as Error).message}`)
        await demo.stop()
        process.exit(1)
      }
      const formed = await demo.waitForMesh()
      out('')
      for (const a of demo.agents) {
        out(`${a.name}  cluster ${a.cluster}  api ${a.info?.apiUrl ?? '?'}  peer ${a.info?.peerId ?? '?'}`)
      }
      out(`token: ${demo.token}`)
      out(`dashboard: ${demo.agents[0].info?.apiUrl ?? ''}/`)
      out(formed ? `mesh formed: agent-0 sees all ${demo.agents.length} agents` : 'mesh not formed yet (see the agents\' logs in the data dir)')
      out(`try: npx blockmesh peers${opts.basePort === 7700 ? '' : ` --api ${demo.agents[0].info?.apiUrl ?? ''}`}`)
      out('Ctrl-C stops every agent.')
    })
}
