import type { BlockStatus } from '../registry/blocks.ts'

export interface Refusal { filter: string, message: string }

/**
 * What the reconciler last concluded about each block it reconciles: the scheduler's refusal (per filter),
 * the last instance failure, and the block's status with its error. Only the reconciler knows refusals, so
 * its word is what every agent shows (through its capacity record) while a block has no ready instance.
 */
export class Outcomes {
  readonly refusals = new Map<string, Refusal[]>()
  readonly failures = new Map<string, string>()
  readonly statuses = new Map<string, { status: BlockStatus, error: string | null }>()

  /**
   * The block's status from its instances: ready with one ready instance; loading while one loads or is
   * assigned; failed after a refusal or failure; else pending. Its error: the last failure, else the refusal.
   */
  settle (block: string, instances: { anyReady: boolean, loading: boolean }): void {
    if (instances.anyReady) this.failures.delete(block)
    const status: BlockStatus = instances.anyReady ? 'ready' : instances.loading ? 'loading' : (this.refusals.has(block) || this.failures.has(block)) ? 'failed' : 'pending'
    const refusal = (this.refusals.get(block) ?? []).map(r => r.message).join('; ')
    this.statuses.set(block, { status, error: status === 'ready' ? null : this.failures.get(block) ?? (refusal !== '' ? refusal : null) })
  }

  forget (block: string): void {
    this.refusals.delete(block)
    this.failures.delete(block)
    this.statuses.delete(block)
  }
}
