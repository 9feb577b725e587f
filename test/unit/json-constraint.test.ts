/**
 * Constrained JSON decoding without a model: the grammar against JSON.parse, random walks over a
 * synthetic vocabulary (any allowed token at each step, like sampling at a high temperature), the
 * token budget that closes a document in time, and the 400s for schemas it refuses.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { Rng } from '../../agent/model/random.ts'
import { CompiledGrammar, JsonConstraint, TokenVocab, canEnd, feedText, initialState, maskCount, maskHas, minCompletionLength } from '../../agent/executor/json-constraint.ts'
import type { GrammarNode } from '../../agent/executor/json-constraint.ts'
import { grammarFromResponseFormat, grammarFromSchema, validateJson } from '../../agent/openai/json-schema.ts'
import { OpenAIError } from '../../agent/openai/errors.ts'

const ANY_OBJECT: GrammarNode = { type: 'object', props: null }
const ANY: GrammarNode = { type: 'any' }

// every printable ASCII character and newline on its own, plus multi-character pieces like a BPE vocabulary's
const FRAGMENTS = ['{"', '":', '",', '"}', ' "', '"]', '}]', '],', '},', ': ', ', ', '\n  ', 'true', 'false', 'null', 'nul', 'tr', '12', '0.', '.5', 'e-', 'E+', '-0', '\\n', '\\"', '\\u00', 'e9', 'ab', 'name', 'age', 'hello world', '"name', '"age":', '[{', '}}', '\\\\', '"a"', 'é', '😀', '\t']
const TEXTS: Array<string | null> = []
for (let c = 0x20; c < 0x7f; c++) TEXTS.push(String.fromCharCode(c))
TEXTS.push('\n', ...FRAGMENTS, null)
const EOS = TEXTS.length - 1
const VOCAB = new TokenVocab(TEXTS)

/** A random walk: at each step any allowed token, uniformly; the text and why it ended. */
function walk (grammar: GrammarNode, seed: number, budget: number): { text: string, end: 'done' | 'eos' | 'length' } {
  const c = new JsonConstraint(new CompiledGrammar(grammar), VOCAB, [EOS])
  const rng = new Rng(seed)
  let text = ''
  for (let i = 0; i < budget; i++) {
    const mask = c.allowed(budget - i)
    const ids: number[] = []
    for (let id = 0; id < TEXTS.length; id++) if (maskHas(mask, id)) ids.push(id)
    assert.ok(ids.length > 0, `no token allowed after ${JSON.stringify(text)}`)
    const id = ids[Math.floor(rng.next() * ids.length)]
    if (id === EOS) return { text, end: 'eos' }
    assert.ok(c.accept(id))
    text += TEXTS[id] as string
    if (c.done) return { text, end: 'done' }
  }
  return { text, end: 'length' }
}

test('grammar ≡ JSON: every JSON text is accepted and may end; whatever the grammar lets end, JSON.parse reads', () => {
  const g = new CompiledGrammar(ANY)
  fc.assert(fc.property(fc.jsonValue({ maxDepth: 5 }), fc.constantFrom(undefined, 1, 2), (v, indent) => {
    const text = JSON.stringify(v, null, indent)
    const s = feedText(g, initialState(g), text)
    assert.ok(s != null, text)
    assert.ok(canEnd(s), text)
    // every prefix is a valid prefix
    for (let i = 0; i < text.length; i += 7) assert.ok(feedText(g, initialState(g), text.slice(0, i)) != null)
  }), { numRuns: 300 })
  const alphabet = fc.constantFrom(...'{}[]",:0123456789-+.eEtrufalsn \\u/bx'.split(''))
  fc.assert(fc.property(fc.array(alphabet, { maxLength: 24 }).map(a => a.join('')), text => {
    const s = feedText(g, initialState(g), text)
    if (s != null && canEnd(s)) JSON.parse(text)
  }), { numRuns: 3000 })
})

test('whitespace runs are bounded, leading zeros and trailing commas refused', () => {
  const g = new CompiledGrammar(ANY)
  const ok = (t: string): boolean => { const s = feedText(g, initialState(g), t); return s != null && canEnd(s) }
  assert.ok(ok('[1, 2]'))
  assert.ok(!ok('[1,]'))
  assert.ok(!ok('{"a":1,}'))
  assert.ok(!ok('01'))
  assert.ok(!ok('"a\nb"'))
  assert.ok(ok('"a\\nb\\u00e9"'))
  assert.ok(feedText(g, initialState(g), '[' + ' '.repeat(30)) == null)
})

test('random walks over the vocabulary always give JSON objects (json_object), and stop when the object closes', () => {
  for (let seed = 0; seed < 200; seed++) {
    const { text, end } = walk(ANY_OBJECT, seed, 60)
    assert.notEqual(end, 'length', text)
    const v = JSON.parse(text)
    assert.ok(typeof v === 'object' && v !== null && !Array.isArray(v), text)
  }
})

/** Random schemas of the supported subset. */
const schemaArb = fc.letrec(tie => ({
  leaf: fc.oneof(
    fc.constantFrom({ type: 'string' }, { type: 'number' }, { type: 'integer' }, { type: 'boolean' }, { type: 'null' }, {}),
    fc.record({ enum: fc.array(fc.jsonValue({ maxDepth: 1 }), { minLength: 1, maxLength: 4 }) }),
    fc.record({ const: fc.jsonValue({ maxDepth: 1 }) }),
    fc.subarray(['string', 'number', 'integer', 'boolean', 'null', 'object', 'array'], { minLength: 1 }).map(type => ({ type }))
  ),
  node: fc.oneof({ depthSize: 'small', withCrossShrink: true }, tie('leaf'), tie('array'), tie('object')),
  array: fc.record({ type: fc.constant('array'), items: tie('node') }),
  object: fc.dictionary(fc.constantFrom('a', 'b', 'name', 'x y', 'é', 'q"'), tie('node'), { maxKeys: 4 }).chain(properties => fc.record({
    type: fc.constant('object'),
    properties: fc.constant(properties),
    required: fc.subarray(Object.keys(properties)),
    additionalProperties: fc.boolean()
  }))
})).object

test('random walks always give JSON that validates against random schemas, within the token budget', () => {
  fc.assert(fc.property(schemaArb, fc.integer({ min: 0, max: 2 ** 30 }), (schema, seed) => {
    let grammar: GrammarNode
    try {
      grammar = grammarFromSchema(schema)
    } catch (err) {
      // only schemas no value can satisfy are refused here (an enum that is all of the wrong type)
      assert.ok(err instanceof OpenAIError && /cannot be satisfied/.test(err.message), (err as Error).message)
      return
    }
    const g = new CompiledGrammar(grammar)
    const budget = minCompletionLength(initialState(g)) + 40
    const { text, end } = walk(grammar, seed, budget)
    assert.notEqual(end, 'length', `${JSON.stringify(schema)}: ran out of budget with ${JSON.stringify(text)}`)
    const v = JSON.parse(text)
    assert.ok(validateJson(v, schema), `${JSON.stringify(schema)}: ${text}`)
  }), { numRuns: 300 })
})

test('the budget closes a document in time: a walk never runs past max_tokens once the shortest completion fits', () => {
  const schema = { type: 'object', properties: { name: { type: 'string' }, tags: { type: 'array', items: { type: 'string' } }, n: { type: 'number' } }, required: ['name', 'tags', 'n'], additionalProperties: false }
  const grammar = grammarFromSchema(schema)
  const need = minCompletionLength(initialState(new CompiledGrammar(grammar)))
  assert.equal(need, '{"name":"","tags":[],"n":0}'.length)
  for (let seed = 0; seed < 100; seed++) {
    const { text, end } = walk(grammar, seed, need + (seed % 10))
    assert.notEqual(end, 'length', text)
    assert.ok(validateJson(JSON.parse(text), schema), text)
  }
})

test('schema objects: declared properties in order, the required ones always, nothing else', () => {
  const schema = { type: 'object', properties: { a: { type: 'integer' }, b: { enum: ['x', 'y'] }, c: { type: 'boolean' } }, required: ['b'] }
  const g = new CompiledGrammar(grammarFromSchema(schema))
  const ends = (t: string): boolean => { const s = feedText(g, initialState(g), t); return s != null && canEnd(s) }
  assert.ok(ends('{"b":"x"}'))
  assert.ok(ends('{"a": 1, "b": "y", "c": true}'))
  assert.ok(!ends('{"a":1}'), 'b is required')
  assert.ok(feedText(g, initialState(g), '{"b":"x","a"') == null, 'a comes before b')
  assert.ok(feedText(g, initialState(g), '{"b":"z"') == null, 'not in the enum')
  assert.ok(feedText(g, initialState(g), '{"a":1.5') == null, 'an integer')
  assert.ok(feedText(g, initialState(g), '{"d"') == null, 'not declared')
})

test('masks: only tokens that keep a valid prefix; EOS only when complete; cached per state', () => {
  const c = new JsonConstraint(new CompiledGrammar({ type: 'number', integer: false }), VOCAB, [EOS])
  const first = c.allowed()
  const allowed = TEXTS.map((t, id) => maskHas(first, id) ? t : undefined).filter(t => t !== undefined)
  assert.deepEqual(new Set(allowed), new Set([' ', '\n', '\t', '\n  ', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '12', '0.', '-0']))
  assert.ok(!maskHas(first, EOS))
  assert.ok(c.accept(TEXTS.indexOf('12')))
  const after = c.allowed()
  assert.ok(maskHas(after, EOS), 'a complete number may end')
  assert.ok(maskHas(after, TEXTS.indexOf('.5')))
  assert.ok(!c.done, 'a number could go on')
  const again = new JsonConstraint(c.grammar, VOCAB, [EOS])
  assert.equal(again.allowed(), first, 'the same state reuses its mask')
  assert.ok(maskCount(first) > 0)
})

test('json_schema refusals name the keyword or the reason, as 400s on response_format', () => {
  const refused = (schema: unknown, re: RegExp): void => {
    assert.throws(() => grammarFromResponseFormat({ type: 'json_schema', json_schema: { name: 't', schema } }), (e: unknown) =>
      e instanceof OpenAIError && e.status === 400 && e.param === 'response_format' && re.test(e.message))
  }
  refused({ type: 'string', pattern: '^a' }, /`pattern`.*not supported/)
  refused({ anyOf: [{ type: 'string' }] }, /`anyOf`/)
  refused({ type: 'object', properties: { a: { $ref: '#/x' } } }, /`\$ref` \(at #\/properties\/a\)/)
  refused({ type: 'string', minLength: 1 }, /`minLength`/)
  refused({ enum: [] }, /cannot be satisfied: `enum` is empty/)
  refused({ type: 'object', properties: { a: { enum: [] } }, required: ['a'] }, /required property `a` cannot be satisfied/)
  refused({ type: 'object', required: ['z'], additionalProperties: false }, /`z` is required but not in `properties`/)
  refused({ type: [] }, /empty list/)
  refused({ type: 'integer', const: 'x' }, /no value of `const`/)
  refused({ type: 'strng' }, /not a JSON Schema type/)
  refused(false, /cannot be satisfied/)
  refused({ type: 'object', additionalProperties: { type: 'string' } }, /additionalProperties/)
  // past what the mesh's generate frame carries (a host would refuse the frame and strike this agent): refused here
  refused({ enum: ['x'.repeat(5000)] }, /`enum` longer than 4096 characters/)
  refused({ const: { a: 'y'.repeat(4100) } }, /`const` longer than 4096 characters/)
  refused({ type: 'object', properties: { ['k'.repeat(1025)]: { type: 'string' } } }, /property name longer than 1024/)
  assert.doesNotThrow(() => grammarFromSchema({ enum: ['x'.repeat(4000)] }))
  // an optional property that cannot be satisfied is simply never written
  const g = grammarFromSchema({ type: 'object', properties: { a: false, b: { type: 'null' } } })
  assert.deepEqual(g, { type: 'object', props: [{ key: 'b', value: { type: 'literal', values: ['null'] }, required: false }] })
  assert.equal(grammarFromResponseFormat({ type: 'text' }), null)
  assert.deepEqual(grammarFromResponseFormat({ type: 'json_object' })?.grammar, ANY_OBJECT)
})
