/**
 * Constrained JSON decoding: a character-level JSON grammar (a pushdown automaton over an immutable
 * stack of frames), the model's token texts in a trie, and per step the set of tokens whose text keeps
 * the output a valid prefix of a document the grammar accepts. EOS is allowed only once the document is
 * complete; a complete document that cannot grow (an object, an array, a string…) ends the sequence.
 *
 * Near the end of the token budget only tokens after which the shortest completion still fits are
 * allowed (one character costs at most one token), so a document is closed before max_tokens runs out.
 *
 * Pure and self-contained: the worker threads (whole models) and the vDAG driver run it as is. A
 * grammar (GrammarNode) is plain JSON, built from a response_format by agent/openai/json-schema.ts.
 */

/** A grammar's literal (a JSON text) and a property's name are at most this long (the mesh frame carrying a grammar checks the same). */
export const MAX_GRAMMAR_LITERAL_CHARS = 4096
export const MAX_GRAMMAR_KEY_CHARS = 1024

/** What the output must be: any JSON value, or a practical subset of JSON Schema (see json-schema.ts). */
export type GrammarNode =
  | { type: 'any' }
  | { type: 'string' }
  | { type: 'number', integer: boolean }
  /** exactly one of these JSON texts (enum, const, booleans, null) */
  | { type: 'literal', values: string[] }
  /** props null: any object; otherwise these properties, in this order, the required ones always */
  | { type: 'object', props: GrammarProp[] | null }
  /** items null: only the empty array */
  | { type: 'array', items: GrammarNode | null }
  /** alternatives that start with different characters (JSON Schema type arrays) */
  | { type: 'union', options: GrammarNode[] }
export interface GrammarProp { key: string, value: GrammarNode, required: boolean }

/** Whitespace between tokens: at most this many characters in a row (a model cannot spin on newlines). */
export const MAX_WS_RUN = 24
/** The exact budget check starts when the tokens left are within this many of the shortest completion. */
export const BUDGET_WINDOW = 64

// ---------------------------------------------------------------- compiled grammar

interface CProp { q: string, value: CNode, required: boolean }
interface CNode {
  id: number
  t: 'any' | 'string' | 'number' | 'literal' | 'object' | 'array' | 'union'
  integer: boolean
  values: string[]
  /** schema object: properties with their quoted keys; null = any object */
  props: CProp[] | null
  /** per `next` (0..props.length): the property indices a key may name there */
  cands: number[][]
  /** per `next`: the shortest text that closes the object from after a value (`,"k":v…}`) */
  restAfter: number[]
  /** per `next`: the shortest text after `{` or `,` that closes the object, given one key must come after `,` */
  restOpen: number[]
  restKey: number[]
  items: CNode | null
  options: CNode[]
  /** length of the shortest JSON text this node accepts */
  minLen: number
}

const Q = 0x22
const BS = 0x5c
const isWs = (c: number): boolean => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09
const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39
const isHex = (c: number): boolean => isDigit(c) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66)
/** a character that stands for itself inside a JSON string */
const isPlain = (c: number): boolean => c >= 0x20 && c !== Q && c !== BS

export class CompiledGrammar {
  readonly root: CNode
  readonly any: CNode
  private readonly anyArray: CNode
  private readonly anyObject: CNode
  private readonly anyLiteral: CNode
  private nextId = 0
  /** allowed-token bitsets by parser state (outside the budget window) */
  readonly masks = new Map<string, Uint8Array>()

  constructor (node: GrammarNode) {
    this.any = this.blank('any')
    this.any.minLen = 1
    this.anyArray = this.blank('array')
    this.anyArray.items = this.any
    this.anyArray.minLen = 2
    this.anyObject = this.blank('object')
    this.anyObject.minLen = 2
    this.anyLiteral = this.blank('literal')
    this.anyLiteral.values = ['true', 'false', 'null']
    this.anyLiteral.minLen = 4
    this.root = this.compile(node)
  }

  get anyArrayNode (): CNode { return this.anyArray }
  get anyObjectNode (): CNode { return this.anyObject }
  get anyLiteralNode (): CNode { return this.anyLiteral }

  private blank (t: CNode['t']): CNode {
    return { id: this.nextId++, t, integer: false, values: [], props: null, cands: [], restAfter: [], restOpen: [], restKey: [], items: null, options: [], minLen: 0 }
  }

  private compile (g: GrammarNode): CNode {
    switch (g.type) {
      case 'any': return this.any
      case 'string': { const n = this.blank('string'); n.minLen = 2; return n }
      case 'number': { const n = this.blank('number'); n.integer = g.integer; n.minLen = 1; return n }
      case 'literal': {
        if (g.values.length === 0) throw new Error('a literal needs at least one value')
        const n = this.blank('literal')
        n.values = [...new Set(g.values)]
        n.minLen = Math.min(...n.values.map(v => v.length))
        return n
      }
      case 'array': {
        const n = this.blank('array')
        n.items = g.items == null ? null : this.compile(g.items)
        n.minLen = 2
        return n
      }
      case 'union': {
        if (g.options.length === 0) throw new Error('a union needs at least one option')
        const n = this.blank('union')
        n.options = g.options.map(o => this.compile(o))
        n.minLen = Math.min(...n.options.map(o => o.minLen))
        return n
      }
      case 'object': {
        if (g.props == null) return this.anyObject
        const n = this.blank('object')
        const props: CProp[] = g.props.map(p => ({ q: JSON.stringify(p.key), value: this.compile(p.value), required: p.required }))
        n.props = props
        const P = props.length
        const entry = (j: number): number => props[j].q.length + 1 + props[j].value.minLen
        // restAfter[next]: `,"k":v` for every required property from `next` on, then `}`
        n.restAfter = new Array<number>(P + 1)
        n.restAfter[P] = 1
        for (let j = P - 1; j >= 0; j--) n.restAfter[j] = n.restAfter[j + 1] + (props[j].required ? 1 + entry(j) : 0)
        // restKey[next]: after `,` — one property must come: the first required one, or the cheapest optional one
        n.restKey = new Array<number>(P + 1)
        n.cands = new Array<number[]>(P + 1)
        for (let next = 0; next <= P; next++) {
          const c: number[] = []
          for (let j = next; j < P; j++) { c.push(j); if (props[j].required) break }
          n.cands[next] = c
          n.restKey[next] = c.length === 0 ? Infinity : Math.min(...c.map(j => entry(j) + n.restAfter[j + 1]))
        }
        // restOpen[next]: after `{` — `}` at once when nothing is required
        // restOpen[next]: after `{` — `}` at once when nothing is required, else as after `,`
        n.restOpen = n.restAfter.map((after, next) => after > 1 ? n.restKey[next] : 1)
        n.minLen = 1 + n.restOpen[0]
        return n
      }
    }
  }
}

// ---------------------------------------------------------------- parser states

const VAL = 0
const STR = 1
const LIT = 2
const NUM = 3
const OBJ = 4
const KEY = 5
const ARR = 6

// number phases; ZERO, INT, FRAC and EXP are complete
const N_MINUS = 0
const N_ZERO = 1
const N_INT = 2
const N_DOT = 3
const N_FRAC = 4
const N_E = 5
const N_ESIGN = 6
const N_EXP = 7
const numComplete = (ph: number): boolean => ph === N_ZERO || ph === N_INT || ph === N_FRAC || ph === N_EXP

// object phases
const O_OPEN = 0
const O_KEY = 1
const O_COLON = 2
const O_AFTER = 3
// array phases
const A_OPEN = 0
const A_AFTER = 1
const A_COMMA = 2

type Frame =
  | { k: typeof VAL, n: CNode }
  /** e: 0 plain, 1 after a backslash, 2..5 after `\u` and e-2 hex digits */
  | { k: typeof STR, e: number }
  /** lid: the literal node (for cache keys); vals: the candidates still matching after `pos` characters */
  | { k: typeof LIT, lid: number, vals: string[], pos: number }
  | { k: typeof NUM, int: boolean, ph: number }
  /** next: the first property index still allowed; cur: the property whose key was just read (O_COLON) */
  | { k: typeof OBJ, n: CNode, ph: number, next: number, cur: number }
  /** a schema object's key being matched (its parent is the object, in O_COLON) */
  | { k: typeof KEY, cands: number[], pos: number }
  | { k: typeof ARR, n: CNode, ph: number }

/** An immutable parser state: the top frame, the rest of the stack, and the current whitespace run. */
export interface ParseState { readonly f: Frame | null, readonly up: ParseState | null, readonly ws: number }

/** The document is complete and can take nothing more. */
export const DONE: ParseState = { f: null, up: null, ws: 0 }
const STR_FRAMES: Frame[] = [0, 1, 2, 3, 4, 5].map(e => ({ k: STR, e }))

const st = (f: Frame, up: ParseState | null): ParseState => ({ f, up, ws: 0 })
const pop = (s: ParseState): ParseState => s.up ?? DONE

export function initialState (g: CompiledGrammar): ParseState {
  return st({ k: VAL, n: g.root }, null)
}

function wsStep (s: ParseState): ParseState | null {
  return s.ws < MAX_WS_RUN ? { f: s.f, up: s.up, ws: s.ws + 1 } : null
}

function numStart (int: boolean, up: ParseState | null, c: number): ParseState | null {
  if (c === 0x2d) return st({ k: NUM, int, ph: N_MINUS }, up)
  if (c === 0x30) return st({ k: NUM, int, ph: N_ZERO }, up)
  if (isDigit(c)) return st({ k: NUM, int, ph: N_INT }, up)
  return null
}

function litStart (n: CNode, up: ParseState | null, c: number): ParseState | null {
  const vals = n.values.filter(v => v.charCodeAt(0) === c)
  return vals.length === 0 ? null : st({ k: LIT, lid: n.id, vals, pos: 1 }, up)
}

/** `c` (not whitespace) starts a value of node `n`, whose parent state is `up`. */
function startValue (g: CompiledGrammar, n: CNode, up: ParseState | null, c: number): ParseState | null {
  switch (n.t) {
    case 'any':
      if (c === Q) return st(STR_FRAMES[0], up)
      if (c === 0x7b) return st({ k: OBJ, n: g.anyObjectNode, ph: O_OPEN, next: 0, cur: -1 }, up)
      if (c === 0x5b) return st({ k: ARR, n: g.anyArrayNode, ph: A_OPEN }, up)
      if (c === 0x74 || c === 0x66 || c === 0x6e) return litStart(g.anyLiteralNode, up, c)
      return numStart(false, up, c)
    case 'string': return c === Q ? st(STR_FRAMES[0], up) : null
    case 'number': return numStart(n.integer, up, c)
    case 'literal': return litStart(n, up, c)
    case 'object': return c === 0x7b ? st({ k: OBJ, n, ph: O_OPEN, next: 0, cur: -1 }, up) : null
    case 'array': return c === 0x5b ? st({ k: ARR, n, ph: A_OPEN }, up) : null
    case 'union':
      for (const o of n.options) {
        const r = startValue(g, o, up, c)
        if (r != null) return r
      }
      return null
  }
}

function closable (n: CNode, next: number): boolean {
  return n.props == null || n.restAfter[next] === 1
}

function startKey (s: ParseState, f: Extract<Frame, { k: typeof OBJ }>): ParseState | null {
  const obj = st({ k: OBJ, n: f.n, ph: O_COLON, next: f.next, cur: -1 }, s.up)
  if (f.n.props == null) return st(STR_FRAMES[0], obj)
  const cands = f.n.cands[f.next]
  return cands.length === 0 ? null : st({ k: KEY, cands, pos: 1 }, obj)
}

/** The state after character `c` (a UTF-16 code unit), or null when `c` cannot come next. */
export function feed (g: CompiledGrammar, s: ParseState, c: number): ParseState | null {
  const f = s.f
  if (f == null) return null
  switch (f.k) {
    case VAL:
      return isWs(c) ? wsStep(s) : startValue(g, f.n, s.up, c)
    case STR:
      if (f.e === 0) {
        if (isPlain(c)) return s
        if (c === Q) return pop(s)
        if (c === BS) return st(STR_FRAMES[1], s.up)
        return null
      }
      if (f.e === 1) {
        if (c === 0x75) return st(STR_FRAMES[2], s.up)
        return c === Q || c === BS || c === 0x2f || c === 0x62 || c === 0x66 || c === 0x6e || c === 0x72 || c === 0x74 ? st(STR_FRAMES[0], s.up) : null
      }
      if (!isHex(c)) return null
      return st(STR_FRAMES[f.e === 5 ? 0 : f.e + 1], s.up)
    case LIT: {
      const vals = f.vals.filter(v => v.length > f.pos && v.charCodeAt(f.pos) === c)
      if (vals.length > 0) return st({ k: LIT, lid: f.lid, vals, pos: f.pos + 1 }, s.up)
      return f.vals.some(v => v.length === f.pos) ? feed(g, pop(s), c) : null
    }
    case NUM: {
      const ph = f.ph
      const to = (p: number): ParseState => st({ k: NUM, int: f.int, ph: p }, s.up)
      if (isDigit(c)) {
        if (ph === N_MINUS) return to(c === 0x30 ? N_ZERO : N_INT)
        if (ph === N_INT || ph === N_FRAC || ph === N_EXP) return s
        if (ph === N_DOT) return to(N_FRAC)
        if (ph === N_E || ph === N_ESIGN) return to(N_EXP)
      } else if (!f.int && c === 0x2e && (ph === N_ZERO || ph === N_INT)) {
        return to(N_DOT)
      } else if (!f.int && (c === 0x65 || c === 0x45) && (ph === N_ZERO || ph === N_INT || ph === N_FRAC)) {
        return to(N_E)
      } else if ((c === 0x2b || c === 0x2d) && ph === N_E) {
        return to(N_ESIGN)
      }
      return numComplete(ph) ? feed(g, pop(s), c) : null
    }
    case OBJ: {
      if (isWs(c)) return wsStep(s)
      const n = f.n
      switch (f.ph) {
        case O_OPEN:
          if (c === 0x7d) return closable(n, f.next) ? pop(s) : null
          return c === Q ? startKey(s, f) : null
        case O_KEY:
          return c === Q ? startKey(s, f) : null
        case O_COLON: {
          if (c !== 0x3a) return null
          const value = n.props == null ? g.any : n.props[f.cur].value
          return st({ k: VAL, n: value }, st({ k: OBJ, n, ph: O_AFTER, next: n.props == null ? 0 : f.cur + 1, cur: -1 }, s.up))
        }
        default:
          if (c === 0x2c) return n.props == null || f.next < n.props.length ? st({ k: OBJ, n, ph: O_KEY, next: f.next, cur: -1 }, s.up) : null
          if (c === 0x7d) return closable(n, f.next) ? pop(s) : null
          return null
      }
    }
    case KEY: {
      const up = s.up as ParseState
      const obj = up.f as Extract<Frame, { k: typeof OBJ }>
      const props = obj.n.props as CProp[]
      const pos = f.pos
      const cands = f.cands.filter(j => props[j].q.length > pos && props[j].q.charCodeAt(pos) === c)
      if (cands.length === 0) return null
      // quoted keys are prefix-free: the one that ends here is the only match
      if (props[cands[0]].q.length === pos + 1) return st({ k: OBJ, n: obj.n, ph: O_COLON, next: obj.next, cur: cands[0] }, up.up)
      return st({ k: KEY, cands, pos: pos + 1 }, up)
    }
    case ARR: {
      if (isWs(c)) return wsStep(s)
      const n = f.n
      if (f.ph === A_AFTER) {
        if (c === 0x2c) return st({ k: ARR, n, ph: A_COMMA }, s.up)
        return c === 0x5d ? pop(s) : null
      }
      if (f.ph === A_OPEN && c === 0x5d) return pop(s)
      return n.items == null ? null : startValue(g, n.items, st({ k: ARR, n, ph: A_AFTER }, s.up), c)
    }
  }
}

/** Whether the document may end here (after a number or literal that could also go on, it pops first). */
export function canEnd (s: ParseState): boolean {
  if (s === DONE) return true
  const f = s.f
  if (f == null) return true
  if (f.k === NUM && numComplete(f.ph)) return canEnd(pop(s))
  if (f.k === LIT && f.vals.some(v => v.length === f.pos)) return canEnd(pop(s))
  return false
}

/** Feeds a whole text; null if any character is refused. */
export function feedText (g: CompiledGrammar, s: ParseState, text: string): ParseState | null {
  let cur: ParseState | null = s
  for (let i = 0; i < text.length && cur != null; i++) cur = feed(g, cur, text.charCodeAt(i))
  return cur
}

function frameMinLen (f: Frame): number {
  switch (f.k) {
    case VAL: return f.n.minLen
    case STR: return f.e === 0 ? 1 : f.e === 1 ? 2 : 6 - f.e + 1
    case LIT: { let m = Infinity; for (const v of f.vals) m = Math.min(m, v.length - f.pos); return m }
    case NUM: return numComplete(f.ph) ? 0 : 1
    case KEY: return 0 // the object frame below counts the rest of the key (see minCompletionLength)
    case ARR: return f.ph === A_COMMA ? (f.n.items?.minLen ?? Infinity) + 1 : 1
    case OBJ: {
      const n = f.n
      if (n.props == null) return f.ph === O_OPEN || f.ph === O_AFTER ? 1 : f.ph === O_KEY ? 5 : 3
      if (f.ph === O_OPEN) return n.restOpen[f.next]
      if (f.ph === O_KEY) return n.restKey[f.next]
      if (f.ph === O_AFTER) return n.restAfter[f.next]
      return 1 + n.props[f.cur].value.minLen + n.restAfter[f.cur + 1]
    }
  }
}

/** Length of the shortest text that completes the document from `s`. */
export function minCompletionLength (s: ParseState): number {
  let total = 0
  for (let cur: ParseState | null = s; cur != null && cur.f != null; cur = cur.up) {
    const f = cur.f
    if (f.k === KEY) {
      // the rest of the cheapest candidate key, then its value and what the object still needs
      const obj = (cur.up as ParseState).f as Extract<Frame, { k: typeof OBJ }>
      const props = obj.n.props as CProp[]
      let m = Infinity
      for (const j of f.cands) m = Math.min(m, props[j].q.length - f.pos + 1 + props[j].value.minLen + obj.n.restAfter[j + 1])
      total += m
      cur = cur.up as ParseState // skip the object frame (already counted)
      continue
    }
    total += frameMinLen(f)
  }
  return total
}

/** A cache key for a state: equal keys, equal futures. */
export function stateKey (s: ParseState): string {
  let key = `${s.ws}`
  for (let cur: ParseState | null = s; cur != null && cur.f != null; cur = cur.up) {
    const f = cur.f
    switch (f.k) {
      case VAL: key += `|v${f.n.id}`; break
      case STR: key += `|s${f.e}`; break
      case LIT: key += `|l${f.lid}:${f.vals[0].slice(0, f.pos)}`; break
      case NUM: key += `|n${f.int ? 1 : 0}${f.ph}`; break
      case OBJ: key += `|o${f.n.id},${f.ph},${f.next},${f.cur}`; break
      case KEY: key += `|k${f.pos}:${f.cands.join(',')}`; break
      case ARR: key += `|a${f.n.id},${f.ph}`; break
    }
  }
  return key
}

// ---------------------------------------------------------------- token vocabulary

/**
 * A model's token texts in a trie, flattened: node i's edges are edgeChar/edgeTo[edgeStart[i]..edgeStart[i+1]),
 * and the tokens of node i's subtree are order[subStart[i]..subEnd[i]) (those ending exactly at i first).
 * Tokens without a text of their own (special tokens, partial UTF-8) are never allowed.
 */
export class TokenVocab {
  /** bits in a mask (≥ every token id) */
  readonly size: number
  readonly texts: ReadonlyArray<string | null>
  readonly nodes: number
  readonly edgeStart: Int32Array
  readonly edgeChar: Uint16Array
  readonly edgeTo: Int32Array
  readonly order: Int32Array
  readonly ownEnd: Int32Array
  readonly subStart: Int32Array
  readonly subEnd: Int32Array
  /** every character below this node stands for itself inside a JSON string */
  readonly plainBelow: Uint8Array

  constructor (texts: ReadonlyArray<string | null>, size = texts.length) {
    this.size = Math.max(size, texts.length)
    this.texts = texts
    interface TNode { kids: Map<number, TNode>, ids: number[] }
    const root: TNode = { kids: new Map(), ids: [] }
    let count = 1
    texts.forEach((t, id) => {
      if (t == null || t === '') return
      let n = root
      for (let i = 0; i < t.length; i++) {
        const c = t.charCodeAt(i)
        let k = n.kids.get(c)
        if (k == null) { k = { kids: new Map(), ids: [] }; n.kids.set(c, k); count++ }
        n = k
      }
      n.ids.push(id)
    })
    this.nodes = count
    this.edgeStart = new Int32Array(count + 1)
    this.edgeChar = new Uint16Array(Math.max(0, count - 1))
    this.edgeTo = new Int32Array(Math.max(0, count - 1))
    this.subStart = new Int32Array(count)
    this.subEnd = new Int32Array(count)
    this.ownEnd = new Int32Array(count)
    this.plainBelow = new Uint8Array(count)
    const order: number[] = []
    // breadth-first numbering keeps each node's edges contiguous; a depth-first pass then lays out the tokens
    const all: TNode[] = [root]
    const index = new Map<TNode, number>([[root, 0]])
    let e = 0
    for (let i = 0; i < all.length; i++) {
      this.edgeStart[i] = e
      const kids = [...all[i].kids.entries()].sort((a, b) => a[0] - b[0])
      for (const [c, k] of kids) {
        index.set(k, all.length)
        all.push(k)
        this.edgeChar[e] = c
        this.edgeTo[e] = index.get(k) as number
        e++
      }
    }
    this.edgeStart[all.length] = e
    const lay = (i: number): boolean => {
      const n = all[i]
      this.subStart[i] = order.length
      order.push(...n.ids)
      this.ownEnd[i] = order.length
      let plain = true
      for (let x = this.edgeStart[i]; x < this.edgeStart[i + 1]; x++) {
        const below = lay(this.edgeTo[x])
        plain = plain && below && isPlain(this.edgeChar[x])
      }
      this.subEnd[i] = order.length
      this.plainBelow[i] = plain ? 1 : 0
      return plain
    }
    lay(0)
    this.order = Int32Array.from(order)
  }
}

const vocabs = new Map<string, TokenVocab>()

/** A vocabulary by key, built once per thread (kept for the few tokenizers in use). */
export function vocabFor (key: string, texts: () => ReadonlyArray<string | null>, size?: number): TokenVocab {
  let v = vocabs.get(key)
  if (v == null) {
    v = new TokenVocab(texts(), size)
    vocabs.set(key, v)
    if (vocabs.size > 4) vocabs.delete(vocabs.keys().next().value as string)
  }
  return v
}

const grammars = new Map<string, CompiledGrammar>()

/**
 * A compiled grammar by key, shared by the sequences that use it with the same vocabulary, so their
 * masks are too (masks are per vocabulary: the key is both).
 */
export function grammarFor (vocabKey: string, grammarKey: string, node: GrammarNode): CompiledGrammar {
  const key = `${vocabKey}\u0000${grammarKey}`
  let g = grammars.get(key)
  if (g == null) {
    g = new CompiledGrammar(node)
    grammars.set(key, g)
    if (grammars.size > 32) grammars.delete(grammars.keys().next().value as string)
  } else {
    grammars.delete(key)
    grammars.set(key, g)
  }
  return g
}

// ---------------------------------------------------------------- masks

export const maskBytes = (size: number): number => (size + 7) >> 3
export const maskHas = (mask: Uint8Array, id: number): boolean => (id >> 3) < mask.length && (mask[id >> 3] & (1 << (id & 7))) !== 0
const maskSet = (mask: Uint8Array, id: number): void => { mask[id >> 3] |= 1 << (id & 7) }

export function maskCount (mask: Uint8Array): number {
  let c = 0
  for (const b of mask) { let x = b; while (x !== 0) { x &= x - 1; c++ } }
  return c
}

/**
 * Marks the tokens whose whole text can follow state `s`. With a `budget`, only tokens after which
 * the shortest completion is at most `budget` characters; `minSeen` gets the smallest such length seen.
 */
function collect (g: CompiledGrammar, v: TokenVocab, s: ParseState, mask: Uint8Array, budget: number, minSeen: { value: number }): void {
  const checkBudget = budget !== Infinity
  const fits = (t: ParseState): boolean => {
    if (!checkBudget) return true
    const m = minCompletionLength(t)
    if (m < minSeen.value) minSeen.value = m
    return m <= budget
  }
  const markRange = (from: number, to: number): void => { for (let i = from; i < to; i++) maskSet(mask, v.order[i]) }
  const visit = (node: number, state: ParseState): void => {
    const plainString = state.f != null && state.f.k === STR && state.f.e === 0
    const stateFits = plainString && fits(state)
    for (let x = v.edgeStart[node]; x < v.edgeStart[node + 1]; x++) {
      const c = v.edgeChar[x]
      const child = v.edgeTo[x]
      if (plainString && isPlain(c)) {
        // inside a string, plain characters leave the state as it is
        if (v.plainBelow[child] === 1) { if (stateFits) markRange(v.subStart[child], v.subEnd[child]); continue }
        if (stateFits) markRange(v.subStart[child], v.ownEnd[child])
        visit(child, state)
        continue
      }
      const next = feed(g, state, c)
      if (next == null) continue
      if (v.ownEnd[child] > v.subStart[child] && fits(next)) markRange(v.subStart[child], v.ownEnd[child])
      visit(child, next)
    }
  }
  visit(0, s)
}

/**
 * One sequence's constraint: its parser state, and per step the tokens allowed next. The text of a
 * token is taken as is (texts without leading-space rules; see agent/openai/json-schema.ts).
 */
export class JsonConstraint {
  readonly grammar: CompiledGrammar
  readonly vocab: TokenVocab
  private readonly eos: number[]
  private state: ParseState
  /** ms spent computing masks (for measurements) */
  maskMs = 0
  masksComputed = 0
  masksCached = 0

  constructor (grammar: CompiledGrammar, vocab: TokenVocab, eos: number[]) {
    this.grammar = grammar
    this.vocab = vocab
    this.eos = eos
    this.state = initialState(grammar)
  }

  /** The document is complete and cannot go on: the sequence ends here. */
  get done (): boolean { return this.state === DONE }

  get canEnd (): boolean { return canEnd(this.state) }

  get parseState (): ParseState { return this.state }

  /**
   * The tokens allowed next, as a bitset over the vocabulary. `remaining` is how many tokens the
   * sequence may still produce, this one included.
   */
  allowed (remaining = Infinity): Uint8Array {
    const t0 = performance.now()
    const s = this.state
    const need = minCompletionLength(s)
    const tight = remaining <= need + BUDGET_WINDOW
    const key = tight ? null : stateKey(s)
    const cached = key != null ? this.grammar.masks.get(key) : undefined
    if (cached != null) {
      this.masksCached++
      this.maskMs += performance.now() - t0
      return cached
    }
    const size = Math.max(this.vocab.size, ...this.eos.map(e => e + 1))
    let mask = new Uint8Array(maskBytes(size))
    const minSeen = { value: Infinity }
    collect(this.grammar, this.vocab, s, mask, tight ? remaining - 1 : Infinity, minSeen)
    if (tight && maskCount(mask) === 0 && minSeen.value < Infinity && !canEnd(s)) {
      // nothing fits the budget any more: take the tokens that get closest to the end
      mask = new Uint8Array(maskBytes(size))
      collect(this.grammar, this.vocab, s, mask, minSeen.value, { value: Infinity })
    }
    if (canEnd(s)) for (const e of this.eos) maskSet(mask, e)
    if (key != null) {
      this.grammar.masks.set(key, mask)
      if (this.grammar.masks.size > 256) this.grammar.masks.delete(this.grammar.masks.keys().next().value as string)
    }
    this.masksComputed++
    this.maskMs += performance.now() - t0
    return mask
  }

  /** Advances by a token's text; false (and no change) if the text cannot come next. */
  accept (token: number): boolean {
    const text = this.vocab.texts[token]
    if (text == null) return false
    const next = feedText(this.grammar, this.state, text)
    if (next == null) return false
    this.state = next
    return true
  }
}
