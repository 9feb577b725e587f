/**
 * A model split into three pipeline stages by a real split task (local runner, the built-in
 * splitter), deployed as three blocks on three agent processes and served as one model.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import ort from 'onnxruntime-node'
import { AgentProcess, stopAll, tempDir, until } from './helpers/agents.ts'
import { generateModel } from '../agent/model/generate.ts'
import { PRESETS } from '../agent/model/spec.ts'
import { ByteTokenizer } from '../agent/model/tokenizer.ts'
import { decoderShape, emptyPast, presentAsPast, sequenceFeeds } from '../agent/executor/feeds.ts'
import { argmax } from '../agent/executor/sampling.ts'

const ROGUE = fileURLToPath(new URL('./fixtures/rogue-tensor.ts', import.meta.url))

async function complete (agent: AgentProcess, model: string, prompt: string, maxTokens = 24): Promise<{ status: number, text: string, body: any }> {
  const r = await agent.api('/v1/completions', { method: 'POST', body: { model, prompt, max_tokens: maxTokens, temperature: 0 } })
  return { status: r.status, text: r.body?.choices?.[0]?.text ?? '', body: r.body }
}

describe('a model split into 3 stages, served across 3 agent processes', () => {
  let a: AgentProcess, b: AgentProcess, c: AgentProcess
  const dir = tempDir('bm-vdag-')
  const m = generateModel({ ...PRESETS.tiny, layers: 3, maxPositions: 4096, seed: 13 }, join(dir, 'tiny3.onnx'))
  let task: any

  before(async () => {
    a = await AgentProcess.start({ name: 'a' })
    ;[b, c] = await Promise.all([AgentProcess.start({ name: 'b', bootstrap: [a.addr] }), AgentProcess.start({ name: 'c', bootstrap: [a.addr] })])
    await until(async () => (await a.peers()).length === 3, 'the mesh to form')
    const start = await a.api('/start_model_split_job', {
      method: 'POST',
      body: { task_data: { model_name: 'tiny3', model_download_url: m.path, world_size: 3, model_split_config: { block: { maxBatch: 4 } } }, container_image: 'blockmesh/onnx-splitter', storage_size: '1Gi' }
    })
    assert.equal(start.status, 201, JSON.stringify(start.body))
    assert.equal(start.body.success, true)
    task = await until(async () => {
      const t = (await a.api(`/tasks/${start.body.task_id as string}`)).body.data
      return t.status === 'complete' || t.status === 'failed' ? t : undefined
    }, 'the split task to finish', 120_000, 250)
    assert.equal(task.status, 'complete', task.error)
    const deployed = await a.api('/api/vdags/deploy', { method: 'POST', body: { task_id: task.task_id } })
    assert.equal(deployed.status, 201, JSON.stringify(deployed.body))
    // the monolithic model, for comparison
    assert.equal((await a.api('/api/components', { method: 'POST', body: { name: 'tiny3-whole', version: '1', runtime: 'onnx', model: { url: m.path, md5: m.md5 }, contextLength: 4096 } })).status, 201)
    assert.equal((await a.api('/api/blocks', { method: 'POST', body: { id: 'whole', component: 'tiny3-whole:1' } })).status, 201)
    for (const x of [a, b, c]) {
      await until(async () => {
        const ids = (await x.api('/v1/models')).body.data.map((d: any) => d.id)
        return ids.includes('tiny3-pipeline') && ids.includes('whole')
      }, `${x.spec.name} to serve both models`, 90_000)
    }
  })
  after(async () => { await stopAll([a, b, c]) })

  test('the split task went through the local runner and left a verified plan and registered layers', async () => {
    assert.equal(task.runner, 'local')
    assert.equal(task.progress, 1)
    assert.equal(task.task_type, 'model_splits')
    assert.ok(task.result.max_abs_diff <= 1e-4)
    const plan = task.result.plan
    assert.equal(plan.world_size, 3)
    assert.equal(plan.stages.length, 3)
    assert.deepEqual(plan.stages.map((s: any) => s.layers), [[0, 1], [1, 2], [2, 3]])
    assert.equal(plan.vdag.edges.length, 2)
    for (const s of plan.stages) {
      const layer = await a.api(`/model-layer/${s.model_layer_hash as string}`)
      assert.equal(layer.status, 200)
      assert.equal(layer.body.data.model_layer_rank, s.rank)
      assert.equal(layer.body.data.model_world_size, 3)
      assert.equal(layer.body.data.model_asset_id, 'tiny3')
    }
    assert.ok((await a.api('/tasks')).body.data.some((t: any) => t.task_id === task.task_id))
  })

  test('each stage runs on a different peer', async () => {
    const blocks = (await a.api('/api/blocks')).body.blocks.filter((x: any) => x.id.startsWith('tiny3-pipeline-s'))
    assert.equal(blocks.length, 3)
    const peers = blocks.map((x: any) => x.instances[0]?.peerId)
    assert.equal(new Set(peers).size, 3, JSON.stringify(peers))
  })

  test('greedy tokens through the vDAG, from any agent, are the monolithic model\'s (plain and streamed)', async () => {
    for (const via of [a, b, c]) {
      for (const prompt of ['The harbour town', 'Mara kept']) {
        const split = await complete(via, 'tiny3-pipeline', prompt)
        const whole = await complete(via, 'whole', prompt)
        assert.equal(split.status, 200, JSON.stringify(split.body))
        assert.equal(split.text, whole.text)
        assert.equal(split.body.usage.completion_tokens, 24)
      }
    }
    const res = await fetch(`${c.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${c.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'tiny3-pipeline', messages: [{ role: 'user', content: 'hello' }], max_tokens: 16, temperature: 0, stream: true })
    })
    const text = (await res.text()).split('\n').filter(l => l.startsWith('data: {')).map(l => JSON.parse(l.slice(6)).choices[0]?.delta?.content ?? '').join('')
    const whole = await c.api('/v1/chat/completions', { method: 'POST', body: { model: 'whole', messages: [{ role: 'user', content: 'hello' }], max_tokens: 16, temperature: 0 } })
    assert.equal(text, whole.body.choices[0].message.content)
  })

  test('logits computed across the peers are within 1e-4 of the monolithic model\'s', async () => {
    const probe = await b.api('/api/vdags/tiny3-pipeline/probe', { method: 'POST', body: { prompt: 'The gulls', max_tokens: 5 } })
    assert.equal(probe.status, 200, JSON.stringify(probe.body))
    assert.equal(new Set(probe.body.route.map((h: any) => h.peer)).size, 3)
    const session = await ort.InferenceSession.create(m.path)
    const shape = decoderShape(session)
    const prompt = new ByteTokenizer().encode('The gulls', { bos: true })
    let out = await session.run(sequenceFeeds(prompt, 0, emptyPast(shape, 1)))
    let pos = prompt.length
    for (let step = 0; step < 5; step++) {
      const all = out.logits.data as Float32Array
      const row = step === 0 ? all.subarray((prompt.length - 1) * shape.vocab) : all
      let diff = 0
      for (let i = 0; i < shape.vocab; i++) diff = Math.max(diff, Math.abs(row[i] - probe.body.logits[step][i]))
      assert.ok(diff <= 1e-4, `step ${step}: ${diff}`)
      const t = argmax(row)
      assert.equal(probe.body.tokens[step], t)
      out = await session.run(sequenceFeeds([t], pos++, presentAsPast(shape, out)))
    }
    await session.release()
  })

  test('concurrent requests through the vDAG each get their own answer', async () => {
    const prompts = ['one', 'two two', 'three three three', 'four four four four']
    const alone = []
    for (const p of prompts) alone.push((await complete(b, 'whole', p, 20)).text)
    const together = await Promise.all(prompts.map(async p => (await complete(b, 'tiny3-pipeline', p, 20)).text))
    assert.deepEqual(together, alone)
  })

  test('8 concurrent streams through the ring pipeline: every stream\'s greedy tokens are the whole model\'s', async () => {
    const prompts = Array.from({ length: 8 }, (_, i) => `Stream ${i}: the ${['harbour', 'gulls', 'tide', 'lamp'][i % 4]}`)
    const stream = async (via: AgentProcess, model: string, prompt: string): Promise<string> => {
      const res = await fetch(`${via.url}/v1/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${via.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model, prompt, max_tokens: 32, temperature: 0, stream: true })
      })
      assert.equal(res.status, 200)
      return (await res.text()).split('\n').filter(l => l.startsWith('data: {')).map(l => JSON.parse(l.slice(6)).choices[0]?.text ?? '').join('')
    }
    const alone: string[] = []
    for (const p of prompts) alone.push((await complete(c, 'whole', p, 32)).text)
    const together = await Promise.all(prompts.map(async p => await stream(c, 'tiny3-pipeline', p)))
    assert.deepEqual(together, alone)
    assert.ok(alone.every(t => t.length > 0))
  })

  test('a prompt longer than a prefill chunk goes through in chunks and answers like the whole model', async () => {
    const long = 'The harbour town woke slowly. '.repeat(20) // 600 bytes: 601 tokens, three chunks
    const [split, whole] = [await complete(a, 'tiny3-pipeline', long, 16), await complete(a, 'whole', long, 16)]
    assert.equal(split.status, 200, JSON.stringify(split.body))
    assert.equal(split.body.usage.prompt_tokens, 601)
    assert.equal(split.text, whole.text)
  })

  test('logprobs, penalties, n choices and JSON constraints work through the vDAG as on the whole model', async () => {
    const ask = async (model: string, extra: Record<string, unknown>): Promise<any> => {
      const r = await b.api('/v1/completions', { method: 'POST', body: { model, prompt: 'The harbour town', max_tokens: 16, temperature: 0, ...extra } })
      assert.equal(r.status, 200, JSON.stringify(r.body))
      return r.body
    }
    const variants: Array<Record<string, unknown>> = [
      { logprobs: 3 },
      { frequency_penalty: 1.5, presence_penalty: 0.5 },
      { repetition_penalty: 1.8 },
      { n: 2, temperature: 1, seed: 5 },
      { response_format: { type: 'json_object' }, temperature: 1, seed: 3, max_tokens: 40 },
      { response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', properties: { a: { type: 'integer' }, b: { enum: ['x', 'y'] } }, required: ['a', 'b'], additionalProperties: false } } }, temperature: 1, seed: 4, max_tokens: 30 }
    ]
    const plain = (await ask('tiny3-pipeline', {})).choices[0].text
    for (const v of variants) {
      const [split, whole] = await Promise.all([ask('tiny3-pipeline', v), ask('whole', v)])
      assert.deepEqual(split.choices.map((c: any) => c.text), whole.choices.map((c: any) => c.text), JSON.stringify(v))
      assert.equal(split.usage.completion_tokens, whole.usage.completion_tokens)
      if (v.logprobs != null) {
        const [s, w] = [split.choices[0].logprobs, whole.choices[0].logprobs]
        assert.deepEqual(s.tokens, w.tokens)
        s.token_logprobs.forEach((lp: number, i: number) => { assert.ok(Math.abs(lp - w.token_logprobs[i]) < 1e-3) })
        assert.deepEqual(s.top_logprobs.map((m: any) => Object.keys(m)), w.top_logprobs.map((m: any) => Object.keys(m)))
      }
      if (v.response_format != null) {
        const value = JSON.parse(split.choices[0].text)
        assert.equal(typeof value, 'object', split.choices[0].text)
        if ((v.response_format as any).type === 'json_schema') assert.ok(Number.isInteger(value.a) && ['x', 'y'].includes(value.b), split.choices[0].text)
      } else if (v.n == null && v.logprobs == null) {
        assert.notEqual(split.choices[0].text, plain, `${JSON.stringify(v)} changes the greedy answer`)
      }
    }
  })

  test('a second vDAG from the same plan reuses the running stage blocks', async () => {
    const before = (await a.api('/api/blocks')).body.blocks.length
    const again = await a.api('/api/vdags/deploy', { method: 'POST', body: { task_id: task.task_id, name: 'tiny3-again' } })
    assert.equal(again.status, 201, JSON.stringify(again.body))
    assert.deepEqual(again.body.blocks.map((x: any) => x.reused), [true, true, true])
    assert.deepEqual(again.body.vdag.stages, ['tiny3-pipeline-s0', 'tiny3-pipeline-s1', 'tiny3-pipeline-s2'])
    assert.equal((await a.api('/api/blocks')).body.blocks.length, before, 'no new blocks')
    const q = await a.api('/api/blocks/query', { method: 'POST', body: { component: again.body.vdag.stages.length > 0 ? task.result.plan.blocks[0].component : '', model_layer_hash: task.result.plan.stages[0].model_layer_hash } })
    assert.equal(q.body.blocks.length, 1)
    await until(async () => (await c.api('/v1/models')).body.data.some((d: any) => d.id === 'tiny3-again'), 'c to serve the second vDAG')
    assert.equal((await complete(c, 'tiny3-again', 'The harbour town')).text, (await complete(c, 'whole', 'The harbour town')).text)
  })

  test('a client that goes away mid-stream frees the sequence on every stage', async () => {
    const ac = new AbortController()
    const res = await fetch(`${b.url}/v1/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${b.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'tiny3-pipeline', prompt: 'Go on', max_tokens: 3000, temperature: 0.9, stream: true }),
      signal: ac.signal
    })
    const reader = (res.body as ReadableStream<Uint8Array>).getReader()
    for (let i = 0; i < 3; i++) await reader.read()
    ac.abort()
    for (const x of [a, b, c]) {
      await until(async () => (await x.api('/api/instances')).body.instances.filter((i: any) => i.block.startsWith('tiny3-pipeline-s')).every((i: any) => i.activeSequences === 0), `${x.spec.name}'s stages to free the sequence`)
    }
  })

  test('a plan with one bad stage is refused whole (400) before anything is written', async () => {
    const comp = (name: string): object => ({ name, version: '1', runtime: 'external', external: { url: 'http://127.0.0.1:9/v1', model: 'm' } })
    const bad = [
      { components: [comp('pd-good'), {}], blocks: [{ id: 'pd-a' }, { id: 'pd-b' }], vdag: { name: 'pd', contextLength: 128 } },
      { components: [comp('pd-good'), comp('pd-other')], blocks: [{ id: 'pd-a' }, { id: 'pd-b', maxInstances: 'many' }], vdag: { name: 'pd', contextLength: 128 } },
      { components: [comp('pd-good')], blocks: [{ id: 'pd-a' }], vdag: { name: 'not a name!', contextLength: 128 } },
      { components: [comp('pd-good'), comp('pd-other')], blocks: [{ id: 'pd-a' }], vdag: { name: 'pd', contextLength: 128 } }
    ]
    for (const plan of bad) {
      const r = await a.api('/api/vdags/deploy', { method: 'POST', body: { plan } })
      assert.equal(r.status, 400, JSON.stringify(r.body))
    }
    assert.equal((await a.api('/api/components/pd-good:1')).status, 404, 'the good stage\'s component was not written')
    assert.equal((await a.api('/api/blocks/pd-a')).status, 404, 'nor its block')
    assert.equal((await a.api('/api/vdags/pd')).status, 404)
  })

  test('malformed or oversized pipeline frames are rejected and the peer dropped; the agent keeps serving', async () => {
    const hosted = (await a.api('/api/instances')).body.instances.find((i: any) => i.block.startsWith('tiny3-pipeline-s'))
    const r = spawnSync(process.execPath, [ROGUE, a.addr, hosted.block, 'garbage,oversized,bad-shape,garbage'], { encoding: 'utf8', timeout: 60_000 })
    const reports = r.stdout.trim().split('\n').map(l => JSON.parse(l))
    assert.deepEqual(reports.slice(0, 3).map((x: any) => x.kind), ['garbage', 'oversized', 'bad-shape'])
    assert.ok(reports.slice(0, 3).every((x: any) => x.result !== 'answered'), JSON.stringify(reports))
    // not frames at all: the stream is dropped; a well-formed step that breaks the protocol is answered with an error
    assert.equal(reports[0].result, 'aborted', JSON.stringify(reports[0]))
    assert.equal(reports[1].result, 'aborted', JSON.stringify(reports[1]))
    assert.notEqual(reports[3].result, 'answered', 'after three strikes the peer is banned')
    assert.ok(await a.metric('blockmesh_peer_strikes_total') >= 3)
    assert.ok(await a.metric('blockmesh_peers_banned_total') >= 1)
    assert.equal((await complete(b, 'tiny3-pipeline', 'The harbour town')).status, 200)
  })
})
