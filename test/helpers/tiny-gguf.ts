/**
 * A tiny llama GGUF for tests: 2 layers, hidden 64, GQA 4/2, a byte-level BPE vocabulary with a few merges
 * and ChatML-style special tokens, float32 or Q4_0 weights (deterministic).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Rng } from '../../agent/model/random.ts'
import { writeGguf } from './gguf-writer.ts'
import type { GgufMeta, GgufTensorIn } from './gguf-writer.ts'

export const H = 64
export const FFN = 128
export const LAYERS = 2

/** GPT-2's byte → printable character map (the byte-level BPE alphabet). */
export function byteChars (): string[] {
  const keep: number[] = []
  for (let b = 33; b <= 126; b++) keep.push(b)
  for (let b = 161; b <= 172; b++) keep.push(b)
  for (let b = 174; b <= 255; b++) keep.push(b)
  const out: string[] = []
  let n = 0
  for (let b = 0; b < 256; b++) out[b] = keep.includes(b) ? String.fromCharCode(b) : String.fromCharCode(256 + n++)
  return out
}

export const chars = byteChars()
export const TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', ...chars, 'he', 'll', 'hell', 'hello', `${chars[32]}w`]
const MERGES = ['h e', 'l l', 'he ll', 'hell o', `${chars[32]} w`]
export const V = TOKENS.length

function f32 (rng: Rng, n: number, scale: number): Uint8Array {
  const a = new Float32Array(n)
  for (let i = 0; i < n; i++) a[i] = (rng.next() * 2 - 1) * scale
  return new Uint8Array(a.buffer)
}

/** Q4_0 blocks: f16 scale 0.0498 (0x2A60), random nibbles. */
function q4 (rng: Rng, n: number): Uint8Array {
  const out = new Uint8Array(n / 32 * 18)
  for (let b = 0; b < n / 32; b++) {
    out[b * 18] = 0x60
    out[b * 18 + 1] = 0x2a
    for (let j = 0; j < 16; j++) out[b * 18 + 2 + j] = Math.floor(rng.next() * 256)
  }
  return out
}

export function tinyLlama (path: string, opts: { quant?: boolean, meta?: Record<string, GgufMeta>, tensors?: (t: GgufTensorIn[]) => GgufTensorIn[], magic?: string } = {}): void {
  const rng = new Rng(7)
  const lin = (name: string, k: number, n: number): GgufTensorIn => opts.quant === true
    ? { name, shape: [k, n], type: 2, data: q4(rng, k * n) }
    : { name, shape: [k, n], type: 0, data: f32(rng, k * n, 0.1) }
  const ones = (name: string, n: number): GgufTensorIn => ({ name, shape: [n], type: 0, data: new Uint8Array(new Float32Array(n).fill(1).buffer) })
  let tensors: GgufTensorIn[] = [{ name: 'token_embd.weight', shape: [H, V], type: 0, data: f32(rng, H * V, 0.5) }, ones('output_norm.weight', H)]
  for (let l = 0; l < LAYERS; l++) {
    tensors.push(ones(`blk.${l}.attn_norm.weight`, H), ones(`blk.${l}.ffn_norm.weight`, H),
      lin(`blk.${l}.attn_q.weight`, H, H), lin(`blk.${l}.attn_k.weight`, H, H / 2), lin(`blk.${l}.attn_v.weight`, H, H / 2),
      lin(`blk.${l}.attn_output.weight`, H, H), lin(`blk.${l}.ffn_gate.weight`, H, FFN), lin(`blk.${l}.ffn_up.weight`, H, FFN), lin(`blk.${l}.ffn_down.weight`, FFN, H))
  }
  if (opts.tensors != null) tensors = opts.tensors(tensors)
  writeGguf(path, {
    'general.architecture': 'llama',
    'general.name': 'tiny',
    'general.file_type': opts.quant === true ? 2 : 0,
    'llama.block_count': LAYERS,
    'llama.context_length': 256,
    'llama.embedding_length': H,
    'llama.feed_forward_length': FFN,
    'llama.attention.head_count': 4,
    'llama.attention.head_count_kv': 2,
    'llama.rope.freq_base': { f32: 10000 },
    'llama.attention.layer_norm_rms_epsilon': { f32: 1e-5 },
    'tokenizer.ggml.model': 'gpt2',
    'tokenizer.ggml.pre': 'smollm',
    'tokenizer.ggml.tokens': TOKENS,
    'tokenizer.ggml.token_type': { i32: TOKENS.map((_, i) => i < 3 ? 3 : 1) },
    'tokenizer.ggml.merges': MERGES,
    'tokenizer.ggml.bos_token_id': 1,
    'tokenizer.ggml.eos_token_id': 2,
    'tokenizer.chat_template': "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    ...opts.meta
  }, tensors, opts.magic)
}


/**
 * The side files of a Hugging Face ONNX export for the tiny model (tokenizer.json, tokenizer_config.json,
 * chat_template.jinja, config.json, generation_config.json) written into `root`, from the tokenizer bundle its
 * GGUF conversion made (`bundlePath`); the ONNX files under `root/onnx/` are the caller's.
 */
export function writeExportSideFiles (root: string, bundlePath: string): void {
  const bundle = JSON.parse(readFileSync(bundlePath, 'utf8'))
  mkdirSync(join(root, 'onnx'), { recursive: true })
  writeFileSync(join(root, 'tokenizer.json'), JSON.stringify(bundle.tokenizer))
  writeFileSync(join(root, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<|im_start|>', eos_token: '<|im_end|>', add_bos_token: false }))
  writeFileSync(join(root, 'chat_template.jinja'), bundle.chatTemplate)
  writeFileSync(join(root, 'config.json'), JSON.stringify({ model_type: 'llama', num_hidden_layers: LAYERS, hidden_size: H, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: Object.keys(bundle.tokenizer.model.vocab).length, max_position_embeddings: 256 }))
  writeFileSync(join(root, 'generation_config.json'), JSON.stringify({ bos_token_id: 1, eos_token_id: [2, 0] }))
}
