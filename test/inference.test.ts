import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import OpenAI from 'openai'
import { AgentProcess, stopAll, until } from './helpers/agents.ts'
import { componentSpec, deploy, tinyModel } from './helpers/models.ts'

describe('the OpenAI-compatible API, through the official openai client, on a real agent', () => {
  let agent: AgentProcess
  let client: OpenAI
  const model = 'tiny'
  const ask = (content: string, over: Partial<OpenAI.ChatCompletionCreateParamsNonStreaming> = {}): OpenAI.ChatCompletionCreateParamsNonStreaming => ({
    model, messages: [{ role: 'user', content }], temperature: 0, max_tokens: 40, ...over
  })
  const askStream = (content: string, over: Partial<OpenAI.ChatCompletionCreateParamsStreaming> = {}): OpenAI.ChatCompletionCreateParamsStreaming => ({
    model, messages: [{ role: 'user', content }], temperature: 0, max_tokens: 40, ...over, stream: true
  })

  before(async () => {
    agent = await AgentProcess.start({ name: 'infer' })
    const m = tinyModel()
    const block = await deploy(agent, componentSpec(m), { id: model, component: `tiny-gpt:${m.md5.slice(0, 8)}` })
    assert.equal(block.status, 'ready', block.error)
    client = new OpenAI({ baseURL: `${agent.url}/v1`, apiKey: agent.token, maxRetries: 0 })
  })
  after(async () => { await stopAll([agent]) })

  test('lists the model', async () => {
    const ids = []
    for await (const m of client.models.list()) ids.push(m.id)
    assert.deepEqual(ids, [model])
    assert.equal((await client.models.retrieve(model)).id, model)
  })

  test('chat completion: greedy is deterministic and usage adds up', async () => {
    const a = await client.chat.completions.create(ask('Where is the harbour?'))
    const b = await client.chat.completions.create(ask('Where is the harbour?'))
    const text = a.choices[0].message.content ?? ''
    assert.ok(text.length > 0)
    assert.equal(text, b.choices[0].message.content)
    assert.equal(a.choices[0].finish_reason, 'length')
    assert.equal(a.usage?.completion_tokens, 40)
    // byte tokenizer: prompt = BOS + "user: <content>\nassistant:"
    assert.equal(a.usage?.prompt_tokens, 1 + Buffer.byteLength('user: Where is the harbour?\nassistant:'))
    assert.equal(a.usage?.total_tokens, (a.usage?.prompt_tokens ?? 0) + 40)
    assert.equal(a.object, 'chat.completion')
  })

  test('streaming gives the same text as the non-streamed answer, then usage and [DONE]', async () => {
    const whole = (await client.chat.completions.create(ask('Tell me a story.'))).choices[0].message.content
    const stream = await client.chat.completions.create(askStream('Tell me a story.', { stream_options: { include_usage: true } }))
    let text = ''
    let finish: string | null = null
    let usage: any = null
    let chunks = 0
    for await (const chunk of stream) {
      chunks++
      if (chunk.choices.length > 0) {
        text += chunk.choices[0].delta.content ?? ''
        finish = chunk.choices[0].finish_reason ?? finish
      }
      if (chunk.usage != null) usage = chunk.usage
    }
    assert.equal(text, whole)
    assert.equal(finish, 'length')
    assert.equal(usage?.completion_tokens, 40)
    assert.ok(chunks > 10, 'tokens arrive as separate chunks')
  })

  test('a seed reproduces sampling; another seed samples differently', async () => {
    const req = ask('Sing.', { temperature: 1, top_p: 0.95, seed: 1234, max_tokens: 60 })
    const a = (await client.chat.completions.create(req)).choices[0].message.content
    const b = (await client.chat.completions.create(req)).choices[0].message.content
    const c = (await client.chat.completions.create({ ...req, seed: 99 })).choices[0].message.content
    assert.equal(a, b)
    assert.notEqual(a, c)
  })

  test('text completions, streamed and not', async () => {
    const r = await client.completions.create({ model, prompt: 'The boats', max_tokens: 20, temperature: 0 })
    assert.equal(r.object, 'text_completion')
    assert.equal(r.usage?.completion_tokens, 20)
    let streamed = ''
    for await (const chunk of await client.completions.create({ model, prompt: 'The boats', max_tokens: 20, temperature: 0, stream: true })) {
      streamed += chunk.choices[0]?.text ?? ''
    }
    assert.equal(streamed, r.choices[0].text)
  })

  test('a stop string ends the answer before it, with finish_reason stop', async () => {
    const free = (await client.chat.completions.create(ask('Where is the harbour?'))).choices[0].message.content ?? ''
    const stop = free.slice(10, 13)
    assert.equal(stop.length, 3)
    const cut = free.slice(0, free.indexOf(stop))
    for (const stream of [false, true]) {
      let text = ''
      let finish: string | null = null
      if (stream) {
        for await (const chunk of await client.chat.completions.create(askStream('Where is the harbour?', { stop }))) {
          text += chunk.choices[0]?.delta.content ?? ''
          finish = chunk.choices[0]?.finish_reason ?? finish
        }
      } else {
        const r = await client.chat.completions.create({ ...ask('Where is the harbour?'), stop: [stop, 'zzzz'] })
        text = r.choices[0].message.content ?? ''
        finish = r.choices[0].finish_reason
      }
      assert.equal(text, cut, `stream=${stream}`)
      assert.equal(finish, 'stop')
    }
  })

  test('concurrent requests are batched and get exactly what they get alone', async () => {
    const prompts = ['one', 'two two', 'three three three', 'four']
    const alone = []
    for (const p of prompts) alone.push((await client.chat.completions.create(ask(p, { max_tokens: 30 }))).choices[0].message.content)
    const batchesBefore = await agent.metric('blockmesh_decode_batch_size_sum')
    const stepsBefore = await agent.metric('blockmesh_decode_batch_size_count')
    const together = await Promise.all(prompts.map(async p => (await client.chat.completions.create(ask(p, { max_tokens: 30 }))).choices[0].message.content))
    assert.deepEqual(together, alone)
    const seqSteps = (await agent.metric('blockmesh_decode_batch_size_sum')) - batchesBefore
    const steps = (await agent.metric('blockmesh_decode_batch_size_count')) - stepsBefore
    assert.ok(seqSteps > steps, `some decode steps ran more than one sequence (${seqSteps} sequence-steps in ${steps} steps)`)
  })

  test('bad requests get OpenAI-shaped errors with the right status', async () => {
    await assert.rejects(client.chat.completions.create({ ...ask('x'), model: 'no-such-model' }),
      (e: any) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found' && e.param === 'model')
    await assert.rejects(client.chat.completions.create({ model, messages: [] }),
      (e: any) => e instanceof OpenAI.BadRequestError && e.param === 'messages')
    await assert.rejects(client.chat.completions.create({ ...ask('x'), temperature: 7 }),
      (e: any) => e instanceof OpenAI.BadRequestError && e.param === 'temperature')
    await assert.rejects(client.chat.completions.create(ask('x', { n: 9 })),
      (e: any) => e instanceof OpenAI.BadRequestError && e.param === 'n' && /at most 8/.test(e.message))
    await assert.rejects(client.chat.completions.create({ ...ask('x'), max_tokens: 100_000 }),
      (e: any) => e instanceof OpenAI.BadRequestError && e.code === 'context_length_exceeded')
    const noKey = new OpenAI({ baseURL: `${agent.url}/v1`, apiKey: 'wrong-key', maxRetries: 0 })
    await assert.rejects(noKey.chat.completions.create(ask('x')), (e: any) => e instanceof OpenAI.AuthenticationError)
    const raw = await fetch(`${agent.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${agent.token}`, 'content-type': 'application/json' }, body: '{"model": ' })
    assert.equal(raw.status, 400)
    const body = await raw.json() as any
    assert.equal(body.error.type, 'invalid_request_error')
  })

  test('a client that disconnects mid-stream frees its sequence at once', async () => {
    const before = await agent.metric('blockmesh_tokens_generated_total')
    const stream = await client.chat.completions.create(askStream('Go on and on.', { max_tokens: 4000, temperature: 0.9 }))
    let chunks = 0
    for await (const _ of stream) {
      if (++chunks === 3) break // leaving the loop aborts the HTTP request
    }
    await until(async () => (await agent.api(`/api/blocks/${model}`)).body.activeSequences === 0, 'the sequence to be freed')
    assert.equal(await agent.metric('blockmesh_active_sequences'), 0)
    const generated = (await agent.metric('blockmesh_tokens_generated_total')) - before
    assert.ok(generated < 4000, `generation stopped early (${generated} of 4000 tokens)`)
  })
})
