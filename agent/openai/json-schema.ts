/**
 * response_format → the grammar constrained decoding follows (agent/executor/json-constraint.ts).
 *
 * json_object: any JSON object. json_schema: a practical subset of JSON Schema — type (object, array,
 * string, number, integer, boolean, null, or a list of them), properties + required, enum, const, items,
 * additionalProperties (true/false), nested; annotations (title, description, default, examples, $schema,
 * $id, $comment) are ignored. Any other keyword is refused with a 400 that names it and where it is, and
 * so is a schema no value can satisfy (enum [], a required property whose schema is false…).
 *
 * Objects are written with their declared properties in declared order (the required ones always);
 * properties beyond those declared are never generated, which every schema here allows.
 */
import { createHash } from 'node:crypto'
import { MAX_GRAMMAR_KEY_CHARS, MAX_GRAMMAR_LITERAL_CHARS } from '../executor/json-constraint.ts'
import type { GrammarNode, GrammarProp } from '../executor/json-constraint.ts'
import type { TextTokenizer } from '../model/tokenizer.ts'
import { OpenAIError } from './errors.ts'

export type ResponseFormat =
  | { type: 'text' }
  | { type: 'json_object' }
  | { type: 'json_schema', json_schema: { name: string, description?: string, schema?: unknown, strict?: boolean | null } }

const SUPPORTED = ['type', 'properties', 'required', 'enum', 'const', 'items', 'additionalProperties']
const ANNOTATIONS = new Set(['title', 'description', 'default', 'examples', '$schema', '$id', '$comment', 'deprecated', 'readOnly', 'writeOnly'])
const TYPES = new Set(['object', 'array', 'string', 'number', 'integer', 'boolean', 'null'])
const MAX_DEPTH = 32
const MAX_PROPERTIES = 256
const MAX_ENUM = 1024

type Compiled = { node: GrammarNode } | { unsat: string }

function refuse (message: string): OpenAIError {
  return new OpenAIError(400, `response_format.json_schema: ${message}`, 'invalid_json_schema', 'invalid_request_error', 'response_format')
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const at = (path: string): string => path === '' ? '#' : `#${path}`

/** The JSON type of a value, as JSON Schema names it. */
function typeOf (v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'array'
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number'
  return typeof v
}

const typeMatches = (v: unknown, t: string): boolean => {
  const vt = typeOf(v)
  return vt === t || (t === 'number' && vt === 'integer')
}

/**
 * Whether `value` satisfies `schema` (the subset this module accepts; it is the check tests and
 * enum filtering use). Schemas are assumed already accepted by grammarFromSchema.
 */
export function validateJson (value: unknown, schema: unknown): boolean {
  if (schema === true || schema === undefined) return true
  if (schema === false || !isPlainObject(schema)) return false
  const s = schema
  if ('const' in s && JSON.stringify(value) !== JSON.stringify(s.const)) return false
  if (Array.isArray(s.enum) && !s.enum.some(e => JSON.stringify(e) === JSON.stringify(value))) return false
  if (s.type != null) {
    const types = Array.isArray(s.type) ? s.type as string[] : [s.type as string]
    if (!types.some(t => typeMatches(value, t))) return false
  }
  if (isPlainObject(value)) {
    const props = isPlainObject(s.properties) ? s.properties : {}
    if (Array.isArray(s.required) && !s.required.every(k => typeof k === 'string' && Object.hasOwn(value, k))) return false
    for (const [k, v] of Object.entries(value)) {
      if (Object.hasOwn(props, k)) { if (!validateJson(v, props[k])) return false } else if (s.additionalProperties === false) return false
    }
  }
  if (Array.isArray(value) && s.items !== undefined && !value.every(v => validateJson(v, s.items))) return false
  return true
}

function compileSchema (schema: unknown, path: string, depth: number): Compiled {
  if (depth > MAX_DEPTH) throw refuse(`the schema is nested more than ${MAX_DEPTH} deep (at ${at(path)})`)
  if (schema === true) return { node: { type: 'any' } }
  if (schema === false) return { unsat: `the schema at ${at(path)} is false` }
  if (!isPlainObject(schema)) throw refuse(`the schema at ${at(path)} must be an object or a boolean`)
  for (const k of Object.keys(schema)) {
    if (!SUPPORTED.includes(k) && !ANNOTATIONS.has(k)) throw refuse(`the keyword \`${k}\` (at ${at(path)}) is not supported; supported: ${SUPPORTED.join(', ')}`)
  }
  let types: string[] | null = null
  if (schema.type !== undefined) {
    types = Array.isArray(schema.type) ? schema.type : [schema.type]
    for (const t of types) if (typeof t !== 'string' || !TYPES.has(t)) throw refuse(`\`type\` ${JSON.stringify(t)} (at ${at(path)}) is not a JSON Schema type`)
    if (types.length === 0) return { unsat: `\`type\` is an empty list (at ${at(path)})` }
  }
  if (schema.additionalProperties !== undefined && typeof schema.additionalProperties !== 'boolean' &&
      !(isPlainObject(schema.additionalProperties) && Object.keys(schema.additionalProperties).length === 0)) {
    throw refuse(`\`additionalProperties\` as a schema (at ${at(path)}) is not supported; use true or false`)
  }
  if (schema.properties !== undefined && !isPlainObject(schema.properties)) throw refuse(`\`properties\` (at ${at(path)}) must be an object`)
  if (schema.required !== undefined && (!Array.isArray(schema.required) || !schema.required.every(r => typeof r === 'string'))) throw refuse(`\`required\` (at ${at(path)}) must be a list of names`)
  if (schema.items !== undefined && !isPlainObject(schema.items) && typeof schema.items !== 'boolean') throw refuse(`\`items\` (at ${at(path)}) must be a schema (tuples, items as a list, are not supported)`)
  if (schema.enum !== undefined && !Array.isArray(schema.enum)) throw refuse(`\`enum\` (at ${at(path)}) must be a list`)
  if (Array.isArray(schema.enum) && schema.enum.length > MAX_ENUM) throw refuse(`\`enum\` (at ${at(path)}) has more than ${MAX_ENUM} values`)
  if (isPlainObject(schema.properties) && Object.keys(schema.properties).length > MAX_PROPERTIES) throw refuse(`more than ${MAX_PROPERTIES} properties (at ${at(path)})`)
  if (isPlainObject(schema.properties)) {
    const long = Object.keys(schema.properties).find(k => k.length > MAX_GRAMMAR_KEY_CHARS)
    if (long != null) throw refuse(`a property name longer than ${MAX_GRAMMAR_KEY_CHARS} characters (at ${at(path)})`)
  }
  // sub-schemas are checked (and refused) whether or not the value's type reaches them
  const props: Array<[string, Compiled]> = isPlainObject(schema.properties)
    ? Object.entries(schema.properties).map(([k, v]) => [k, compileSchema(v, `${path}/properties/${k}`, depth + 1)])
    : []
  const items = schema.items !== undefined ? compileSchema(schema.items, `${path}/items`, depth + 1) : null

  // enum and const: the listed values that the rest of the schema accepts, written as JSON
  if (schema.enum !== undefined || 'const' in schema) {
    let values: unknown[] = Array.isArray(schema.enum) ? schema.enum : [schema.const]
    if (Array.isArray(schema.enum) && 'const' in schema) values = values.filter(v => JSON.stringify(v) === JSON.stringify(schema.const))
    const rest = { ...schema }
    delete rest.enum
    delete rest.const
    const ok = values.filter(v => validateJson(v, rest))
    if (ok.length === 0) {
      return { unsat: schema.enum !== undefined && (schema.enum as unknown[]).length === 0 ? `\`enum\` is empty (at ${at(path)})` : `no value of \`${schema.enum !== undefined ? 'enum' : 'const'}\` satisfies the rest of the schema (at ${at(path)})` }
    }
    const texts = [...new Set(ok.map(v => JSON.stringify(v)))]
    if (texts.some(t => t.length > MAX_GRAMMAR_LITERAL_CHARS)) throw refuse(`a value of \`${schema.enum !== undefined ? 'enum' : 'const'}\` longer than ${MAX_GRAMMAR_LITERAL_CHARS} characters as JSON (at ${at(path)})`)
    return { node: { type: 'literal', values: texts } }
  }

  const hasObjectKeywords = schema.properties !== undefined || schema.required !== undefined || schema.additionalProperties !== undefined
  const wanted = types ?? (hasObjectKeywords ? ['object'] : schema.items !== undefined ? ['array'] : null)
  if (wanted == null) return { node: { type: 'any' } }

  const options: GrammarNode[] = []
  const literals: string[] = []
  const reasons: string[] = []
  for (const t of new Set(wanted.includes('number') ? wanted.filter(t => t !== 'integer') : wanted)) {
    switch (t) {
      case 'string': options.push({ type: 'string' }); break
      case 'number': options.push({ type: 'number', integer: false }); break
      case 'integer': options.push({ type: 'number', integer: true }); break
      case 'boolean': literals.push('true', 'false'); break
      case 'null': literals.push('null'); break
      case 'array':
        options.push({ type: 'array', items: items == null ? { type: 'any' } : 'node' in items ? items.node : null })
        break
      case 'object': {
        const o = objectNode(schema, props, path)
        if ('node' in o) options.push(o.node)
        else reasons.push(o.unsat)
        break
      }
    }
  }
  if (literals.length > 0) options.push({ type: 'literal', values: literals })
  if (options.length === 0) return { unsat: reasons[0] ?? `no type can be satisfied (at ${at(path)})` }
  return { node: options.length === 1 ? options[0] : { type: 'union', options } }
}

function objectNode (schema: Record<string, unknown>, props: Array<[string, Compiled]>, path: string): Compiled {
  const required = new Set(Array.isArray(schema.required) ? schema.required as string[] : [])
  const closed = schema.additionalProperties === false
  if (schema.properties === undefined && required.size === 0 && !closed) return { node: { type: 'object', props: null } }
  const out: GrammarProp[] = []
  for (const [key, c] of props) {
    if ('unsat' in c) {
      if (required.has(key)) return { unsat: `the required property \`${key}\` cannot be satisfied: ${c.unsat}` }
      continue
    }
    out.push({ key, value: c.node, required: required.has(key) })
  }
  for (const key of required) {
    if (props.some(([k]) => k === key)) continue
    if (closed) return { unsat: `\`${key}\` is required but not in \`properties\`, and additionalProperties is false (at ${at(path)})` }
    out.push({ key, value: { type: 'any' }, required: true })
  }
  return { node: { type: 'object', props: out } }
}

/** The grammar for a JSON Schema; a 400 for what is not supported or cannot be satisfied. */
export function grammarFromSchema (schema: unknown): GrammarNode {
  const c = compileSchema(schema ?? {}, '', 0)
  if ('unsat' in c) throw refuse(`the schema cannot be satisfied: ${c.unsat}`)
  return c.node
}

export interface JsonGrammar { grammar: GrammarNode, key: string }

/** The grammar a response_format asks for, or null for plain text. */
export function grammarFromResponseFormat (rf: ResponseFormat | null | undefined): JsonGrammar | null {
  if (rf == null || rf.type === 'text') return null
  const grammar: GrammarNode = rf.type === 'json_object' ? { type: 'object', props: null } : grammarFromSchema(rf.json_schema.schema)
  const key = createHash('sha256').update(JSON.stringify(grammar)).digest('hex').slice(0, 32)
  return { grammar, key }
}

export interface VocabTexts { key: string, size: number, texts: Array<string | null> }

const vocabs = new WeakMap<TextTokenizer, Promise<VocabTexts>>()
let vocabSerial = 0

/**
 * Each token's own text, as it reads in the middle of a text (decoded after an ordinary token and
 * cut, so SentencePiece's leading space counts); null for tokens that cannot appear in JSON text on
 * their own: special tokens, EOS, and pieces of a UTF-8 character. Computed once per tokenizer, in
 * slices that leave the event loop free (a 262k vocabulary takes seconds).
 */
export async function tokenVocab (tokenizer: TextTokenizer): Promise<VocabTexts> {
  let v = vocabs.get(tokenizer)
  if (v == null) {
    v = buildVocab(tokenizer)
    vocabs.set(tokenizer, v)
    v.catch(() => { vocabs.delete(tokenizer) })
  }
  return await v
}

async function buildVocab (tokenizer: TextTokenizer): Promise<VocabTexts> {
  const anchorIds = tokenizer.encode('a')
  const anchor = anchorIds.length === 1 ? anchorIds[0] : null
  const base = anchor != null ? tokenizer.decode([anchor]) : ''
  const eos = new Set(tokenizer.eosIds)
  const texts: Array<string | null> = []
  let slice = performance.now()
  for (let id = 0; id < tokenizer.vocabSize; id++) {
    if (performance.now() - slice > 20) {
      await new Promise(resolve => setImmediate(resolve))
      slice = performance.now()
    }
    if (eos.has(id)) { texts.push(null); continue }
    let t = tokenizer.decode([id])
    if (anchor != null && t !== '') {
      const both = tokenizer.decode([anchor, id])
      if (both.startsWith(base)) t = both.slice(base.length)
    }
    texts.push(t === '' || t.includes('\uFFFD') ? null : t)
  }
  return { key: `vocab-${process.pid}-${++vocabSerial}`, size: Math.max(tokenizer.vocabSize, ...tokenizer.eosIds.map(e => e + 1)), texts }
}
