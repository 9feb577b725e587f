import { AgentOptionsSchema } from './config.ts'
import type { AgentOptions, AgentOptionsInput } from './config.ts'
import { ConfigError, formatIssues } from './errors.ts'

/**
 * The agent's options from CLI flags or a caller, validated; a ConfigError names each bad flag as
 * `--kebab-case`. Apart from config.ts, which the desktop app's main bundle imports without the agent's errors.
 */
export function parseAgentOptions (input: AgentOptionsInput): AgentOptions {
  const r = AgentOptionsSchema.safeParse(input)
  if (!r.success) {
    throw new ConfigError(formatIssues(r.error.issues).map(i => `--${kebab(i.field.split('.')[0])}: ${i.message}`).join('\n'))
  }
  return r.data
}

function kebab (s: string): string {
  return s.replace(/[A-Z]/g, c => '-' + c.toLowerCase())
}
