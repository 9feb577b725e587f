import type { DesiredState, Entry } from '../state/replica.ts'
import { BlockSpecSchema } from '../registry/blocks.ts'
import type { BlockSpec } from '../registry/blocks.ts'
import { ConflictError } from '../registry/components.ts'
import { z } from 'zod'
import { NotFoundError, ValidationError } from '../errors.ts'

/** A block in the replicated desired state. */
export interface StoredBlock { spec: BlockSpec, target: number | null, createdBy: string }

/** What a stored block must be to be seen: any peer writes these, and the reconciler publishes their target. */
const StoredBlockSchema = z.object({
  spec: z.unknown().refine(v => BlockSpecSchema.safeParse(v).success, 'not a valid block spec'),
  target: z.number().int().min(0).max(1024).nullable(),
  createdBy: z.string().min(1).max(128)
})
const valid = (e: Entry<StoredBlock> | undefined): boolean => e != null && StoredBlockSchema.safeParse(e.value).success

/**
 * Blocks in the mesh's replicated desired state (collection `blocks`): the only room that reads or writes
 * them. An object another agent wrote that is not a valid block (spec, target, creator; a newer or corrupt writer) is
 * invisible here rather than an error, so one bad object cannot stop reconciliation of the rest.
 */
export class BlockStore {
  private readonly state: DesiredState

  constructor (state: DesiredState) {
    this.state = state
  }

  /** Every valid block. */
  entries (): Array<Entry<StoredBlock>> {
    return this.state.list<StoredBlock>('blocks').filter(valid)
  }

  entry (id: string): Entry<StoredBlock> | undefined {
    const e = this.state.get<StoredBlock>('blocks', id)
    return valid(e) ? e : undefined
  }

  /** Adds a new block; a block id is a model name, so an existing one is a conflict, never overwritten. */
  async add (spec: BlockSpec, createdBy: string): Promise<void> {
    await this.state.put<StoredBlock>('blocks', spec.id, { spec, target: null, createdBy }, current => {
      if (current != null) throw new ConflictError(`block ${spec.id} already exists in the mesh; block ids are model names, pick another`)
    })
  }

  /** Removes a block; false when there was none. */
  async remove (id: string): Promise<boolean> {
    return await this.state.remove('blocks', id)
  }

  /** Writes the number of instances wanted (scale, or the autoscaler). */
  async setTarget (id: string, n: number): Promise<void> {
    await this.state.put<StoredBlock>('blocks', id, { ...(this.entry(id) as Entry<StoredBlock>).value, target: n }, current => {
      if (current == null) throw new NotFoundError(`no block ${id}`)
    })
  }

  /** Calls `fn` with the ids of the blocks that changed (a local write or one replicated from a peer). */
  onChange (fn: (blocks: string[]) => void): () => void {
    return this.state.onChange((keys) => {
      const blocks = keys.filter(k => k.startsWith('blocks/')).map(k => k.slice('blocks/'.length))
      if (blocks.length > 0) fn(blocks)
    })
  }
}

/** The instances a block should have: its target, or minInstances before any, within min..max. */
export function targetOf (b: StoredBlock): number {
  return Math.min(b.spec.maxInstances, Math.max(b.spec.minInstances, b.target ?? b.spec.minInstances))
}

/** A scale request must stay within the block's minInstances..maxInstances. */
export function checkScale (id: string, spec: BlockSpec, instances: number): void {
  if (instances < spec.minInstances || instances > spec.maxInstances) {
    throw new ValidationError(`instances must be between minInstances (${spec.minInstances}) and maxInstances (${spec.maxInstances}) of block ${id}`, [{ field: 'instances', message: `${spec.minInstances}-${spec.maxInstances}` }])
  }
}
