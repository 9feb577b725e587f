/**
 * GGUF → ONNX conversion on small files laid out by the test (test/helpers/gguf-writer.ts): a 2-layer
 * llama with a byte-level BPE vocabulary, in float32 and with Q4_0 weights; and the ways a file can be
 * bad, each refused with its reason. (The real-model checks against llama.cpp are in
 * test/real-model-golden.test.ts.)
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import ort from 'onnxruntime-node'
import { convertGguf } from '../../agent/model/gguf/convert.ts'
import { GgufError } from '../../agent/model/gguf/file.ts'
import { TokenizerError, loadTokenizerBundle } from '../../agent/model/tokenizers/bundle.ts'
import { decoderShape, emptyPast, presentAsPast, sequenceFeeds } from '../../agent/executor/feeds.ts'
import { FFN, H, TOKENS, V, chars, tinyLlama } from '../helpers/tiny-gguf.ts'
import { tempDir } from '../helpers/agents.ts'

async function logits (onnxPath: string, prompt: number[], steps: number): Promise<Float32Array[]> {
  const s = await ort.InferenceSession.create(onnxPath)
  const shape = decoderShape(s)
  let out = await s.run(sequenceFeeds(prompt, 0, emptyPast(shape, 1)))
  const rows: Float32Array[] = [(out.logits.data as Float32Array).slice()]
  for (let i = 0; i < steps; i++) {
    out = await s.run(sequenceFeeds([5 + i], prompt.length + i, presentAsPast(shape, out)))
    rows.push((out.logits.data as Float32Array).slice())
  }
  await s.release()
  return rows
}

test('a tiny llama GGUF converts; Q4_0 weights kept 4-bit (MatMulNBits) compute what their float32 dequantization does', async () => {
  const dir = tempDir('bm-gguf-')
  try {
    tinyLlama(join(dir, 'q.gguf'), { quant: true })
    const q = await convertGguf(join(dir, 'q.gguf'), { cacheDir: join(dir, 'c'), weights: 'q4' })
    const f = await convertGguf(join(dir, 'q.gguf'), { cacheDir: join(dir, 'c'), weights: 'f32' })
    assert.ok(q.onnxBytes < f.onnxBytes / 2, `4-bit file ${q.onnxBytes} vs float32 ${f.onnxBytes}`)
    assert.equal(q.info.quantization, 'Q4_0')
    assert.equal(q.info.layers, 2)
    assert.equal(q.info.kvHeads, 2)
    assert.equal(q.config.tiedEmbeddings, true)
    const a = await logits(q.onnxPath, [3, 4, 5, 6], 3)
    const b = await logits(f.onnxPath, [3, 4, 5, 6], 3)
    assert.equal(a[0].length, V, 'logits of the last position only: [1, 1, vocab]')
    let diff = 0
    for (let i = 0; i < a.length; i++) for (let j = 0; j < V; j++) diff = Math.max(diff, Math.abs(a[i][j] - b[i][j]))
    assert.ok(diff < 1e-3, `max |q4 - f32| = ${diff}`)
    // converting the same file again is a look-up
    const again = await convertGguf(join(dir, 'q.gguf'), { cacheDir: join(dir, 'c'), weights: 'q4' })
    assert.equal(again.cached, true)
    assert.equal(again.onnxMd5, q.onnxMd5)
  } finally { rmSync(dir, { recursive: true, force: true }) }
})

test('the GGUF vocabulary becomes a tokenizer: merges, special tokens, the chat template, stop ids', async () => {
  const dir = tempDir('bm-gguf-')
  try {
    tinyLlama(join(dir, 't.gguf'))
    const c = await convertGguf(join(dir, 't.gguf'), { cacheDir: dir, weights: 'f32' })
    const tok = await loadTokenizerBundle(c.tokenizerPath)
    const id = (t: string): number => TOKENS.indexOf(t)
    assert.deepEqual(tok.encode('hello world'), [id('hello'), id(`${chars[32]}w`), id('o'), id('r'), id('l'), id('d')])
    assert.deepEqual(tok.encode('<|im_end|>hi'), [2, id('h'), id('i')], 'special tokens in text are parsed')
    assert.equal(tok.decode(tok.encode('héllo wörld ✓')), 'héllo wörld ✓')
    assert.deepEqual(tok.eosIds.sort(), [0, 2], 'EOS plus <|endoftext|> end a generation')
    assert.equal(tok.hasChatTemplate, true)
    const prompt = tok.chatPrompt([{ role: 'user', content: 'hello' }])
    assert.deepEqual(prompt.slice(0, 1), [1])
    assert.equal(tok.decode(prompt), 'user\nhello\nassistant\n')
  } finally { rmSync(dir, { recursive: true, force: true }) }
})

test('without a chat template the documented fallback format is used, and the model info says so', async () => {
  const dir = tempDir('bm-gguf-')
  try {
    tinyLlama(join(dir, 'n.gguf'), { meta: { 'tokenizer.chat_template': 0 } })
    const c = await convertGguf(join(dir, 'n.gguf'), { cacheDir: dir, weights: 'f32' })
    assert.equal(c.info.chatTemplate, false)
    const tok = await loadTokenizerBundle(c.tokenizerPath)
    assert.equal(tok.decode(tok.chatPrompt([{ role: 'user', content: 'hello' }])), 'user: hello\nassistant:')
  } finally { rmSync(dir, { recursive: true, force: true }) }
})

test('bad files are refused with their reason', async () => {
  const dir = tempDir('bm-gguf-')
  const reason = async (file: string, expected: string, message: RegExp): Promise<void> => {
    await assert.rejects(convertGguf(join(dir, file), { cacheDir: dir }), (err: unknown) => {
      assert.ok(err instanceof GgufError || err instanceof TokenizerError, String(err))
      assert.equal((err as GgufError).reason, expected)
      assert.match((err as Error).message, message)
      return true
    })
  }
  try {
    tinyLlama(join(dir, 'magic.gguf'), { magic: 'GGML' })
    await reason('magic.gguf', 'bad_magic', /not a GGUF file: it starts with "GGML"/)
    tinyLlama(join(dir, 'arch.gguf'), { meta: { 'general.architecture': 'mamba' } })
    await reason('arch.gguf', 'unsupported_architecture', /"mamba" is not supported \(supported: llama, qwen2, gemma3\)/)
    tinyLlama(join(dir, 'quant.gguf'), { tensors: t => t.map(x => x.name === 'blk.1.ffn_up.weight' ? { ...x, type: 16, data: new Uint8Array(66 * FFN * H / 256) } : x) })
    await reason('quant.gguf', 'unsupported_quant', /blk\.1\.ffn_up\.weight is stored as .*IQ2_XXS/)
    tinyLlama(join(dir, 'missing.gguf'), { tensors: t => t.filter(x => x.name !== 'blk.1.attn_v.weight') })
    await assert.rejects(convertGguf(join(dir, 'missing.gguf'), { cacheDir: dir }), /blk\.1\.attn_v\.weight is missing/)
    tinyLlama(join(dir, 'pre.gguf'), { meta: { 'tokenizer.ggml.pre': 'klingon' } })
    await reason('pre.gguf', 'unsupported_architecture', /pre-tokenizer "klingon" is not supported/)
    tinyLlama(join(dir, 'tpl.gguf'), { meta: { 'tokenizer.chat_template': '{% for m in messages %}{{ m.content ' } })
    await reason('tpl.gguf', 'invalid_template', /chat template/)
    tinyLlama(join(dir, 'raise.gguf'), { meta: { 'tokenizer.chat_template': "{{ raise_exception('no conversations here') }}" } })
    await reason('raise.gguf', 'invalid_template', /no conversations here/)
    // a file cut short: the tensor table points past its end
    const { readFileSync, writeFileSync } = await import('node:fs')
    const whole = readFileSync(join(dir, 'arch.gguf'))
    tinyLlama(join(dir, 'ok.gguf'))
    writeFileSync(join(dir, 'cut.gguf'), readFileSync(join(dir, 'ok.gguf')).subarray(0, whole.length - 4096))
    await reason('cut.gguf', 'truncated', /truncated: tensor .* ends at byte/)
    writeFileSync(join(dir, 'tiny.gguf'), Buffer.from('GGUF'))
    await reason('tiny.gguf', 'truncated', /too short/)
  } finally { rmSync(dir, { recursive: true, force: true }) }
})
