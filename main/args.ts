import { AgentUrlSchema, describeIssues } from './schemas.ts'

/** How the app was asked to start: connect to an agent URL, start the local agent, or show the connect page. */
export interface DesktopArgs {
  /** an agent's origin */
  agentUrl?: string
  local: boolean
}

/** Flags that contradict each other or a bad URL. */
export class DesktopArgsError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'DesktopArgsError'
  }
}

/**
 * The app's own flags, for people who script it: `--agent-url URL` (or
 * `--agent-url=URL`, env BLOCKMESH_AGENT_URL) and `--local` (env
 * BLOCKMESH_LOCAL=1; flags win over the environment). Every other argument is left alone: Electron and
 * Chromium take their own switches from the same command line.
 */
export function parseDesktopArgs (argv: readonly string[], env: NodeJS.ProcessEnv = {}): DesktopArgs {
  let url: string | undefined
  let local = false
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--local') local = true
    else if (arg === '--agent-url') {
      const next = argv[i + 1]
      if (next == null || next.startsWith('--')) throw new DesktopArgsError('--agent-url needs a URL')
      url = next
      i++
    } else if (arg.startsWith('--agent-url=')) url = arg.slice('--agent-url='.length)
  }
  // flags win over the environment; the environment is read only when no flag is given
  if (url == null && !local) {
    if (env.BLOCKMESH_AGENT_URL != null && env.BLOCKMESH_AGENT_URL !== '') url = env.BLOCKMESH_AGENT_URL
    local = env.BLOCKMESH_LOCAL === '1'
  }
  if (url != null && local) throw new DesktopArgsError('choose one: --agent-url URL or --local')
  if (url == null) return { local }
  const parsed = AgentUrlSchema.safeParse(url)
  if (!parsed.success) throw new DesktopArgsError(`--agent-url ${JSON.stringify(url)}: ${describeIssues(parsed.error)}`)
  return { agentUrl: parsed.data, local: false }
}
