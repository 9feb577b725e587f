import { z } from 'zod'
import { parseSize } from './hardware/gpus.ts'

/**
 * Units shared by the desired state's schemas. A schema two rooms need (the registry's component
 * resources and the scheduler's filters both take sizes) lives here, below both, so neither room imports
 * the other for it (no registry ↔ scheduler cycle; scripts/import-cycles.ts checks).
 */

/** A byte count as a number or a size string ("2GiB", "512MiB"). */
export const SizeSchema = z.union([z.number(), z.string().max(64)], { error: 'a size: bytes as a number, or a string such as "16GiB"' })
  .transform((v, ctx) => {
    // one transform for both forms, so a bad value gets the size parser's own message, not the union's "Invalid input"
    if (typeof v === 'number') {
      if (Number.isInteger(v) && v >= 0) return v
      ctx.addIssue({ code: 'custom', message: 'a size in bytes is a whole number ≥ 0' })
      return z.NEVER
    }
    try { return parseSize(v) } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message })
      return z.NEVER
    }
  })
