import { z } from 'zod'
import { BlockSpecSchema } from '../registry/blocks.ts'
import { ComponentSpecSchema } from '../registry/components.ts'

/** libp2p protocol by which a block's owner starts and stops instances on peers. */
export const ASSIGN_PROTOCOL = '/blockmesh/assign/1.0.0'

/** The reconciler's fence: a host refuses orders for a block from a lower term than the one it holds. */
const TermSchema = z.number().int().min(0).max(2 ** 40).default(0)

const id = z.string().min(1).max(128).regex(/^[A-Za-z0-9._-]+$/)

export const AssignRequestSchema = z.discriminatedUnion('op', [
  z.object({ op: z.literal('start'), block: id, instance: id, spec: BlockSpecSchema, component: ComponentSpecSchema, term: TermSchema }).strict(),
  z.object({ op: z.literal('stop'), block: id, instance: id, term: TermSchema, drain: z.boolean().default(false) }).strict()
])
export type AssignRequest = z.input<typeof AssignRequestSchema>

export const AssignResponseSchema = z.object({
  accepted: z.boolean(),
  /** why a start was refused */
  reason: z.string().max(4096).optional(),
  status: z.string().max(32).optional()
}).strict()
export type AssignResponse = z.output<typeof AssignResponseSchema>
