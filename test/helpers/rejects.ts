import assert from 'node:assert/strict'
import { ModelSourceError } from '../../agent/model/source.ts'
import type { ModelSourceReason } from '../../agent/model/source.ts'

/** Awaits `p`, which must reject with a ModelSourceError of `reason` (and a message matching `message`). */
export async function rejectsWith (p: Promise<unknown>, reason: ModelSourceReason, message?: RegExp): Promise<ModelSourceError> {
  let caught: unknown
  try {
    await p
  } catch (err) {
    caught = err
  }
  assert.ok(caught instanceof ModelSourceError, `expected a ModelSourceError (${reason}), got ${String(caught)}`)
  assert.equal(caught.reason, reason, caught.message)
  assert.equal(caught.name, 'ModelSourceError')
  assert.equal(caught.code, 'model_source')
  if (message !== undefined) assert.match(caught.message, message)
  return caught
}
