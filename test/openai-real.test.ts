/**
 * The OpenAI surface a real client uses, on a real model: SmolLM2-135M-Instruct (GGUF, converted by
 * the agent) served by one agent process, through the official openai client — logprobs in OpenAI's
 * shapes, n choices, presence/frequency/repetition penalties, response_format json_object and
 * json_schema (constrained decoding), usage from the model's tokenizer, and the 400s for what is refused.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import OpenAI from 'openai'
import { AgentProcess, stopAll, until } from './helpers/agents.ts'
import { realWeights } from './helpers/weights.ts'
import { loadTokenizerBundle } from '../agent/model/tokenizers/bundle.ts'
import type { HfTextTokenizer } from '../agent/model/tokenizers/bundle.ts'
import { validateJson } from '../agent/openai/json-schema.ts'

const weights = realWeights('smollm2')

describe(`OpenAI features on a real model (SmolLM2-135M-Instruct), through the openai client${weights.skip !== false ? ` — skipped: ${weights.skip}` : ''}`, { skip: weights.skip }, () => {
  let agent: AgentProcess
  let client: OpenAI
  let tokenizer: HfTextTokenizer
  const model = 'smol'
  const chat = (content: string, over: Partial<OpenAI.ChatCompletionCreateParamsNonStreaming> = {}): OpenAI.ChatCompletionCreateParamsNonStreaming => ({
    model, messages: [{ role: 'user', content }], temperature: 0, max_tokens: 24, ...over
  })

  before(async () => {
    agent = await AgentProcess.start({ name: 'real' })
    const added = await agent.api('/api/models', { method: 'POST', body: { source: weights.path, contextLength: 2048 } })
    assert.ok(added.status === 201 || added.status === 200, JSON.stringify(added.body))
    const component = added.body.component
    const b = await agent.api('/api/blocks', { method: 'POST', body: { id: model, component: component.uri } })
    assert.equal(b.status, 201, JSON.stringify(b.body))
    const block = await until(async () => {
      const r = await agent.api(`/api/blocks/${model}`)
      return r.body.status === 'ready' || r.body.status === 'failed' ? r.body : undefined
    }, 'the block to load', 60_000)
    assert.equal(block.status, 'ready', block.error)
    tokenizer = await loadTokenizerBundle(component.spec.tokenizer.url)
    client = new OpenAI({ baseURL: `${agent.url}/v1`, apiKey: agent.token, maxRetries: 0 })
  })
  after(async () => { await stopAll([agent]) })

  test('usage is counted with the model\'s tokenizer; chat logprobs come in OpenAI\'s shape, greedy picks the top one', async () => {
    const content = 'What is the capital of France?'
    const req = chat(content, { logprobs: true, top_logprobs: 3, max_tokens: 12 })
    // concurrently (they batch): with logprobs, without, logprobs alone, streamed
    const streamed: OpenAI.ChatCompletionTokenLogprob[] = []
    const [r, plain, bare] = await Promise.all([
      client.chat.completions.create(req),
      client.chat.completions.create(chat(content, { max_tokens: 12 })),
      client.chat.completions.create(chat(content, { logprobs: true, max_tokens: 12 })),
      (async () => {
        for await (const chunk of await client.chat.completions.create({ ...req, stream: true })) streamed.push(...(chunk.choices[0]?.logprobs?.content ?? []))
      })()
    ])
    const c = r.choices[0]
    assert.equal(r.usage?.prompt_tokens, tokenizer.chatPrompt([{ role: 'user', content }]).length)
    const lps = c.logprobs?.content ?? []
    assert.equal(r.usage?.completion_tokens, lps.length)
    assert.ok(lps.length > 0)
    assert.equal(lps.map(t => t.token).join(''), c.message.content)
    for (const t of lps) {
      assert.deepEqual(t.bytes, Array.from(Buffer.from(t.token, 'utf8')))
      assert.equal(t.top_logprobs.length, 3)
      // temperature 0: the chosen token is the most likely one, its logprob the max of the top ones
      assert.equal(t.token, t.top_logprobs[0].token)
      assert.equal(t.logprob, Math.max(...t.top_logprobs.map(x => x.logprob)))
      assert.ok(t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob && t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob)
      assert.ok(t.top_logprobs.reduce((a, x) => a + Math.exp(x.logprob), 0) <= 1 + 1e-6)
      for (const x of t.top_logprobs) assert.deepEqual(x.bytes, Array.from(Buffer.from(x.token, 'utf8')))
    }
    // logprobs do not change what is generated; logprobs: true alone gives no alternatives; the stream carries the same
    assert.equal(plain.choices[0].message.content, c.message.content)
    assert.equal(plain.choices[0].logprobs, null)
    assert.ok(bare.choices[0].logprobs?.content?.every(t => t.top_logprobs.length === 0))
    // the same tokens; the logprobs agree to float noise (the engine takes prompts in turns of ~200 ms
    // while others decode, so the two may share a batch with different rows and padding)
    assert.deepEqual(streamed.map(t => t.token), lps.map(t => t.token))
    streamed.forEach((t, i) => { assert.ok(Math.abs(t.logprob - lps[i].logprob) < 1e-4, `token ${i}: ${t.logprob} streamed, ${lps[i].logprob} not`) })
    await assert.rejects(client.chat.completions.create(chat(content, { top_logprobs: 2 })), (e: any) => e instanceof OpenAI.BadRequestError && e.param === 'top_logprobs')
  })

  test('completions logprobs: tokens, token_logprobs, top_logprobs maps and text offsets from the prompt\'s start', async () => {
    const prompt = 'The capital of France is'
    const r = await client.completions.create({ model, prompt, max_tokens: 6, temperature: 0, logprobs: 2 })
    const lp = r.choices[0].logprobs
    assert.ok(lp?.tokens != null && lp.token_logprobs != null && lp.top_logprobs != null && lp.text_offset != null)
    assert.equal(lp.tokens.join(''), r.choices[0].text)
    assert.equal(lp.tokens.length, r.usage?.completion_tokens)
    assert.equal(r.usage?.prompt_tokens, tokenizer.encode(prompt, { bos: true }).length)
    let offset = prompt.length
    lp.tokens.forEach((t, i) => {
      assert.equal(lp.text_offset?.[i], offset)
      offset += t.length
      const top = lp.top_logprobs?.[i] as Record<string, number>
      assert.ok(Object.keys(top).length >= 2 && Object.keys(top).length <= 3)
      assert.equal(top[t], lp.token_logprobs?.[i])
      assert.equal(lp.token_logprobs?.[i], Math.max(...Object.values(top)))
    })
  })

  test('n=3 at temperature 1 with a seed: three different choices, each reproducible, usage summed; streamed chunks carry their index', async () => {
    const req = chat('Write a short poem about the sea.', { n: 3, temperature: 1, seed: 42, max_tokens: 8, logprobs: true })
    const streamed = ['', '', '']
    const finished = new Set<number>()
    const [r, one, cmpl] = await Promise.all([
      client.chat.completions.create(req),
      client.chat.completions.create({ ...req, n: 1, seed: 43 }),
      client.completions.create({ model, prompt: 'Once upon a time', n: 2, temperature: 1, seed: 7, max_tokens: 8 }),
      (async () => {
        for await (const chunk of await client.chat.completions.create({ ...req, stream: true })) {
          for (const c of chunk.choices) {
            streamed[c.index] += c.delta.content ?? ''
            if (c.finish_reason != null) finished.add(c.index)
          }
        }
      })()
    ])
    assert.deepEqual(r.choices.map(c => c.index), [0, 1, 2])
    const texts = r.choices.map(c => c.message.content)
    assert.equal(new Set(texts).size, 3, JSON.stringify(texts))
    assert.equal(one.choices[0].message.content, texts[1], 'choice i uses seed + i')
    assert.equal(r.usage?.prompt_tokens, one.usage?.prompt_tokens, 'the prompt is counted once')
    assert.equal(r.usage?.completion_tokens, r.choices.reduce((a, c) => a + (c.logprobs?.content?.length ?? 0), 0), 'completions of all choices')
    assert.deepEqual(streamed, texts)
    assert.deepEqual([...finished].sort(), [0, 1, 2])
    assert.deepEqual(cmpl.choices.map(c => c.index), [0, 1])
    assert.notEqual(cmpl.choices[0].text, cmpl.choices[1].text)
  })

  test('frequency, presence and repetition penalties change a greedy answer that repeats itself', async () => {
    const base = chat('Repeat the word "blue" 20 times.', { max_tokens: 24 })
    const variants: Array<Record<string, number>> = [{}, { frequency_penalty: 1.5 }, { presence_penalty: 2 }, { repetition_penalty: 1.5 }]
    const texts = await Promise.all(variants.map(async over => (await client.chat.completions.create({ ...base, ...over } as OpenAI.ChatCompletionCreateParamsNonStreaming)).choices[0].message.content ?? ''))
    const count = (s: string): number => (s.match(/blue/gi) ?? []).length
    const plain = texts[0]
    assert.ok(count(plain) >= 8, `the greedy answer repeats: ${plain}`)
    variants.slice(1).forEach((over, i) => {
      const text = texts[i + 1]
      assert.notEqual(text, plain, JSON.stringify(over))
      assert.ok(count(text) < count(plain), `${JSON.stringify(over)}: ${text}`)
    })
    await assert.rejects(client.chat.completions.create({ ...base, frequency_penalty: 3 }), (e: any) => e instanceof OpenAI.BadRequestError && e.param === 'frequency_penalty')
  })

  test('response_format json_object and json_schema: the answer always parses (and validates), temperature 1, several seeds, streamed too', async () => {
    const schema = {
      type: 'object',
      properties: {
        name: { type: 'string' },
        age: { type: 'integer' },
        species: { enum: ['cat', 'dog', 'bird'] },
        friendly: { type: 'boolean' },
        toys: { type: 'array', items: { type: 'string' } },
        owner: { type: ['object', 'null'], properties: { name: { type: 'string' } }, required: ['name'], additionalProperties: false }
      },
      required: ['name', 'age', 'species', 'toys', 'owner'],
      additionalProperties: false
    }
    const response_format = { type: 'json_schema' as const, json_schema: { name: 'pet', schema, strict: true } }
    let streamed = ''
    const [objects, pets, short] = await Promise.all([
      client.chat.completions.create(chat('Describe a cat as JSON.', { response_format: { type: 'json_object' }, temperature: 1, seed: 1, n: 3, max_tokens: 48 })),
      client.chat.completions.create(chat('Describe a pet.', { response_format, temperature: 1, seed: 11, n: 3, max_tokens: 64 })),
      // a tight budget still closes the document
      client.chat.completions.create(chat('Describe a pet.', { response_format, temperature: 1, seed: 5, max_tokens: 30 })),
      (async () => {
        for await (const chunk of await client.chat.completions.create({ ...chat('Describe a pet.', { response_format, temperature: 1, seed: 99, max_tokens: 64 }), stream: true })) streamed += chunk.choices[0]?.delta.content ?? ''
      })()
    ])
    for (const c of objects.choices) {
      const v = JSON.parse(c.message.content ?? '')
      assert.ok(typeof v === 'object' && v !== null && !Array.isArray(v), c.message.content ?? '')
      assert.equal(c.finish_reason, 'stop')
    }
    for (const text of [...pets.choices.map(c => c.message.content ?? ''), short.choices[0].message.content ?? '', streamed]) {
      const v = JSON.parse(text)
      assert.ok(validateJson(v, schema), text)
      assert.equal(typeof v.name, 'string')
      assert.ok(Number.isInteger(v.age))
      assert.ok(['cat', 'dog', 'bird'].includes(v.species))
    }
  })

  test('refused clearly: unsatisfiable or unsupported schemas, tools', async () => {
    const withSchema = (schema: unknown): OpenAI.ChatCompletionCreateParamsNonStreaming => chat('x', { response_format: { type: 'json_schema', json_schema: { name: 's', schema: schema as Record<string, unknown> } } })
    await assert.rejects(client.chat.completions.create(withSchema({ type: 'object', properties: { a: { enum: [] } }, required: ['a'] })),
      (e: any) => e instanceof OpenAI.BadRequestError && e.param === 'response_format' && /cannot be satisfied/.test(e.message) && /`enum` is empty/.test(e.message))
    await assert.rejects(client.chat.completions.create(withSchema({ type: 'string', pattern: '^[a-z]+$' })),
      (e: any) => e instanceof OpenAI.BadRequestError && /`pattern`/.test(e.message))
    const tool = { type: 'function' as const, function: { name: 'f', parameters: { type: 'object' } } }
    await assert.rejects(client.chat.completions.create(chat('x', { tools: [tool] })),
      (e: any) => e instanceof OpenAI.BadRequestError && e.param === 'tools' && /tools are not supported/.test(e.message))
  })
})
