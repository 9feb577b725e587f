import { execFileSync } from 'node:child_process'

/** Why Python programs cannot run here (no python3 with venv and ensurepip), or false when they can. */
export function pythonMissing (): string | false {
  try {
    execFileSync('python3', ['-c', 'import venv, ensurepip'], { stdio: 'ignore', timeout: 30_000 })
    return false
  } catch {
    return 'no python3 with venv and ensurepip on this machine'
  }
}
