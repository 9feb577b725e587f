import type { Command } from 'commander'
import { writeNewSwarmKey } from '../../../mesh/swarm-key.ts'

export function registerSwarmKeyCommand (program: Command): void {
  const cmd = program.command('swarm-key').description('private network keys (libp2p pnet)')
  cmd.command('generate')
    .description('write a new random swarm key (mode 0600); give the same file to every agent with --swarm-key')
    .requiredOption('--out <file>', 'where to write the key (must not exist)')
    .action((opts: { out: string }) => {
      writeNewSwarmKey(opts.out)
      process.stdout.write(`wrote swarm key ${opts.out}\n`)
    })
}
