import { Context } from './context.ts'

/** Each lifecycle method returns success and its data, or failure and a reason (seed: (True, data) / (False, error)). */
export type StepResult<T> = [true, T] | [false, string]

/** A splitting program: begin → main → finish (seed 002, "Sample Container Class"). */
export interface ModelSplitter<B = Record<string, unknown>, M = Record<string, unknown>> {
  begin: () => Promise<StepResult<B>> | StepResult<B>
  main: (extra: B) => Promise<StepResult<M>> | StepResult<M>
  finish: (extra: M) => Promise<StepResult<Record<string, unknown>>> | StepResult<Record<string, unknown>>
}

/** The longest error the task registry takes (16 KiB); a longer one keeps its head and tail (as the Python SDK does). */
export const MAX_ERROR_CHARS = 16_384

function clip (error: string): string {
  if (error.length <= MAX_ERROR_CHARS) return error
  const head = Math.floor(MAX_ERROR_CHARS / 4)
  const tail = MAX_ERROR_CHARS - head - 40
  return `${error.slice(0, head)}\n... (${error.length - head - tail} characters left out) ...\n${error.slice(-tail)}`
}

export type ModelSplitterClass = new (context: Context) => ModelSplitter<any, any>

/**
 * Runs a splitter's lifecycle and reports to the task registry: running
 * when it starts, then complete with finish()'s result, or failed with the
 * first error (a thrown exception counts as one). Resolves with the exit
 * code a program should end with (0 complete, 1 failed).
 */
export async function executeModelSplitter (Splitter: ModelSplitterClass, context: Context = Context.fromEnv()): Promise<number> {
  const fail = async (stage: string, error: string): Promise<number> => {
    await context.report({ status: 'failed', error: clip(`${stage}: ${error}`) }).catch(() => {})
    return 1
  }
  try {
    await context.report({ status: 'running', progress: 0, message: 'begin' })
    const splitter = new Splitter(context)
    const b = await splitter.begin()
    if (!b[0]) return await fail('begin', b[1])
    await context.report({ status: 'running', message: 'main' })
    const m = await splitter.main(b[1])
    if (!m[0]) return await fail('main', m[1])
    await context.report({ status: 'running', message: 'finish' })
    const f = await splitter.finish(m[1])
    if (!f[0]) return await fail('finish', f[1])
    await context.report({ status: 'complete', progress: 1, message: 'done', result: f[1] })
    return 0
  } catch (err) {
    return await fail('error', (err as Error).stack ?? (err as Error).message)
  }
}
