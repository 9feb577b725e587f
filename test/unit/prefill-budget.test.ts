import { test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { MIN_CHUNK, PREFILL_CHUNK, PROMPT_MS_FIRST, PromptBudget, promptRowsFirst } from '../../agent/executor/prefill.ts'

test('before any prompt run, and whenever nothing decodes, a turn takes two chunks of prompt rows', () => {
  const b = new PromptBudget()
  assert.equal(b.rowsPerMs, 0)
  assert.equal(b.chunkRows(true), PREFILL_CHUNK, 'no rate yet: a whole chunk')
  assert.equal(b.more(0, 0, PREFILL_CHUNK, true), true, 'a turn\'s first step always runs')
  assert.equal(b.more(PREFILL_CHUNK, 10_000, PREFILL_CHUNK, false), true, 'nothing decodes: time does not count')
  assert.equal(b.more(promptRowsFirst(PREFILL_CHUNK), 1, 1, false), false, 'two chunks is the most a turn takes')
  b.observe(256, 2000) // a slow box: 0.128 rows per ms
  assert.equal(b.chunkRows(false), PREFILL_CHUNK)
  assert.equal(b.more(300, 5_000, 200, false), true)
})

test('while others decode, a slow box cuts chunks that fit the time budget, never below MIN_CHUNK, and stops a turn\'s prompts when the next would pass it', () => {
  const b = new PromptBudget()
  b.observe(256, 750) // SmolLM2 on one thread: ~0.34 rows per ms
  const rows = b.chunkRows(true)
  assert.equal(rows, Math.floor(256 / 750 * PROMPT_MS_FIRST))
  assert.ok(rows < PREFILL_CHUNK && rows >= MIN_CHUNK)
  assert.equal(b.more(rows, 190, rows, true), false, 'another chunk would pass the budget')
  assert.equal(b.more(20, 50, 20, true), true, 'a short prompt after another still fits')
  const slow = new PromptBudget()
  slow.observe(256, 60_000) // very slow
  assert.equal(slow.chunkRows(true), MIN_CHUNK)
  const fast = new PromptBudget()
  fast.observe(256, 20) // a GPU: the row bound decides
  assert.equal(fast.chunkRows(true), PREFILL_CHUNK)
  assert.equal(fast.more(256, 20, 256, true), true)
  assert.equal(fast.more(512, 40, 256, true), false)
})

test('runs of fewer than 8 rows (decode-like) and empty timings do not move the rate', () => {
  const b = new PromptBudget()
  b.observe(4, 100)
  b.observe(100, 0)
  assert.equal(b.rowsPerMs, 0)
  b.observe(100, 100)
  assert.equal(b.rowsPerMs, 1)
  b.observe(200, 100)
  assert.ok(Math.abs(b.rowsPerMs - (0.7 * 1 + 0.3 * 2)) < 1e-12, 'a moving average')
})

test('a chunk is always between MIN_CHUNK (or the chunk, if smaller) and the chunk, and a turn never passes two chunks', () => {
  fc.assert(fc.property(fc.integer({ min: 1, max: 4096 }), fc.array(fc.tuple(fc.integer({ min: 0, max: 5000 }), fc.double({ min: 0, max: 1e6, noNaN: true })), { maxLength: 8 }), fc.boolean(), fc.integer({ min: 1, max: 10_000 }), fc.double({ min: 0, max: 1e5, noNaN: true }),
    (chunk, runs, decoding, rows, elapsed) => {
      const b = new PromptBudget(chunk)
      for (const [r, ms] of runs) b.observe(r, ms)
      const n = b.chunkRows(decoding)
      assert.ok(Number.isInteger(n) && n >= Math.min(MIN_CHUNK, chunk) && n <= chunk, `chunk ${n} of ${chunk}`)
      if (rows >= 2 * chunk) assert.equal(b.more(rows, elapsed, n, decoding), false)
    }))
  assert.throws(() => new PromptBudget(0), RangeError)
  assert.throws(() => new PromptBudget(2.5), RangeError)
})
