/**
 * A GGUF's own vocabulary (`tokenizer.ggml.*`) turned into a Hugging Face `tokenizer.json` (and the
 * matching `tokenizer_config.json` facts), so one tokenizer library serves GGUF and HF models alike:
 *   - `gpt2`: byte-level BPE with the file's merges and the pre-tokenizer `tokenizer.ggml.pre` names;
 *   - `llama`: SentencePiece BPE with byte fallback, merges derived from the piece scores the way
 *     transformers' GGUF/SentencePiece converters derive them.
 * Anything else is refused with its name.
 */
import { GgufError } from './file.ts'
import type { GgufFile, GgufValue } from './file.ts'

/** llama.cpp token types (llama-vocab.h). */
const TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const

/** Pre-tokenizer split patterns, by `tokenizer.ggml.pre` (the same regexes llama.cpp and the HF tokenizer.json files use). */
const GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
const LLAMA3_PATTERN = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
const QWEN2_PATTERN = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

const byteLevel = (useRegex: boolean): object => ({ type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: useRegex })
const split = (pattern: string): object => ({ type: 'Split', pattern: { Regex: pattern }, behavior: 'Isolated', invert: false })

const PRE_TOKENIZERS: Record<string, () => object> = {
  default: () => byteLevel(true),
  gpt2: () => byteLevel(true),
  smollm: () => ({ type: 'Sequence', pretokenizers: [{ type: 'Digits', individual_digits: true }, byteLevel(true)] }),
  'llama-bpe': () => ({ type: 'Sequence', pretokenizers: [split(LLAMA3_PATTERN), byteLevel(false)] }),
  llama3: () => ({ type: 'Sequence', pretokenizers: [split(LLAMA3_PATTERN), byteLevel(false)] }),
  qwen2: () => ({ type: 'Sequence', pretokenizers: [split(QWEN2_PATTERN), byteLevel(false)] })
}

/**
 * Tokens that end a turn in the common chat formats: llama.cpp (llama-vocab.cpp) makes these end-of-generation
 * by their text, whatever their type, and turns them into control tokens if they are not (Gemma 3's "</s>" is
 * user-defined in the GGUF, yet an end-of-generation control token to llama.cpp).
 */
const END_OF_GENERATION = new Set(['<|endoftext|>', '<|im_end|>', '<|eot_id|>', '<|eom_id|>', '<end_of_turn>', '<|end|>', '</s>', '<|end_of_text|>', '<eos>',
  '<|return|>', '<|call|>', '<EOT>', '_<EOT>', '<end_of_utterance>', '<｜end▁of▁sentence｜>',
  // the fill-in-the-middle pad, repository and file-separator tokens llama.cpp finds by text also end generation (SmolLM2's "<reponame>")
  '<|fim_pad|>', '<fim-pad>', '<PAD>', '<|fim_repo|>', '<|repo_name|>', '<fim-repo>', '<REPO>', '<reponame>', '<|file_sep|>'])

export interface TokenizerFiles {
  /** tokenizer.json content */
  tokenizer: Record<string, unknown>
  /** the tokenizer_config.json facts the runtime needs */
  config: { bos_token: string | null, eos_token: string | null, add_bos_token: boolean, add_eos_token: boolean, clean_up_tokenization_spaces: boolean }
  bosId: number | null
  eosIds: number[]
  chatTemplate: string | null
}

function strings (meta: Record<string, GgufValue>, key: string, path: string): string[] {
  const v = meta[key]
  if (!Array.isArray(v) || v.some(x => typeof x !== 'string')) throw new GgufError('missing_metadata', `${path}: ${key} is missing or not a list of strings`, { path, key })
  return v as string[]
}

function numbers (meta: Record<string, GgufValue>, key: string): number[] | undefined {
  const v = meta[key]
  if (!Array.isArray(v)) return undefined
  return v.map(x => Number(x))
}

function optId (meta: Record<string, GgufValue>, key: string, size: number): number | null {
  const v = meta[key]
  if (typeof v !== 'number' && typeof v !== 'bigint') return null
  const n = Number(v)
  return n >= 0 && n < size ? n : null
}

/** Noncharacters: never in real text; one that no token contains marks the alias keys below. */
const ALIAS_MARKERS = Array.from({ length: 32 }, (_, i) => String.fromCharCode(0xFDD0 + i))

interface Vocabulary {
  /** token text → id, as llama.cpp looks texts up */
  ids: Map<string, number>
  /** tokenizer.json `model.vocab`: every id once */
  json: Record<string, number>
  /** the character the alias keys carry (a first decoder step removes it); null when no text repeats */
  marker: string | null
}

/**
 * Token texts → ids the way llama.cpp's vocabulary does it (`token_to_id[text] = id` in id order), so when a
 * text occurs twice (Gemma 3 has "#", "//" and "<?" twice) the later id is the one the text encodes to.
 * tokenizer.json's vocab is an object and cannot hold a text twice, so an earlier duplicate is stored under an
 * alias — its text plus a marker character no token contains — that no merge produces (encoding never yields
 * it) and that a first decoder step strips (it decodes to its own text, as llama.cpp's token_to_piece does).
 */
function vocabulary (tokens: string[], path: string): Vocabulary {
  const ids = new Map<string, number>()
  tokens.forEach((t, i) => ids.set(t, i))
  const shadowed = tokens.flatMap((t, i) => ids.get(t) !== i ? [i] : [])
  if (shadowed.length === 0) return { ids, json: Object.fromEntries(ids), marker: null }
  const marker = ALIAS_MARKERS.find(m => !tokens.some(t => t.includes(m)))
  if (marker === undefined) throw new GgufError('corrupt', `${path}: the vocabulary repeats token texts and uses every alias marker`, { path })
  const json: Record<string, number> = Object.fromEntries(ids)
  for (const id of shadowed) {
    let alias = tokens[id] + marker
    while (alias in json) alias += marker
    json[alias] = id
  }
  return { ids, json, marker }
}

/** A decoder step that strips the alias marker, ahead of the others (none when no alias exists). */
function withAliasStrip (decoders: object[], marker: string | null): object[] {
  return marker === null ? decoders : [{ type: 'Replace', pattern: { String: marker }, content: '' }, ...decoders]
}

/**
 * SentencePiece merges from piece scores (as transformers' GGUF/SentencePiece converters derive them): every
 * split of a piece into two pieces, ordered by the merged piece's score — llama.cpp's SPM tokenizer merges the
 * adjacent pair whose concatenation is the highest-scoring piece, leftmost first on ties, which is what BPE with
 * these ranks does. A text that occurs twice counts once, with the id (and score) llama.cpp looks it up as.
 */
function mergesFromScores (tokens: string[], scores: number[], vocab: Map<string, number>): string[][] {
  const merges: Array<{ l: string, r: string, score: number, li: number, ri: number }> = []
  tokens.forEach((piece, id) => {
    if (vocab.get(piece) !== id) return
    const local: typeof merges = []
    const chars = Array.from(piece)
    for (let i = 1; i < chars.length; i++) {
      const l = chars.slice(0, i).join('')
      const r = chars.slice(i).join('')
      const li = vocab.get(l)
      const ri = vocab.get(r)
      if (li !== undefined && ri !== undefined) local.push({ l, r, score: scores[id] ?? 0, li, ri })
    }
    local.sort((a, b) => a.li - b.li || a.ri - b.ri)
    merges.push(...local)
  })
  merges.sort((a, b) => b.score - a.score) // stable: ties keep the order above
  return merges.map(m => [m.l, m.r])
}

/** Builds tokenizer.json (and config facts) from a GGUF's metadata. */
export function tokenizerFromGguf (file: GgufFile): TokenizerFiles {
  const meta = file.metadata
  const path = file.path
  const model = meta['tokenizer.ggml.model']
  if (typeof model !== 'string') throw new GgufError('missing_metadata', `${path} has no tokenizer (tokenizer.ggml.model)`, { path })
  const tokens = strings(meta, 'tokenizer.ggml.tokens', path)
  const types = numbers(meta, 'tokenizer.ggml.token_type') ?? []
  const { ids: vocab, json: vocabJson, marker } = vocabulary(tokens, path)
  const bosId = optId(meta, 'tokenizer.ggml.bos_token_id', tokens.length)
  const eosId = optId(meta, 'tokenizer.ggml.eos_token_id', tokens.length)
  const eotId = optId(meta, 'tokenizer.ggml.eot_token_id', tokens.length)
  const eomId = optId(meta, 'tokenizer.ggml.eom_token_id', tokens.length)
  const unkId = optId(meta, 'tokenizer.ggml.unknown_token_id', tokens.length)
  const endsGeneration = (id: number): boolean => END_OF_GENERATION.has(tokens[id]) && vocab.get(tokens[id]) === id
  const addedTokens = tokens.flatMap((content, id) => {
    const type = types[id]
    const control = type === TOKEN_TYPE.CONTROL || endsGeneration(id)
    if (!control && type !== TOKEN_TYPE.USER_DEFINED) return []
    return [{ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: control }]
  })
  let tokenizer: Record<string, unknown>
  if (model === 'gpt2') {
    const pre = typeof meta['tokenizer.ggml.pre'] === 'string' ? meta['tokenizer.ggml.pre'] : 'default'
    const preTokenizer = PRE_TOKENIZERS[pre]
    if (preTokenizer === undefined) {
      throw new GgufError('unsupported_architecture', `${path}: BPE pre-tokenizer "${pre}" is not supported (supported: ${Object.keys(PRE_TOKENIZERS).join(', ')})`, { path, pre })
    }
    const merges = strings(meta, 'tokenizer.ggml.merges', path)
    tokenizer = {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: addedTokens,
      normalizer: null,
      pre_tokenizer: preTokenizer(),
      post_processor: null,
      decoder: marker === null
        ? { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true }
        : { type: 'Sequence', decoders: withAliasStrip([{ type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true }], marker) },
      model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab: vocabJson, merges }
    }
  } else if (model === 'llama') {
    const scores = numbers(meta, 'tokenizer.ggml.scores')
    if (scores === undefined) throw new GgufError('missing_metadata', `${path}: SentencePiece vocabulary without tokenizer.ggml.scores`, { path })
    const addSpacePrefix = meta['tokenizer.ggml.add_space_prefix'] !== false
    const normalizers: object[] = []
    if (addSpacePrefix) normalizers.push({ type: 'Prepend', prepend: '▁' })
    normalizers.push({ type: 'Replace', pattern: { String: ' ' }, content: '▁' })
    const decoders: object[] = [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }]
    if (addSpacePrefix) decoders.push({ type: 'Strip', content: ' ', start: 1, stop: 0 })
    tokenizer = {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: addedTokens,
      normalizer: { type: 'Sequence', normalizers },
      pre_tokenizer: null,
      post_processor: null,
      decoder: { type: 'Sequence', decoders: withAliasStrip(decoders, marker) },
      model: {
        type: 'BPE', dropout: null, unk_token: unkId !== null ? tokens[unkId] : null, continuing_subword_prefix: null, end_of_word_suffix: null,
        fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab: vocabJson, merges: mergesFromScores(tokens, scores, vocab)
      }
    }
  } else {
    throw new GgufError('unsupported_architecture', `${path}: tokenizer model "${model}" is not supported (gpt2 BPE and llama SentencePiece are)`, { path, model })
  }
  // like llama.cpp's end-of-generation set: the declared ids, plus the tokens that end turns by their text
  const byText = tokens.flatMap((_, id) => endsGeneration(id) ? [id] : [])
  const eosIds = [...new Set([eosId, eotId, eomId, ...byText].filter((x): x is number => x !== null))]
  const template = meta['tokenizer.chat_template']
  return {
    tokenizer,
    config: {
      bos_token: bosId !== null ? tokens[bosId] : null,
      eos_token: eosId !== null ? tokens[eosId] : null,
      add_bos_token: meta['tokenizer.ggml.add_bos_token'] === true || (meta['tokenizer.ggml.add_bos_token'] === undefined && model === 'llama'),
      add_eos_token: meta['tokenizer.ggml.add_eos_token'] === true,
      clean_up_tokenization_spaces: false
    },
    bosId,
    eosIds,
    chatTemplate: typeof template === 'string' ? template : null
  }
}
