import type { Command } from 'commander'
import { DEFAULT_API, resolveToken, urlArg } from './args.ts'
import { ValidationError } from '../errors.ts'

/** Options of every command that talks to an agent's API. */
export interface TargetOpts { api: string, token?: string, tokenFile?: string, json?: boolean }

export function withTarget (cmd: Command): Command {
  return cmd
    .option('--api <url>', 'agent API (env BLOCKMESH_API)', urlArg, DEFAULT_API)
    .option('--token <token>', 'API token (env BLOCKMESH_TOKEN; default: the local demo\'s token file)')
    .option('--token-file <file>', 'read the API token from this file')
    .option('--json', 'print the API answer as JSON')
}

export function print (opts: TargetOpts, body: unknown, text: () => string): void {
  process.stdout.write((opts.json === true ? JSON.stringify(body, null, 2) : text()) + '\n')
}

export function needToken (opts: TargetOpts): string {
  const token = resolveToken(opts)
  if (token == null) throw new ValidationError('this command changes state: give --token, BLOCKMESH_TOKEN or --token-file')
  return token
}

