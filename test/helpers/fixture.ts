import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

export const FIXTURE_SERVER = fileURLToPath(new URL('../fixtures/openai-server.ts', import.meta.url))

/** The OpenAI-compatible fixture server (standing in for vLLM, which cannot run here) as its own process. */
export async function startFixtureServer (args: string[] = []): Promise<{ url: string, child: ChildProcess, stop: () => Promise<void> }> {
  const child = spawn(process.execPath, [FIXTURE_SERVER, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
  const url = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', l => { resolve((JSON.parse(l) as { url: string }).url) })
    child.once('exit', code => { reject(new Error(`fixture server exited (${code})`)) })
  })
  return {
    url,
    child,
    stop: async () => {
      if (child.exitCode != null || child.signalCode != null) return
      const done = new Promise(resolve => child.once('exit', resolve))
      child.kill('SIGTERM')
      await done
    }
  }
}
