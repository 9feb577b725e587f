import type { Generation, GenerationResult, TokenLogprob } from './engine.ts'

/**
 * The consumer side of a generation produced elsewhere (a peer's instance, a vDAG's stages, a migrating
 * wrapper): tokens pushed as they come, handed out in order, and the result once it ends. One place for
 * the queue and its wake-up, so every token source behaves the same to the OpenAI layer.
 */
export class TokenStream {
  readonly logprobs: TokenLogprob[] = []
  readonly done: Promise<GenerationResult>
  private readonly queue: number[] = []
  private waiter: (() => void) | null = null
  private resolveDone!: (r: GenerationResult) => void
  private finished = false

  constructor () {
    this.done = new Promise<GenerationResult>(resolve => { this.resolveDone = resolve })
  }

  get ended (): boolean { return this.finished }

  /** One token (and its logprob, when asked for). */
  push (token: number, logprob?: TokenLogprob | null): void {
    if (logprob != null) this.logprobs.push(logprob)
    this.queue.push(token)
    this.wake()
  }

  /** Ends the stream once (a later call is ignored): the consumer drains what is queued, then stops. */
  end (r: GenerationResult): void {
    if (this.finished) return
    this.finished = true
    this.wake()
    this.resolveDone(r)
  }

  /** The Generation interface over this stream; `cancel` is called when the consumer stops early. */
  generation (cancel: () => void): Generation {
    return {
      id: 0,
      logprobs: this.logprobs,
      done: this.done,
      cancel,
      tokens: {
        [Symbol.asyncIterator]: () => ({
          next: async (): Promise<IteratorResult<number>> => {
            while (this.queue.length === 0 && !this.finished) await new Promise<void>(resolve => { this.waiter = resolve })
            if (this.queue.length > 0) return { value: this.queue.shift() as number, done: false }
            return { value: undefined, done: true }
          },
          return: async (): Promise<IteratorResult<number>> => {
            cancel()
            return { value: undefined, done: true }
          }
        })
      }
    }
  }

  private wake (): void {
    this.waiter?.()
    this.waiter = null
  }
}
