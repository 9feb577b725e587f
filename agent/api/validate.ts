import type { z } from 'zod'
import { ValidationError, formatIssues } from '../errors.ts'

/** Parses a request part with a zod schema; a failure is a 400 with one entry per bad field. */
export function parseWith<S extends z.ZodType> (schema: S, value: unknown, what = 'body'): z.output<S> {
  const result = schema.safeParse(value)
  if (!result.success) {
    const issues = formatIssues(result.error.issues)
    throw new ValidationError(`invalid ${what}: ${issues.map(i => `${i.field}: ${i.message}`).join('; ')}`, issues)
  }
  return result.data
}
