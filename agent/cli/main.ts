import { fileURLToPath } from 'node:url'
import { Command, CommanderError } from 'commander'
import { VERSION } from '../daemon.ts'
import { AgentError } from '../errors.ts'
import { MeshError } from '../../mesh/errors.ts'
import { registerAgentCommand } from './commands/agent.ts'
import { registerDemoCommand } from './commands/demo.ts'
import { registerPeersCommand } from './commands/peers.ts'
import { registerSwarmKeyCommand } from './commands/swarm-key.ts'
import { registerModelCommand } from './commands/model.ts'
import { registerContentCommand } from './commands/content.ts'
import { registerBlockCommand, registerComponentCommand } from './commands/registry.ts'
import { registerSplitCommands } from './commands/split.ts'
import { registerGpuCommand } from './commands/gpu.ts'
import { registerTemplateCommand } from './commands/template.ts'
import { registerServiceCommand } from './commands/service.ts'

/** Exit codes: 0 ok, 1 runtime failure, 2 misuse (bad flag, bad value, bad config). */
export const EXIT_MISUSE = 2

export function buildProgram (): Command {
  const program = new Command('blockmesh')
    .description('Blockmesh: a peer-to-peer compute mesh that deploys and serves AI models')
    .version(VERSION)
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
  registerAgentCommand(program)
  registerDemoCommand(program)
  registerPeersCommand(program)
  registerSwarmKeyCommand(program)
  registerModelCommand(program)
  registerContentCommand(program)
  registerComponentCommand(program)
  registerBlockCommand(program)
  registerSplitCommands(program)
  registerGpuCommand(program)
  registerTemplateCommand(program)
  registerServiceCommand(program)
  // every subcommand exits through the same handler below
  for (const cmd of program.commands) {
    cmd.exitOverride()
    for (const sub of cmd.commands) sub.exitOverride()
  }
  return program
}

export async function run (argv: string[]): Promise<number> {
  const program = buildProgram()
  try {
    await program.parseAsync(argv, { from: 'user' })
    return 0
  } catch (err) {
    if (err instanceof CommanderError) {
      // help and version end here too, with code 0; commander already printed the message
      return err.exitCode === 0 ? 0 : EXIT_MISUSE
    }
    if (err instanceof AgentError) {
      process.stderr.write(`error: ${err.message}\n`)
      return err.code === 'invalid_config' || err.code === 'invalid_request' ? EXIT_MISUSE : 1
    }
    if (err instanceof MeshError) {
      process.stderr.write(`error: ${err.message}\n`)
      return EXIT_MISUSE
    }
    process.stderr.write(`error: ${(err as Error).stack ?? String(err)}\n`)
    return 1
  }
}

/** Runs the CLI and exits on failure; long-running commands (agent, demo) keep the process alive themselves. */
export async function main (): Promise<void> {
  const code = await run(process.argv.slice(2))
  if (code !== 0) process.exit(code)
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main()
