/**
 * Gemma 3 270M (GGUF Q4_K_M, architecture gemma3, SentencePiece vocabulary of 262144) converted by Blockmesh
 * and checked against llama.cpp's own outputs (test/golden/gemma-3-270m-q4_k_m.llamacpp.json, written by
 * scripts/golden/llamacpp.py): the tokenizer's ids for every fixture string and prompt, its decoding, and the
 * converted ONNX decoder's logits and greedy tokens.
 *
 * The K-quant and Q5_0 weights of this file have no 4-bit MatMulNBits form, so the 'q4' conversion keeps them
 * as float32; llama.cpp computes with 8-bit-quantized activations and an f16 KV cache. That arithmetic alone
 * moves the logits about as far as the two implementations are apart (rms ≈ 0.2 on logits with std ≈ 4), so
 * the checks are correlations and argmaxes where llama.cpp's own top-1/top-2 margin is clear (≥ 0.5).
 */
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import ort from 'onnxruntime-node'
import { convertGguf } from '../agent/model/gguf/convert.ts'
import type { ConvertedModel } from '../agent/model/gguf/convert.ts'
import { loadTokenizerBundle } from '../agent/model/tokenizers/bundle.ts'
import type { HfTextTokenizer } from '../agent/model/tokenizers/bundle.ts'
import { decoderShape, emptyPast, presentAsPast, sequenceFeeds } from '../agent/executor/feeds.ts'
import { argmax } from '../agent/executor/sampling.ts'
import type { DecoderShape, Feeds } from '../agent/executor/feeds.ts'
import { io } from '../agent/model/graph.ts'
import { tempDir } from './helpers/agents.ts'
import { ModelEngine } from '../agent/executor/engine.ts'
import { CORPUS_URL } from '../agent/model/weights.ts'
import { realWeights } from './helpers/weights.ts'
import { skipNamed } from './helpers/skip.ts'

interface GoldenPrompt {
  user: string
  rendered: string
  token_ids: number[]
  greedy: { token_ids: number[], top1_top2_margins: number[] }
  last_position_logits: { top5: Array<{ id: number }>, f32le_base64?: string, top256?: Array<[number, number]> }
}
interface GoldenFixture {
  name: string
  text: string
  token_ids: number[]
  detokenized: string
  special_true?: { token_ids: number[], detokenized_no_special: string }
}
const golden = JSON.parse(readFileSync(new URL('./golden/gemma-3-270m-q4_k_m.llamacpp.json', import.meta.url), 'utf8')) as {
  model: { bos_id: number, eog_ids: number[], n_vocab: number }
  prompts: GoldenPrompt[]
  tokenizer: GoldenFixture[]
}

/** llama.cpp's greedy choice counts where its top-1 beats its top-2 by at least this much */
const CLEAR_MARGIN = 0.5
const weights = realWeights('gemma3')

function correlation (a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = a.length
  let ma = 0
  let mb = 0
  for (let i = 0; i < n; i++) { ma += a[i]; mb += b[i] }
  ma /= n
  mb /= n
  let ab = 0
  let aa = 0
  let bb = 0
  for (let i = 0; i < n; i++) {
    const x = a[i] - ma
    const y = b[i] - mb
    ab += x * y
    aa += x * x
    bb += y * y
  }
  return ab / Math.sqrt(aa * bb)
}

describe(skipNamed('Gemma 3 270M converted from GGUF agrees with llama.cpp', weights.skip), { skip: weights.skip }, () => {
  const dir = tempDir('bm-gemma3-')
  let converted: ConvertedModel
  let tok: HfTextTokenizer
  let vocab: Record<string, number>
  let session: ort.InferenceSession
  let shape: DecoderShape
  let convertMs = 0

  before(async () => {
    const t0 = Date.now()
    converted = await convertGguf(weights.path, { cacheDir: dir, weights: 'q4' })
    convertMs = Date.now() - t0
    tok = await loadTokenizerBundle(converted.tokenizerPath)
    vocab = (JSON.parse(readFileSync(converted.tokenizerPath, 'utf8')) as { tokenizer: { model: { vocab: Record<string, number> } } }).tokenizer.model.vocab
    session = await ort.InferenceSession.create(converted.onnxPath, { graphOptimizationLevel: 'all', intraOpNumThreads: 2 })
    shape = decoderShape(session)
  })
  after(async () => {
    await session?.release()
    rmSync(dir, { recursive: true, force: true })
  })

  test('the conversion reads the architecture as llama.cpp does', t => {
    t.diagnostic(`converted in ${convertMs} ms (${converted.onnxBytes} bytes of ONNX)`)
    const c = converted.config
    assert.equal(c.architecture, 'gemma3')
    assert.equal(converted.info.vocabSize, golden.model.n_vocab)
    assert.equal(converted.info.chatTemplate, false, 'a base model: no chat template')
    assert.deepEqual({ layers: c.layers, hidden: c.hidden, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, ffn: c.ffn },
      { layers: 18, hidden: 640, heads: 4, kvHeads: 1, headDim: 256, ffn: 2048 })
    // llama.cpp: f_attention_scale = 1/sqrt(n_embd_head_k); embeddings times sqrtf(n_embd); layers 5, 11, 17 global
    assert.equal(c.attentionScale, 1 / 16)
    assert.equal(Math.fround(c.embedScale), Math.fround(Math.sqrt(640)))
    assert.deepEqual(c.sliding, { window: 512, pattern: 6, theta: 10_000, linearFactor: 1 })
    assert.deepEqual(c.rope, { theta: 1_000_000, dim: 256, linearFactor: 1, freqFactors: false })
    assert.equal(c.activation, 'gelu_tanh')
    assert.deepEqual([c.qkNorm, c.sandwichNorms, c.tiedEmbeddings, c.unpermuteQK], [true, true, true, false])
    assert.deepEqual(shape, { layers: 18, heads: 1, headDim: 256, vocab: golden.model.n_vocab })
  })

  test('BOS and the end-of-generation ids are llama.cpp\'s', () => {
    assert.equal(tok.bosId, golden.model.bos_id)
    assert.deepEqual([...tok.eosIds].sort((a, b) => a - b), [...golden.model.eog_ids].sort((a, b) => a - b))
  })

  test('every tokenizer fixture encodes to llama.cpp\'s ids and decodes to its text', () => {
    for (const f of golden.tokenizer) {
      // encode() parses special-token text like llama.cpp's special=true; without such text both modes agree
      const ids = f.special_true?.token_ids ?? f.token_ids
      assert.deepEqual(tok.encode(f.text), ids, f.name)
      assert.equal(tok.decode(f.token_ids), f.detokenized, `${f.name}: decode`)
      if (f.special_true != null) assert.equal(tok.decode(f.special_true.token_ids), f.special_true.detokenized_no_special, `${f.name}: decode without special tokens`)
      const d = tok.decoder()
      let text = ''
      for (const id of f.token_ids) text += d.push(id)
      text += d.end()
      assert.equal(text, f.detokenized, `${f.name}: incremental decode`)
    }
  })

  test('the prompts render in the fallback format and tokenize to llama.cpp\'s ids, BOS first', () => {
    for (const p of golden.prompts) {
      assert.equal(tok.renderChat([{ role: 'user', content: p.user }]), p.rendered)
      assert.deepEqual(tok.chatPrompt([{ role: 'user', content: p.user }]), p.token_ids, p.user)
    }
  })

  test('byte fallback: a character outside the vocabulary is its UTF-8 bytes, and decodes back whole', () => {
    const text = 'a🧌b' // U+1F9CC has no piece of its own in Gemma 3's vocabulary
    const bytes = [...Buffer.from('🧌', 'utf8')].map(b => vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`])
    const ids = tok.encode(text)
    assert.deepEqual(ids, [vocab.a, ...bytes, vocab.b])
    assert.equal(tok.decode(ids), text)
    const d = tok.decoder()
    const pieces = ids.map(id => d.push(id))
    pieces.push(d.end())
    assert.deepEqual(pieces, ['a', '', '', '', '🧌', 'b', ''], 'no partial character is released')
  })

  test('a token text the vocabulary holds twice encodes to the later id (llama.cpp\'s token_to_id) and both ids decode', () => {
    // Gemma 3's GGUF lists "#" as 208867 and 236865, "//" as 715 and 135260
    assert.deepEqual(tok.encode('#'), [236865])
    assert.deepEqual(tok.encode('//'), [135260])
    for (const id of [208867, 236865]) assert.equal(tok.decode([9259, id]), 'Hello#')
    for (const id of [715, 135260]) assert.equal(tok.decode([id]), '//')
  })

  test('logits and greedy tokens (teacher-forced along llama.cpp\'s path) agree with llama.cpp', async t => {
    const report: string[] = []
    for (const p of golden.prompts) {
      let past: Feeds = emptyPast(shape, 1)
      let pos = 0
      let input = p.token_ids
      let first: Float32Array | null = null
      const chosen: number[] = []
      for (const next of p.greedy.token_ids) {
        const out = await session.run(sequenceFeeds(input, pos, past))
        const logits = out[io.logits].data as Float32Array
        first ??= logits.slice()
        chosen.push(argmax(logits))
        pos += input.length
        past = presentAsPast(shape, out)
        input = [next]
      }
      const lp = p.last_position_logits
      let corr: number
      if (lp.f32le_base64 != null) {
        const ref = new Float32Array(new Uint8Array(Buffer.from(lp.f32le_base64, 'base64')).buffer)
        corr = correlation(ref, first as Float32Array)
        assert.ok(corr >= 0.99, `${p.user}: correlation with llama.cpp's full logits ${corr.toFixed(5)} < 0.99`)
      } else {
        const top = lp.top256 as Array<[number, number]>
        corr = correlation(top.map(t => t[1]), top.map(t => (first as Float32Array)[t[0]]))
        // over llama.cpp's top 256 only (a range of ~7 logits), where quantization noise weighs more
        assert.ok(corr >= 0.98, `${p.user}: correlation over llama.cpp's top-256 logits ${corr.toFixed(5)} < 0.98`)
      }
      const margins = p.greedy.top1_top2_margins
      let clear = 0
      for (let k = 0; k < p.greedy.token_ids.length; k++) {
        if (margins[k] < CLEAR_MARGIN) continue
        clear++
        assert.equal(chosen[k], p.greedy.token_ids[k], `${p.user}: greedy token ${k} (llama.cpp margin ${margins[k].toFixed(2)})`)
      }
      if (margins[0] >= CLEAR_MARGIN) assert.equal(argmax(first as Float32Array), lp.top5[0].id)
      report.push(`${p.user}: corr ${corr.toFixed(4)}, greedy ${clear}/${clear} clear steps, ${chosen.filter((t, k) => t === p.greedy.token_ids[k]).length}/${chosen.length} all`)
    }
    for (const line of report) t.diagnostic(line)
  })

  test('past the 512-token sliding window, the engine keeping its cache answers like the engine taking present.* back (two sequences batched)', async (t) => {
    const start = async (keepCache: boolean): Promise<ModelEngine> => await ModelEngine.start({ modelPath: converted.onnxPath, provider: 'cpu', gpus: { nvidia: false, any: false }, contextLength: 1024, maxBatch: 2, keepCache, intraOpThreads: 2 })
    const [kept, plain] = [await start(true), await start(false)]
    try {
      assert.equal(kept.keepsCache, true, 'the converted Gemma 3 graph gives step outputs, so the worker keeps the cache')
      assert.equal(plain.keepsCache, false)
      // two prompts past the window, of different lengths (rows left-padded differently); decoding goes on
      // long enough for the kept cache to grow past its first room (16 positions, or an eighth)
      const text = readFileSync(CORPUS_URL, 'utf8')
      const ids = tok.encode(text).slice(0, 600)
      const prompts = [ids.slice(0, 530), ids.slice(40, 600)]
      const run = async (e: ModelEngine): Promise<Array<{ tokens: number[], logprobs: number[] }>> => await Promise.all(prompts.map(async prompt => {
        const g = e.generate({ prompt, maxTokens: 80, temperature: 0, topP: 1, seed: 1, stopTokens: [], topLogprobs: 1 })
        const tokens: number[] = []
        for await (const t of g.tokens) tokens.push(t)
        await g.done
        return { tokens, logprobs: g.logprobs.map(l => l.logprob) }
      }))
      const [a, b] = [await run(kept), await run(plain)]
      assert.deepEqual(a.map(r => r.tokens.length), [80, 80])
      assert.deepEqual(a.map(r => r.tokens), b.map(r => r.tokens))
      // the chosen tokens' logprobs too: a window that lost the cache's room would drop some of the oldest
      // keys of the five sliding layers in six, which moves them though greedy tokens may not change
      t.diagnostic(`largest logprob difference: ${Math.max(...a.flatMap((r, i) => r.logprobs.map((lp, k) => Math.abs(lp - b[i].logprobs[k])))).toExponential(2)}`)
      a.forEach((r, i) => r.logprobs.forEach((lp, k) => {
        assert.ok(Math.abs(lp - b[i].logprobs[k]) < 5e-4, `sequence ${i}, token ${k}: logprob ${lp} kept, ${b[i].logprobs[k]} from present.*`)
      }))
    } finally {
      await kept.close()
      await plain.close()
    }
  })
})
