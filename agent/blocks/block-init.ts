import type { z } from 'zod'
import type { InitSchema } from '../registry/components.ts'
import { startInitProcess } from './init-process.ts'
import type { InitProcess, InitProcessLog } from './init-process.ts'
import { isPython, parsePythonProgram, pythonCommand } from '../python/envs.ts'
import type { PythonEnvs } from '../python/envs.ts'

/**
 * Starts a component's init process for one instance of a block: the process is told its block, instance and
 * blockInitData (BLOCKMESH_BLOCK, BLOCKMESH_INSTANCE, BLOCK_INIT_DATA, under the spec's own env); a
 * `python:PATH.py` (or `python:MODULE`) command runs with the interpreter of a virtual environment holding
 * the Python SDK (aios_init_container) and the script's requirements (agent/python/envs.ts).
 */
export async function startBlockInit (init: z.output<typeof InitSchema>, ctx: {
  block: string
  instance: string
  blockInitData: Record<string, unknown> | undefined
  pythonEnvs: PythonEnvs
  /** logs, and a Python script's working folder */
  dataDir: string
  signal: AbortSignal
  log: InitProcessLog
}): Promise<InitProcess> {
  const env: Record<string, string> = { BLOCKMESH_BLOCK: ctx.block, BLOCKMESH_INSTANCE: ctx.instance, BLOCK_INIT_DATA: JSON.stringify(ctx.blockInitData ?? {}), ...init.env }
  let command = init.command
  let args = init.args
  let cwd: string | undefined
  if (isPython(command)) {
    const py = parsePythonProgram(command)
    command = await ctx.pythonEnvs.interpreter(py, ctx.signal)
    const how = pythonCommand(py, ctx.dataDir)
    args = [...how.args, ...args]
    cwd = how.cwd
    Object.assign(env, { PYTHONUNBUFFERED: '1', PYTHONDONTWRITEBYTECODE: '1', ...init.env })
  }
  return await startInitProcess({
    command,
    args,
    env,
    readiness: init.readiness,
    timeoutMs: init.timeoutSeconds * 1000,
    ...(cwd != null ? { cwd } : {})
  }, { logDir: ctx.dataDir, signal: ctx.signal, log: ctx.log })
}
