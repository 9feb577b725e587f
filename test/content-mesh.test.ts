// Model files travel peer to peer (issue 15), end to end: real agent processes, each host that needs a file
// with NO path to the files of the agent that added it (AgentSpec.hide: an empty tmpfs over those folders in
// the agent's own mount namespace) and no HTTP source, so the bytes can only come over the mesh
// (/blockmesh/content/1.0.0). Every assertion is on states, digests and byte counts, none on wall-clock time.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { AgentProcess, canHide, stopAll, tempDir, until } from './helpers/agents.ts'
import type { AgentSpec } from './helpers/agents.ts'
import { componentSpec, deploy, splitAndDeploy } from './helpers/models.ts'
import { NetLab } from './helpers/netns.ts'
import type { NetHost } from './helpers/netns.ts'
import { realWeights } from './helpers/weights.ts'
import { generateModel } from '../agent/model/generate.ts'
import type { GeneratedModel } from '../agent/model/generate.ts'
import { PRESETS } from '../agent/model/spec.ts'
import { MeshNode } from '../mesh/node.ts'
import { readSwarmKeyFile, writeNewSwarmKey } from '../mesh/swarm-key.ts'
import { CONTENT_PROTOCOL, requestManifest } from '../agent/content/protocol.ts'
import type { ContentDialer } from '../agent/content/protocol.ts'
import { openManifest } from '../agent/content/manifest.ts'
import { skipNamed } from './helpers/skip.ts'

const ROGUE = fileURLToPath(new URL('./fixtures/rogue-content.ts', import.meta.url))
const noHide = canHide()
const noLab = NetLab.available()
const weights = realWeights('smollm2')

// ---------------------------------------------------------------- helpers

async function digests (path: string): Promise<{ md5: string, sha256: string }> {
  const md5 = createHash('md5')
  const sha = createHash('sha256')
  for await (const chunk of createReadStream(path)) { md5.update(chunk as Buffer); sha.update(chunk as Buffer) }
  return { md5: md5.digest('hex'), sha256: sha.digest('hex') }
}

/** This agent's content store (GET /api/content). */
async function store (agent: AgentProcess): Promise<{ usage: { bytes: number, capBytes: number }, files: any[], transfers: any[] }> {
  const r = await agent.api('/api/content')
  assert.equal(r.status, 200, JSON.stringify(r.body))
  return r.body
}

async function entry (agent: AgentProcess, md5: string): Promise<any> {
  return (await store(agent)).files.find(f => f.md5 === md5)
}

/** POST /api/content/fetch; the answer's files. */
async function pull (agent: AgentProcess, body: { md5: string } | { component: string }): Promise<Array<{ file: any, bySource: Record<string, number> }>> {
  const r = await agent.api('/api/content/fetch', { method: 'POST', body })
  assert.equal(r.status, 200, `${agent.spec.name} fetch: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body.files
}

/** Whether `viewer` sees `holder`'s capacity record list `md5` as held (or not, with `held: false`). */
async function untilSeesHeld (viewer: AgentProcess, holderId: string, md5: string, held = true): Promise<void> {
  await until(async () => {
    const r = await viewer.api(`/api/peers/${holderId}`)
    if (r.status !== 200) return false
    const list: string[] = r.body.record?.content?.held ?? r.body.content?.held ?? []
    return list.includes(md5) === held
  }, `${viewer.spec.name} to see ${holderId.slice(-6)} ${held ? 'hold' : 'no longer hold'} ${md5}`, 30_000, 100)
}

async function complete (agent: AgentProcess, model: string, prompt: string, maxTokens = 24): Promise<{ status: number, text: string, body: any }> {
  const r = await agent.api('/v1/completions', { method: 'POST', body: { model, prompt, max_tokens: maxTokens, temperature: 0 } })
  return { status: r.status, text: r.body?.choices?.[0]?.text ?? '', body: r.body }
}

function onHost (host: NetHost, spec: AgentSpec): Promise<AgentProcess> {
  return AgentProcess.start({ ...spec, netns: host.ns, listenIp: host.ip })
}

/** Bytes the agent's metrics say it received from peers ('mesh') or origins ('origin'). */
async function received (agent: AgentProcess, source: 'mesh' | 'origin'): Promise<number> {
  return await agent.metric('blockmesh_content_received_bytes_total', { source })
}

// ---------------------------------------------------------------- 1. a model added on A, served by C

describe(skipNamed('a model added on one agent is served by another that has no path to its files', noHide || weights.skip), { skip: noHide || weights.skip }, () => {
  let lab: NetLab | undefined
  let a: AgentProcess, c: AgentProcess
  let component: any

  before(async () => {
    if (noLab == null) lab = NetLab.create(2)
    const start = (i: number, spec: AgentSpec): Promise<AgentProcess> => lab != null ? onHost(lab.host(i), spec) : AgentProcess.start(spec)
    a = await start(0, { name: 'origin-a', cluster: 'origin' })
    // C sees neither A's data dir (where the converted model and its tokenizer bundle are) nor the GGUF's folder
    c = await start(1, { name: 'host-c', cluster: 'host', bootstrap: [a.addr], hide: [a.dir, dirname(weights.path)] })
    await until(async () => (await a.peers()).length === 2 && (await c.peers()).length === 2, 'the mesh to form')
  })
  after(async () => {
    await stopAll([a, c])
    lab?.destroy()
  })

  test(`SmolLM2 added on A (model add) is fetched from A by C and served there${noLab == null ? ', A and C on separate network hosts' : `, on loopback (separate network hosts skipped: ${noLab})`}`, async (t) => {
    const added = await a.api('/api/models', { method: 'POST', body: { source: weights.path, name: 'smollm2' } })
    assert.equal(added.status, 201, JSON.stringify(added.body))
    component = added.body.component
    const modelMd5: string = component.spec.model.md5
    const bundleMd5: string = component.spec.tokenizer.md5
    assert.equal(component.spec.tokenizer.type, 'bundle')
    // both files are in A's store, pinned (added there)
    const own = await entry(a, modelMd5)
    assert.equal(own?.state, 'complete')
    assert.equal(own.pinned, true)
    assert.ok((await entry(a, bundleMd5))?.pinned)

    const block = await a.api('/api/blocks', { method: 'POST', body: { id: 'smollm2-far', component: component.uri, policy: { cluster: { names: ['host'] } } } })
    assert.equal(block.status, 201, JSON.stringify(block.body))
    const ready = await until(async () => {
      const v = (await a.api('/api/blocks/smollm2-far')).body
      if (v.status === 'failed') throw new Error(`the block failed: ${JSON.stringify(v.instances)}`)
      return v.status === 'ready' ? v : undefined
    }, 'the block to be ready on C', 180_000, 250)
    assert.deepEqual(ready.instances.map((i: any) => i.peerId), [c.peerId])

    const r = await a.api('/v1/chat/completions', { method: 'POST', body: { model: 'smollm2-far', messages: [{ role: 'user', content: 'Which city is the capital of France?' }], max_tokens: 24, temperature: 0 } })
    assert.equal(r.status, 200, JSON.stringify(r.body))
    assert.match(r.body.choices[0].message.content, /Paris/)

    // C's copy: the component's MD5, and the SHA-256 A's store reports (hashed here from the bytes on C's disk)
    const theirs = await entry(c, modelMd5)
    assert.equal(theirs?.state, 'complete', JSON.stringify(theirs))
    assert.equal(theirs.pinned, false, 'fetched, not added: evictable once unused')
    assert.ok(theirs.inUse >= 1, 'in use by the block')
    assert.ok(theirs.path.startsWith(c.dir), theirs.path)
    assert.deepEqual(await digests(theirs.path), { md5: modelMd5, sha256: own.sha256 })
    assert.equal((await entry(c, bundleMd5))?.sha256, (await entry(a, bundleMd5)).sha256)
    // every byte came from the mesh: nothing from an origin
    assert.ok(await received(c, 'mesh') >= own.size, `C received ${await received(c, 'mesh')} bytes from peers`)
    assert.equal(await received(c, 'origin'), 0)
    t.diagnostic(`model file ${own.size as number} bytes in ${own.chunks as number} chunks; C received ${await received(c, 'mesh')} bytes from peers`)

    // A's model list names C among the holders of the model file
    await until(async () => {
      const m = (await a.api('/api/models')).body.models.find((x: any) => x.uri === component.uri)
      const file = m?.files.find((f: any) => f.role === 'model')
      assert.equal(file?.md5, modelMd5)
      return file.holders.some((h: any) => h.peerId === c.peerId && h.state === 'complete') && file.holders.some((h: any) => h.peerId === a.peerId)
    }, 'A to list C among the holders', 30_000, 200)
  })

  // the test above runs on NetLab hosts whenever NetLab is available; where it is not, it ran on loopback and this variant is skipped
})

// ---------------------------------------------------------------- 2–4. one multi-chunk file among four agents

describe(skipNamed('one multi-chunk file among four upload-capped agents: trading, a holder killed, a forging peer', noHide), { skip: noHide }, () => {
  const dir = tempDir('bm-content-mesh-')
  // 11 chunks of 1 MiB (the default chunk size), the last one shorter
  let m: GeneratedModel
  let a: AgentProcess, b: AgentProcess, c: AgentProcess, d: AgentProcess
  let sha256 = ''
  let size = 0
  let rogue: ChildProcess | undefined
  const rogueEvents: any[] = []
  const rate = ['--content-upload-rate', '2MiB']

  before(async () => {
    m = generateModel({ layers: 3, hidden: 256, heads: 8, vocab: PRESETS.tiny.vocab, maxPositions: 1024, seed: 21 }, join(dir, 'mid.onnx'))
    a = await AgentProcess.start({ name: 'a', extra: rate })
    ;[b, c, d] = await Promise.all(['b', 'c', 'd'].map(name => AgentProcess.start({ name, bootstrap: [a.addr], extra: rate, hide: [dir, a.dir] })))
    await until(async () => (await Promise.all([a, b, c, d].map(async x => (await x.peers()).length))).every(n => n === 4), 'the mesh of four to form')
    const created = await a.api('/api/components', { method: 'POST', body: componentSpec(m, 'mid') })
    assert.equal(created.status, 201, JSON.stringify(created.body))
    const held = await entry(a, m.md5)
    assert.equal(held?.state, 'complete')
    assert.ok(held.chunks >= 8, `${held.chunks as number} chunks`)
    sha256 = held.sha256
    size = held.size
    for (const x of [b, c, d]) await untilSeesHeld(x, a.peerId, m.md5)
  })
  after(async () => {
    if (rogue != null && rogue.exitCode == null && rogue.signalCode == null) rogue.kill('SIGKILL')
    await stopAll([a, b, c, d])
  })

  test('three hosts fetch the same file at once: each gets chunks from another fetcher, all end with the same digests', async (t) => {
    const answers = await Promise.all([b, c, d].map(x => pull(x, { md5: m.md5 })))
    const name = (id: string): string => [a, b, c, d].find(y => y.peerId === id)?.spec.name ?? id
    for (const [i, x] of [b, c, d].entries()) {
      const { file, bySource } = answers[i][0]
      t.diagnostic(`${x.spec.name} got ${Object.entries(bySource).map(([src, n]) => `${n} bytes from ${name(src)}`).join(', ')}`)
      assert.equal(file.md5, m.md5)
      assert.equal(file.sha256, sha256)
      assert.equal(file.state, 'complete')
      assert.equal(Object.values(bySource).reduce((s, n) => s + n, 0), size, `${x.spec.name}: ${JSON.stringify(bySource)}`)
      assert.equal(bySource.origin, undefined)
      const fromPeers = Object.entries(bySource).filter(([src, n]) => src !== a.peerId && n > 0)
      assert.ok(fromPeers.length > 0, `${x.spec.name} got bytes from a fetcher other than A: ${JSON.stringify(bySource)}`)
      for (const [src] of fromPeers) assert.ok([b, c, d].some(y => y !== x && y.peerId === src), `${src} is one of the other fetchers`)
      assert.deepEqual(await digests(file.path), { md5: m.md5, sha256 })
    }
  })

  test('kill -9 of a holder mid-transfer: the fetch completes from the other holder, with the right digest', async () => {
    // A and B hold the file (B fetched it first): C and D drop their copies, D fetches again
    for (const x of [c, d]) assert.equal((await x.api(`/api/content/${m.md5}`, { method: 'DELETE' })).status, 200)
    await untilSeesHeld(d, c.peerId, m.md5, false)
    assert.equal(await entry(d, m.md5), undefined)

    let settled = false
    const fetching = d.api('/api/content/fetch', { method: 'POST', body: { md5: m.md5 } }).finally(() => { settled = true })
    const seen = await until(async () => {
      const t = (await store(d)).transfers.find(x => x.md5 === m.md5)
      return t != null && (t.bySource[a.peerId] ?? 0) > 0 ? t : undefined
    }, 'D to receive bytes from A', 30_000, 20)
    await a.stop('SIGKILL')
    assert.equal(a.child.signalCode, 'SIGKILL')
    assert.ok(seen.receivedBytes < size, `D had ${seen.receivedBytes as number} of ${size} bytes when A was killed`)
    assert.equal(settled, false, 'the fetch was still running when A died')

    const r = await fetching
    assert.equal(r.status, 200, JSON.stringify(r.body))
    const { file, bySource } = r.body.files[0]
    assert.equal(file.sha256, sha256)
    assert.deepEqual(await digests(file.path), { md5: m.md5, sha256 })
    assert.deepEqual(Object.keys(bySource).filter(k => bySource[k] > 0).sort(), [a.peerId, b.peerId].sort(), JSON.stringify(bySource))
    assert.ok(bySource[a.peerId] < size)
    assert.equal(bySource[a.peerId] + bySource[b.peerId], size)
  })

  test('a peer serving chunks with a byte flipped is caught, struck, and replaced by the honest holder', async () => {
    // the victim C fetches with two sources: B (honest) and the rogue (A is dead, D drops its copy)
    assert.equal((await d.api(`/api/content/${m.md5}`, { method: 'DELETE' })).status, 200)
    await untilSeesHeld(c, d.peerId, m.md5, false)
    rogue = spawn(process.execPath, [ROGUE, c.addr, b.addr, m.md5], { stdio: ['ignore', 'pipe', 'inherit'] })
    createInterface({ input: rogue.stdout! }).on('line', line => { try { rogueEvents.push(JSON.parse(line)) } catch {} })
    const ready = await until(() => rogueEvents.find(e => e.event === 'ready'), 'the rogue to start', 30_000)
    const rogueId: string = ready.peerId
    await untilSeesHeld(c, rogueId, m.md5)
    const offencesBefore = await c.metric('blockmesh_peer_offences_total', { offence: 'forged' })

    const [{ file, bySource }] = await pull(c, { md5: m.md5 })
    assert.equal(file.sha256, sha256)
    assert.deepEqual(await digests(file.path), { md5: m.md5, sha256 })
    assert.equal(bySource[b.peerId], size, `every byte from the honest holder: ${JSON.stringify(bySource)}`)
    assert.equal(bySource[rogueId] ?? 0, 0)
    // the rogue reports on its stdout once a forged chunk is written, apart from the chunks: wait for the line
    await until(() => rogueEvents.some(e => e.event === 'served' && e.op === 'chunk'), 'the rogue to report that it served forged chunks', 10_000)

    // penalised on the one peer score: a forged chunk weighs 12 (banned at 25)
    // a forged chunk written after the honest holder completed the file is checked when it lands: wait for it
    await until(async () => { const p = (await c.api(`/api/peers/${rogueId}`)).body; return p.score >= 11 ? p : undefined }, 'the rogue to be struck on C', 10_000)
    assert.ok(await c.metric('blockmesh_peer_offences_total', { offence: 'forged' }) > offencesBefore)
    // the victim's log names the refused chunk and the rogue
    const refused = c.log().split('\n').flatMap(line => { try { return [JSON.parse(line)] } catch { return [] } })
      .filter(l => l.msg === 'content source misbehaved' && l.peer === rogueId)
    assert.equal(refused.length, 1, 'struck once for the transfer')
    assert.equal(refused[0].offence, 'forged')
    assert.match(refused[0].reason, new RegExp(`^chunk \\d+ of ${m.md5} does not match its manifest$`))
    // the honest holder is not blamed
    assert.equal((await c.api(`/api/peers/${b.peerId}`)).body.score, 0)
  })
})

// ---------------------------------------------------------------- 5. stage hosts fetch only their stage

describe(skipNamed('a split: each stage host fetches only its own stage file', noHide), { skip: noHide }, () => {
  const dir = tempDir('bm-content-split-')
  let m: GeneratedModel
  let a: AgentProcess, b: AgentProcess, c: AgentProcess
  const vdag = 'tinysplit-pipeline'

  before(async () => {
    m = generateModel({ ...PRESETS.tiny, maxPositions: 1024, seed: 41 }, join(dir, 'tiny-split.onnx'))
    a = await AgentProcess.start({ name: 'split-a', cluster: 'origin' })
    ;[b, c] = await Promise.all(['split-b', 'split-c'].map(name => AgentProcess.start({ name, cluster: 'stage', bootstrap: [a.addr], hide: [dir, a.dir] })))
    await until(async () => (await a.peers()).length === 3 && (await b.peers()).length === 3 && (await c.peers()).length === 3, 'the mesh to form')
    const whole = await deploy(a, componentSpec(m, 'tiny-whole'), { id: 'whole', component: `tiny-whole:${m.md5.slice(0, 8)}`, policy: { cluster: { names: ['origin'] } } })
    assert.equal(whole.status, 'ready', JSON.stringify(whole))
    await splitAndDeploy(a, { modelName: 'tinysplit', modelPath: m.path, worldSize: 2, config: { block: { policy: { cluster: { names: ['stage'] } } } } })
    await until(async () => (await complete(a, vdag, 'x', 1)).status === 200, 'the vDAG to serve', 90_000, 250)
  })
  after(async () => { await stopAll([a, b, c]) })

  test('B and C each hold exactly their stage file, received from the mesh, smaller than the model; the vDAG answers like the whole model', async () => {
    const stages: string[] = (await a.api(`/api/vdags/${vdag}`)).body.stages
    assert.equal(stages.length, 2)
    const hostsSeen = new Set<string>()
    let stageBytes = 0
    for (const s of stages) {
      const blk = (await a.api(`/api/blocks/${s}`)).body
      assert.equal(blk.status, 'ready')
      const host = [b, c].find(x => x.peerId === blk.instances[0]?.peerId)
      assert.ok(host != null, `stage ${s} runs on B or C: ${JSON.stringify(blk.instances)}`)
      hostsSeen.add(host.peerId)
      const spec = (await a.api(`/api/components/${encodeURIComponent(blk.component)}`)).body.spec
      const md5: string = spec.model.md5
      const origin = await entry(a, md5)
      assert.equal(origin?.pinned, true, 'the stage file was shared by the agent that split')
      const held = (await store(host)).files
      assert.deepEqual(held.map(f => f.md5), [md5], `${host.spec.name} holds exactly its stage file`)
      assert.equal(held[0].state, 'complete')
      assert.equal(held[0].sha256, origin.sha256)
      assert.deepEqual(await digests(held[0].path), { md5, sha256: origin.sha256 })
      // the bytes it received: its stage file's size, no more, and less than the whole model
      assert.equal(await received(host, 'mesh'), origin.size, `${host.spec.name} received its stage file's bytes`)
      assert.equal(await received(host, 'origin'), 0)
      assert.ok(origin.size < m.sizeBytes, `stage ${origin.size as number} bytes < whole ${m.sizeBytes} bytes`)
      stageBytes += origin.size
    }
    assert.equal(hostsSeen.size, 2, 'one stage per host')
    assert.ok(await a.metric('blockmesh_content_served_bytes_total') >= stageBytes)

    for (const prompt of ['The harbour', 'Once upon a time']) {
      const whole = await complete(a, 'whole', prompt)
      const split = await complete(a, vdag, prompt)
      assert.equal(whole.status, 200, JSON.stringify(whole.body))
      assert.equal(split.status, 200, JSON.stringify(split.body))
      assert.ok(whole.text.length > 0)
      assert.equal(split.text, whole.text)
    }
  })
})

// ---------------------------------------------------------------- 6. the cap and eviction

describe(skipNamed('a capped content store: eviction never removes a file in use, the least recently used goes first', noHide), { skip: noHide }, () => {
  const dir = tempDir('bm-content-cap-')
  let x: GeneratedModel
  let blobs: Array<{ name: string, path: string, md5: string }>
  let cap = 0
  let a: AgentProcess, g: AgentProcess

  before(async () => {
    x = generateModel({ ...PRESETS.tiny, maxPositions: 1024, seed: 51 }, join(dir, 'x.onnx'))
    // three more files of X's size (blobs registered as components; no block loads them)
    blobs = ['y', 'z', 'w'].map(name => {
      const path = join(dir, `${name}.bin`)
      const bytes = randomBytes(x.sizeBytes)
      writeFileSync(path, bytes)
      return { name, path, md5: createHash('md5').update(bytes).digest('hex') }
    })
    // X in use and two more files fit; a fourth does not
    cap = Math.floor(3.5 * x.sizeBytes)
    a = await AgentProcess.start({ name: 'cap-a', cluster: 'origin' })
    g = await AgentProcess.start({ name: 'cap-g', cluster: 'capped', bootstrap: [a.addr], extra: ['--content-cap', `${cap}B`], hide: [dir, a.dir] })
    await until(async () => (await a.peers()).length === 2 && (await g.peers()).length === 2, 'the mesh to form')
    for (const blob of blobs) {
      const r = await a.api('/api/components', { method: 'POST', body: { name: `blob-${blob.name}`, version: '1', runtime: 'onnx', model: { url: blob.path, md5: blob.md5 }, contextLength: 256 } })
      assert.equal(r.status, 201, JSON.stringify(r.body))
    }
    for (const blob of blobs) await untilSeesHeld(g, a.peerId, blob.md5)
  })
  after(async () => { await stopAll([a, g]) })

  test('X runs a block; Y, Z, W pulled: Y (least recently used, unused) is evicted, X stays, usage within the cap; X cannot be removed while in use', async () => {
    const blk = await deploy(a, componentSpec(x, 'x-model'), { id: 'x-block', component: `x-model:${x.md5.slice(0, 8)}`, policy: { cluster: { names: ['capped'] } } })
    assert.equal(blk.status, 'ready', JSON.stringify(blk))
    assert.deepEqual(blk.instances.map((i: any) => i.peerId), [g.peerId])
    const xs = await entry(g, x.md5)
    assert.equal(xs?.pinned, false, 'fetched from A, unpinned')
    assert.equal(await received(g, 'mesh'), x.sizeBytes, 'X came over the mesh')
    assert.ok(xs.inUse >= 1)
    assert.equal((await store(g)).usage.capBytes, cap)

    const removed = await g.api(`/api/content/${x.md5}`, { method: 'DELETE' })
    assert.equal(removed.status, 409, JSON.stringify(removed.body))

    const [y, z, w] = blobs
    for (const blob of [y, z]) assert.equal((await pull(g, { md5: blob.md5 }))[0].file.md5, blob.md5)
    assert.deepEqual(new Set((await store(g)).files.map(f => f.md5)), new Set([x.md5, y.md5, z.md5]), 'three files fit under the cap')
    // W does not fit: the least recently used file that is neither pinned nor in use goes (Y; X is older but in use)
    assert.equal((await pull(g, { md5: w.md5 }))[0].file.md5, w.md5)
    const after = await store(g)
    assert.deepEqual(new Set(after.files.map(f => f.md5)), new Set([x.md5, z.md5, w.md5]), JSON.stringify(after.files.map(f => [f.md5, f.lastUsed, f.inUse])))
    assert.ok(after.usage.bytes <= cap, `${after.usage.bytes} of ${cap} bytes`)
    assert.ok(after.files.find(f => f.md5 === x.md5).inUse >= 1)
    assert.ok(/content store: file evicted/.test(g.log()) && g.log().includes(y.md5), 'the eviction of Y is logged')
    // the block still serves from X
    assert.equal((await complete(a, 'x-block', 'The harbour', 4)).status, 200)

    // once the block is gone, X is no longer in use and can be removed
    assert.equal((await a.api('/api/blocks/x-block', { method: 'DELETE' })).status, 200)
    await until(async () => (await entry(g, x.md5))?.inUse === 0, 'X to be released on G')
    assert.equal((await g.api(`/api/content/${x.md5}`, { method: 'DELETE' })).status, 200)
  })
})

// ---------------------------------------------------------------- 7. only mesh members fetch

describe('only mesh members can open the content protocol', () => {
  const dir = tempDir('bm-content-key-')
  let k: AgentProcess
  const nodes: MeshNode[] = []

  after(async () => {
    await Promise.all(nodes.map(async n => { await n.stop().catch(() => {}) }))
    await stopAll([k])
  })

  test('a node with another swarm key, or with the key but not on the allow-list, cannot fetch; a listed one with the key can', async () => {
    const m = generateModel({ ...PRESETS.tiny, seed: 61 }, join(dir, 'k.onnx'))
    writeNewSwarmKey(join(dir, 'k1'))
    writeNewSwarmKey(join(dir, 'k2'))
    const friendKey = await generateKeyPair('Ed25519')
    const friend = await MeshNode.create({ privateKey: friendKey, listen: ['/ip4/127.0.0.1/tcp/0'], swarmKey: readSwarmKeyFile(join(dir, 'k1')) })
    nodes.push(friend)
    k = await AgentProcess.start({ name: 'keyed', swarmKey: join(dir, 'k1'), allow: [friend.peerId.toString()] })
    assert.equal((await k.api('/api/components', { method: 'POST', body: componentSpec(m, 'keyed') })).status, 201)
    assert.equal((await entry(k, m.md5))?.state, 'complete')
    const stranger = await MeshNode.create({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], swarmKey: readSwarmKeyFile(join(dir, 'k1')) })
    const outsider = await MeshNode.create({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], swarmKey: readSwarmKeyFile(join(dir, 'k2')) })
    nodes.push(stranger, outsider)
    await Promise.all(nodes.map(async n => { await n.start() }))
    const to = (n: MeshNode): ContentDialer => ({ dialProtocol: async (_peer, protocol, opts) => await n.libp2p.dialProtocol(multiaddr(k.addr), protocol, opts) })

    const bytes = await requestManifest(to(friend), k.peerId, m.md5, { timeoutMs: 15_000 })
    assert.equal((await openManifest(bytes, m.md5)).manifest.adder, k.peerId)
    for (const [who, n] of [['another swarm key', outsider], ['not on the allow-list', stranger]] as const) {
      await assert.rejects(requestManifest(to(n), k.peerId, m.md5, { timeoutMs: 10_000 }), (err: Error) => {
        assert.equal(err.name, 'ContentUnreachableError', `${who}: ${err.name}: ${err.message}`)
        return true
      }, who)
    }
    assert.equal(CONTENT_PROTOCOL, '/blockmesh/content/1.0.0')
  })
})
