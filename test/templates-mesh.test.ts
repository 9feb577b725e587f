/**
 * One click on a 3-agent mesh (issue 16): the SmolLM2 template deployed where the agents' memory is simulated
 * (`--simulate-gpus`, free GPU memory set through the API), so the mesh's decision is what the test sets up:
 * with room on one peer the model goes whole; with no peer able to hold it but two able to hold half, it is
 * split into 2 stages by a split task and served as a vDAG under the template's name, answering with the whole
 * model's greedy tokens; with room nowhere it is refused with the numbers.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import OpenAI from 'openai'
import { AgentProcess, stopAll, until } from './helpers/agents.ts'
import { realWeights } from './helpers/weights.ts'

const smol = realWeights('smollm2')
const MiB = 2 ** 20
/** The Python venv with the official openai client (scripts/python-clients.sh, run by .ci/run). */
const PY = join(process.env.BLOCKMESH_CACHE ?? join(homedir(), '.cache', 'blockmesh'), 'py-clients', 'bin', 'python')
const noPython = existsSync(PY) ? false : `no Python openai client at ${PY} (scripts/python-clients.sh makes it)`

describe(`templates deployed by the mesh's decision on 3 agents with simulated GPU memory${smol.skip !== false ? ` (skipped: ${String(smol.skip)})` : ''}`, { skip: smol.skip, timeout: 600_000 }, () => {
  let a: AgentProcess, b: AgentProcess, c: AgentProcess
  const agents = (): AgentProcess[] => [a, b, c]

  /** Every agent reports one simulated GPU with `free` bytes free; waits until A sees all three records say so. */
  async function setFree (free: number): Promise<void> {
    for (const x of agents()) {
      const r = await x.api('/api/hardware/simulated-gpus', { method: 'PUT', body: { gpus: [{ model: 'T4', memoryTotalBytes: 16 * 1024 * MiB, memoryFreeBytes: free, utilisation: 0 }] } })
      assert.equal(r.status, 200, JSON.stringify(r.body))
    }
    await until(async () => (await a.peers()).every((p: any) => p.readings.gpus[0]?.memoryFreeBytes === free), 'every record to carry the new free memory')
  }

  async function decide (): Promise<any> {
    const r = await a.api('/api/templates/smollm2-135m-instruct/deploy', { method: 'POST', body: { dryRun: true, name: 'probe' } })
    return r
  }

  before(async () => {
    const gpus = 'count=1,model=T4,memory=16GiB,free=8GiB'
    a = await AgentProcess.start({ name: 'tm-a', simulateGpus: gpus })
    ;[b, c] = await Promise.all(['tm-b', 'tm-c'].map(async name => await AgentProcess.start({ name, bootstrap: [a.addr], simulateGpus: gpus })))
    await until(async () => (await a.peers()).length === 3, 'the mesh to form')
  })
  after(async () => { await stopAll([a, b, c]) })

  test('room on one peer: whole; room nowhere: refused with the numbers', async () => {
    const whole = await decide()
    assert.equal(whole.status, 200, JSON.stringify(whole.body))
    assert.equal(whole.body.decision.kind, 'whole', JSON.stringify(whole.body.decision))
    const need = whole.body.decision.needBytes as number
    assert.ok(need > 100 * MiB, `SmolLM2 needs more than its file: ${need}`)
    assert.match(whole.body.decision.reason, /GiB|MiB/)

    await setFree(Math.floor(need * 0.2))
    const refused = await decide()
    assert.equal(refused.status, 422, JSON.stringify(refused.body))
    assert.equal(refused.body.error.code, 'does_not_fit')
    assert.match(refused.body.error.message, /MiB|GiB/)
  })

  test('no peer holds it whole but two hold half: split into 2 stages, served under the template\'s name with the whole model\'s greedy tokens', async () => {
    // a little more than half the whole model on each peer: no whole placement, a 2-stage split fits
    const need = (await (async () => { await setFree(8 * 1024 * MiB); return (await decide()).body.decision.needBytes as number })())
    await setFree(Math.floor(need * 0.75))
    const preview = await decide()
    assert.equal(preview.body.decision.kind, 'split', JSON.stringify(preview.body.decision))
    assert.equal(preview.body.decision.stages.length, 2)

    const r = await a.api('/api/templates/smollm2-135m-instruct/deploy', { method: 'POST', body: { name: 'smol-split' } })
    assert.equal(r.status, 201, JSON.stringify(r.body))
    assert.equal(r.body.deployed, true)
    assert.equal(r.body.decision.kind, 'split')
    assert.match(String(r.body.task), /.+/)
    const vdag = await until(async () => {
      const v = await a.api('/api/vdags/smol-split')
      return v.status === 200 && v.body.ready === true ? v.body : undefined
    }, 'the vDAG to be served', 300_000, 1000)
    assert.equal(vdag.stages.length, 2)
    // each stage runs on the peer the decision chose for it, in the decision's order
    for (const [i, stage] of (r.body.decision.stages as Array<{ peer: { name: string } }>).entries()) {
      const block = (await a.api(`/api/blocks/${vdag.stages[i] as string}`)).body
      assert.equal(block.instances[0]?.peerName, stage.peer.name, `stage ${i} on ${stage.peer.name}`)
    }

    // the same model whole, for comparison: a block of the component the split was made from
    const whole = await a.api('/api/blocks', { method: 'POST', body: { id: 'smol-whole', component: r.body.component } })
    assert.equal(whole.status, 201, JSON.stringify(whole.body))
    await until(async () => (await a.api('/api/blocks/smol-whole')).body.status === 'ready', 'the whole model to load', 120_000)
    for (const prompt of ['The capital of France is', 'Count: one, two,']) {
      const ask = async (model: string): Promise<string> => {
        const x = await a.api('/v1/completions', { method: 'POST', body: { model, prompt, max_tokens: 12, temperature: 0 } })
        assert.equal(x.status, 200, JSON.stringify(x.body))
        return x.body.choices[0].text as string
      }
      assert.equal(await ask('smol-split'), await ask('smol-whole'), `greedy tokens for ${JSON.stringify(prompt)}`)
    }
  })

  test('the seed\'s test plan: the official OpenAI client (npm) chats with the service by the template\'s name', async () => {
    const client = new OpenAI({ baseURL: `${a.url}/v1`, apiKey: a.token })
    const r = await client.chat.completions.create({ model: 'smol-split', messages: [{ role: 'system', content: 'You are a helpful assistant.' }, { role: 'user', content: 'Once upon a time,' }], temperature: 0.1, max_tokens: 12 })
    assert.equal(r.model, 'smol-split')
    assert.ok((r.choices[0].message.content ?? '').length > 0)
  })

  test(`the seed's test plan in Python: openai from PyPI chats with the service${noPython !== false ? ` (skipped: ${noPython})` : ''}`, { skip: noPython }, () => {
    const script = [
      'import openai, sys',
      'client = openai.OpenAI(base_url=sys.argv[1], api_key=sys.argv[2])',
      'r = client.chat.completions.create(model="smol-split", messages=[{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Once upon a time,"}], temperature=0.1, max_tokens=12)',
      'print(r.model)',
      'print(r.choices[0].message.content)'
    ].join('\n')
    const out = execFileSync(PY, ['-c', script, `${a.url}/v1`, a.token], { encoding: 'utf8', timeout: 120_000 }).split('\n')
    assert.equal(out[0], 'smol-split')
    assert.ok((out[1] ?? '').length > 0, `an answer: ${JSON.stringify(out)}`)
  })

  test('a split service rolled to a new version: split again beside the old vDAG, switched, the old stages drained and gone, no request lost', async () => {
    const before = (await a.api('/api/mlservices/smol-split')).body
    assert.equal(before.target, 'smol-split')
    const oldStages = (await a.api('/api/vdags/smol-split')).body.stages as string[]
    const v2 = await a.api('/api/templates/smollm2-135m-instruct', { method: 'PUT', body: { sampling: { maxTokens: 48 } } })
    assert.equal(v2.status, 201, JSON.stringify(v2.body))
    // two clients asking all through the rollout
    let stop = false
    const failures: string[] = []
    let answered = 0
    const clients = [a, b].map(async (via) => {
      while (!stop) {
        const x = await via.api('/v1/completions', { method: 'POST', body: { model: 'smol-split', prompt: 'Count: one, two,', max_tokens: 8, temperature: 0 } })
        if (x.status !== 200) failures.push(`${x.status} ${JSON.stringify(x.body).slice(0, 200)}`)
        else answered++
      }
    })
    const r = await c.api('/api/mlservices/smol-split/rollout', { method: 'POST', body: { version: v2.body.version.name } })
    assert.equal(r.status, 202, JSON.stringify(r.body))
    const done = await until(async () => {
      const s = (await a.api('/api/mlservices/smol-split')).body
      if (s.rollout?.phase === 'failed') throw new Error(`rollout failed: ${s.rollout.error as string}`)
      return s.rollout?.phase === 'done' ? s : undefined
    }, 'the split rollout to finish', 480_000, 1000)
    stop = true
    await Promise.all(clients)
    assert.deepEqual(failures, [], `${failures.length} requests failed, ${answered} answered`)
    assert.ok(answered > 0)
    assert.equal(done.decision, 'split')
    assert.equal(done.target, done.rollout.to.unit)
    assert.match(done.target, /^smol-split-v\d+$/)
    assert.equal((await a.api('/api/vdags/smol-split')).status, 404)
    for (const st of oldStages) assert.equal((await a.api(`/api/blocks/${st}`)).status, 404, `old stage ${st} removed`)
    const now = (await a.api(`/api/vdags/${done.target as string}`)).body
    assert.equal(now.stages.length, 2)
    // the name still answers, with the whole model's greedy tokens
    const whole = await a.api('/v1/completions', { method: 'POST', body: { model: 'smol-whole', prompt: 'The capital of France is', max_tokens: 12, temperature: 0 } })
    const split = await b.api('/v1/completions', { method: 'POST', body: { model: 'smol-split', prompt: 'The capital of France is', max_tokens: 12, temperature: 0 } })
    assert.equal(split.status, 200, JSON.stringify(split.body))
    assert.equal(split.body.model, 'smol-split')
    assert.equal(split.body.choices[0].text, whole.body.choices[0].text)
  })
})
