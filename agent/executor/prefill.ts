/**
 * How both engines take prompts (the whole model's worker.ts, a pipeline stage's stage-worker.ts, and the
 * pipeline's driver, agent/vdag/driver.ts, which cuts a prompt into PREFILL_CHUNK-token steps). Each turn
 * of an engine's loop runs waiting prompts (and chunks of them) first and then one decoding step of the
 * running sequences, so a burst of short prompts is prefilled before decoding goes on (its streams then
 * decode in full batches and end together), while a long prompt goes through a chunk at a time with the
 * decoding streams' steps in between: chunked prefill, as vLLM and llama.cpp's server do.
 *
 * How much prompt work a turn takes is bounded twice: by rows (two chunks: the bound a GPU meets, where a
 * chunk takes milliseconds) and, while other sequences decode, by time: PROMPT_MS_FIRST, the gap a
 * decoding stream may see between two tokens for the sake of a prompt (Sarathi-Serve's time-between-tokens
 * budget). On a CPU a 256-token chunk of a 135M model takes ~0.75 s on one thread, so there the whole
 * engine cuts smaller chunks, sized from the prompt rate it measures (PromptBudget).
 */
export const PREFILL_CHUNK = 256

/** the smallest chunk an engine cuts to meet PROMPT_MS_FIRST (smaller ones waste their weight reads) */
export const MIN_CHUNK = 32

/** while other sequences decode, a turn's prompt work aims to take at most this long (ms) */
export const PROMPT_MS_FIRST = 200

/**
 * What is wrong with a prompt budget's settings, or null: a chunk is a positive integer of tokens, a turn's
 * time a positive number of ms (Infinity: none). Unset ones take the defaults.
 */
export function promptBudgetProblem (prefillChunk?: number, promptMsFirst?: number): string | null {
  if (prefillChunk != null && !(Number.isInteger(prefillChunk) && prefillChunk > 0)) return `prefillChunk must be a positive integer, not ${prefillChunk}`
  if (promptMsFirst != null && !(promptMsFirst > 0)) return `promptMsFirst must be a positive number of ms (or Infinity), not ${promptMsFirst}`
  return null
}

/** prompt rows (tokens of prompts and chunks) an engine runs before a turn's decoding step, at most */
export const promptRowsFirst = (chunk: number): number => 2 * chunk

/**
 * A turn's share of prompt work, from the rate at which this engine's prompt runs have gone (rows per ms,
 * a moving average of runs of 8 rows and more). Before the first such run it knows no rate and allows two
 * chunks of `chunk` rows, as it does whenever nothing is decoding.
 */
export class PromptBudget {
  readonly chunk: number
  /** the time bound while others decode (ms; Infinity: rows only) */
  readonly msFirst: number
  private rate = 0

  constructor (chunk = PREFILL_CHUNK, msFirst = PROMPT_MS_FIRST) {
    const problem = promptBudgetProblem(chunk, msFirst)
    if (problem != null) throw new RangeError(problem)
    this.chunk = chunk
    this.msFirst = msFirst
  }

  /** A prompt run of `rows` rows took `ms`. */
  observe (rows: number, ms: number): void {
    if (rows < 8 || !(ms > 0)) return
    const r = rows / ms
    this.rate = this.rate === 0 ? r : 0.7 * this.rate + 0.3 * r
  }

  /** rows per ms of the prompt runs so far (0: none yet) */
  get rowsPerMs (): number { return this.rate }

  /** The size of the next chunk: `chunk`, or while others decode what fits msFirst (at least MIN_CHUNK). */
  chunkRows (decoding: boolean): number {
    if (!decoding || this.rate === 0 || this.msFirst === Infinity) return this.chunk
    return Math.max(Math.min(MIN_CHUNK, this.chunk), Math.min(this.chunk, Math.floor(this.rate * this.msFirst)))
  }

  /**
   * Whether a turn that has run `rows` prompt rows in `elapsedMs` runs another prompt step of `nextRows`
   * rows before its decoding step (a turn's first prompt step always runs).
   */
  more (rows: number, elapsedMs: number, nextRows: number, decoding: boolean): boolean {
    if (rows === 0) return true
    if (rows >= promptRowsFirst(this.chunk)) return false
    if (!decoding || this.rate === 0) return true
    return elapsedMs + nextRows / this.rate <= this.msFirst
  }
}
