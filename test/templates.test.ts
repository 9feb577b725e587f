/**
 * Model templates and one-click serving (issue 16) on real agent processes.
 *
 * The Hugging Face hub cannot be reached from here, so a small FAKE hub speaks the hub's real HTTP API (the
 * paths huggingface_hub uses): GET /api/models/{repo} (model info: cardData.license, gguf.total,
 * gguf.architecture, gguf.context_length, tags), GET /api/models/{repo}/revision/{rev},
 * GET /api/models/{repo}/tree/{rev}?recursive=true and GET /{repo}/resolve/{rev}/{path}; the agent is
 * pointed at it with HF_ENDPOINT, as hub.ts reads it. Its GGUF files are placeholders (never downloaded here).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { createServer } from 'node:http'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { AgentProcess, stopAll, until } from './helpers/agents.ts'
import { realWeights } from './helpers/weights.ts'
import { skipNamed } from './helpers/skip.ts'

const sha1 = (s: string): string => createHash('sha1').update(s).digest('hex')
const FILES: Record<string, number> = { 'README.md': 10, 'Tiny-Chat-Q2_K.gguf': 90_000_000, 'Tiny-Chat-Q4_K_M.gguf': 150_000_000, 'Tiny-Chat-Q8_0.gguf': 260_000_000 }
const REPO = 'acme/Tiny-Chat-GGUF'
const COMMIT = sha1(REPO)

let hub: Server
let agent: AgentProcess
const seen: string[] = []

const SEED_MLSERVICE = (name: string, ref: string): string => `apiVersion: ml.oneblock.ai/v1alpha1
kind: MLService
metadata:
  name: ${name}
  namespace: default
spec:
  modelTemplateVersionRef:
    name: ${ref}
    namespace: default
  notAThing: 5
  mlClusterRef:
    name: mistral-7b-cluster
    namespace: default
    rayClusterSpec:
      version: 0.5.0
      image: "anyscale/ray-llm"
      headGroupSpec:
        rayStartParams:
          dashboard-host: "0.0.0.0"
          num-cpus: "0"
      workerGroupSpec:
      - name: small-wg
        replicas: 1
        minReplicas: 1
        maxReplicas: 5
        acceleratorTypes:
          Nvidia-A10: 1
        resources:
          limits:
            cpu: 8
            memory: 12Gi
        nodeSelector:
          nvidia.com/product-type: nvidia-A10
`

before(async () => {
  hub = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://hub')
    seen.push(url.pathname)
    const json = (status: number, body: unknown): void => { res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body)) }
    const paths = Object.keys(FILES).sort()
    if (url.pathname === `/api/models/${REPO}`) {
      json(200, { id: REPO, sha: COMMIT, tags: ['gguf', 'license:apache-2.0'], cardData: { license: 'apache-2.0', base_model: 'acme/Tiny-Chat' }, gguf: { total: 134_515_008, architecture: 'llama', context_length: 8192 }, siblings: paths.map(rfilename => ({ rfilename })) })
    } else if (url.pathname === `/api/models/${REPO}/revision/main`) {
      json(200, { id: REPO, sha: COMMIT, siblings: paths.map(rfilename => ({ rfilename })) })
    } else if (url.pathname === `/api/models/${REPO}/tree/${COMMIT}`) {
      json(200, paths.map(path => ({ type: 'file', oid: sha1(path), size: FILES[path], path, ...(path.endsWith('.gguf') ? { lfs: { oid: sha1(path) + sha1(path).slice(0, 24), size: FILES[path], pointerSize: 133 } } : {}) })))
    } else {
      res.writeHead(404, { 'content-type': 'application/json', 'x-error-code': 'RepoNotFound' }).end('{"error":"Repository not found"}')
    }
  })
  await new Promise<void>(resolve => hub.listen(0, '127.0.0.1', resolve))
  process.env.HF_ENDPOINT = `http://127.0.0.1:${(hub.address() as AddressInfo).port}`
  agent = await AgentProcess.start({ name: 'templates' })
})

after(async () => {
  await stopAll([agent])
  hub?.close()
})

describe('templates on one agent', () => {
  test('GET /api/templates: the catalogue with versions, availability and memory per quantization', async () => {
    const r = await agent.api('/api/templates')
    assert.equal(r.status, 200)
    const smol = r.body.templates.find((t: any) => t.name === 'smollm2-135m-instruct')
    assert.ok(smol.builtin)
    assert.equal(smol.latest, 'smollm2-135m-instruct-v1')
    assert.equal(smol.license, 'apache-2.0')
    assert.ok(['cached', 'pypi'].includes(smol.availability.state))
    assert.deepEqual(smol.estimates.map((e: any) => e.quantization).sort(), ['Q4_1', 'Q4_K_M', 'Q8_0'])
    assert.ok(smol.estimates.every((e: any) => e.totalBytes > 100e6 && e.totalBytes < 2e9), JSON.stringify(smol.estimates.map((e: any) => e.totalBytes)))
    const q7 = r.body.templates.find((t: any) => t.name === 'qwen2.5-7b-instruct')
    assert.equal(q7.availability.state, 'hub')
    assert.ok(q7.estimates[0].totalBytes > 4e9)
  })

  test('a template from a hub model id: the fake hub\'s metadata fills architecture, size, files, licence', async () => {
    const r = await agent.api('/api/templates', { method: 'POST', body: { hf: REPO, contextLength: 1024 } })
    assert.equal(r.status, 201, JSON.stringify(r.body))
    assert.equal(r.body.name, 'tiny-chat')
    assert.equal(r.body.hf, REPO)
    assert.equal(r.body.license, 'apache-2.0')
    assert.equal(r.body.parameters, 134_515_008)
    const v1 = r.body.versions[0]
    assert.equal(v1.name, 'tiny-chat-v1')
    assert.equal(v1.spec.model.architecture, 'llama')
    assert.equal(v1.spec.model.contextLength, 8192)
    assert.deepEqual(v1.spec.source, { kind: 'hub', repo: REPO, revision: 'main', file: 'Tiny-Chat-Q4_K_M.gguf', quantization: 'Q4_K_M' })
    assert.equal(v1.modelSource, `hf://${REPO}/Tiny-Chat-Q4_K_M.gguf`)
    assert.deepEqual(v1.spec.model.files.map((f: any) => [f.quantization, f.sizeBytes]), [['Q2_K', 90_000_000], ['Q4_K_M', 150_000_000], ['Q8_0', 260_000_000]])
    assert.ok(seen.includes(`/api/models/${REPO}`), 'the model info API was asked')
    // a repo the hub does not have
    const missing = await agent.api('/api/templates', { method: 'POST', body: { hf: 'acme/nothing-here' } })
    assert.equal(missing.status, 422)
    assert.match(missing.body.error.message, /acme\/nothing-here/)
    // the same name again
    assert.equal((await agent.api('/api/templates', { method: 'POST', body: { hf: REPO } })).status, 409)
  })

  test('an update creates the next version; v1 is unchanged', async () => {
    const before = (await agent.api('/api/templates/tiny-chat')).body.versions[0]
    const u = await agent.api('/api/templates/tiny-chat', { method: 'PUT', body: { contextLength: 2048, maxConcurrentSequences: 4, sampling: { temperature: 0.1 }, deploymentConfig: { maxReplicas: 3 } } })
    assert.equal(u.status, 201, JSON.stringify(u.body))
    assert.equal(u.body.version.name, 'tiny-chat-v2')
    assert.equal(u.body.version.spec.contextLength, 2048)
    const t = (await agent.api('/api/templates/tiny-chat')).body
    assert.deepEqual(t.versions.map((v: any) => v.name), ['tiny-chat-v1', 'tiny-chat-v2'])
    assert.deepEqual(t.versions[0], before, 'v1 as it was')
    assert.equal(t.latest, 'tiny-chat-v2')
    assert.equal((await agent.api('/api/templates/tiny-chat-v1')).body.name, 'tiny-chat')
    assert.equal((await agent.api('/api/templates/nope')).status, 404)
    assert.equal((await agent.api('/api/templates/tiny-chat', { method: 'PUT', body: { contextLength: 'long' } })).status, 400)
    assert.equal((await agent.api('/api/templates/tiny-chat', { method: 'PUT', body: { contextLength: 512 }, token: null })).status, 401)
  })

  test('deploy, dry run: the decision with its numbers', async () => {
    const r = await agent.api('/api/templates/smollm2-135m-instruct-v1/deploy', { method: 'POST', body: { dryRun: true } })
    assert.equal(r.status, 200, JSON.stringify(r.body))
    assert.equal(r.body.deployed, false)
    assert.equal(r.body.decision.kind, 'whole')
    assert.ok(r.body.decision.needBytes > 0)
    assert.equal(r.body.decision.peer.name, 'templates')
    assert.ok(r.body.decision.freeBytes.templates > 0)
  })

  test('the seed\'s MLService YAML: mapped field by field; a model that fits nowhere is refused with the numbers', async () => {
    // a template far bigger than this machine
    const giant = await agent.api('/api/templates', { method: 'POST', body: { name: 'giant', source: { kind: 'uri', uri: '/nonexistent/giant.gguf' }, model: { parameters: 400_000_000_000, layers: 120, hidden: 16384, heads: 128, kvHeads: 8, vocab: 128_256 } } })
    assert.equal(giant.status, 201, JSON.stringify(giant.body))
    const res = await fetch(`${agent.url}/api/mlservices`, { method: 'POST', headers: { 'content-type': 'application/yaml', authorization: `Bearer ${agent.token}` }, body: SEED_MLSERVICE('giant-llm', 'giant-v1') })
    const body = await res.json() as any
    assert.equal(res.status, 422, JSON.stringify(body))
    assert.equal(body.error.code, 'does_not_fit')
    assert.equal(body.error.details.decision.kind, 'refused')
    assert.ok(body.error.details.decision.needBytes > 100e9)
    assert.ok(body.error.details.decision.freeBytes.templates > 0)
    const notes = Object.fromEntries(body.error.details.explanation.map((n: any) => [n.field, n]))
    assert.equal(notes['spec.modelTemplateVersionRef.name'].status, 'honoured')
    assert.equal(notes['spec.mlClusterRef.rayClusterSpec.image'].status, 'ignored')
    assert.match(notes['spec.mlClusterRef.rayClusterSpec.image'].note, /own engine/)
    assert.equal(notes['spec.mlClusterRef.rayClusterSpec.workerGroupSpec[0].maxReplicas'].status, 'honoured')
    assert.equal(notes['spec.mlClusterRef.rayClusterSpec.workerGroupSpec[0].acceleratorTypes'].status, 'ignored')
    assert.equal(notes['spec.notAThing'].status, 'unsupported', 'an unsupported field is named')
    // not YAML, not an MLService
    const bad = await fetch(`${agent.url}/api/mlservices`, { method: 'POST', headers: { 'content-type': 'application/yaml', authorization: `Bearer ${agent.token}` }, body: 'kind: [unclosed' })
    assert.equal(bad.status, 400)
    assert.equal((await agent.api('/api/mlservices', { method: 'POST', body: { apiVersion: 'v1', kind: 'Pod' } })).status, 400)
    assert.deepEqual((await agent.api('/api/mlservices')).body.services, [])
  })
})

const smol = realWeights('smollm2')
test(skipNamed('one click: the smollm2 template deployed whole from the weight cache, then chat by the template\'s name', smol.skip), { skip: smol.skip, timeout: 300_000 }, async () => {
  const r = await agent.api('/api/templates/smollm2-135m-instruct/deploy', { method: 'POST', body: { replicas: 1 } })
  assert.equal(r.status, 201, JSON.stringify(r.body))
  assert.equal(r.body.deployed, true)
  assert.equal(r.body.decision.kind, 'whole')
  assert.equal(r.body.block.id, 'smollm2-135m-instruct')
  const block = await until(async () => {
    const b = await agent.api('/api/blocks/smollm2-135m-instruct')
    return b.body.status === 'ready' || b.body.status === 'failed' ? b.body : undefined
  }, 'the block to load', 240_000, 250)
  assert.equal(block.status, 'ready', JSON.stringify(block))
  const chat = await agent.api('/v1/chat/completions', { method: 'POST', body: { model: 'smollm2-135m-instruct', messages: [{ role: 'user', content: 'What is the capital of France?' }], max_tokens: 16, temperature: 0 } })
  assert.equal(chat.status, 200, JSON.stringify(chat.body))
  const text = chat.body.choices[0].message.content as string
  assert.ok(text.length > 0)
  console.log(`smollm2-135m-instruct answered: ${JSON.stringify(text)}`)
  // deploying it again under the same name is refused
  assert.equal((await agent.api('/api/templates/smollm2-135m-instruct/deploy', { method: 'POST', body: {} })).status, 409)
})
