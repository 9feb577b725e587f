/**
 * Resilience (issue 13), with real agent processes at heartbeat 1000 ms:
 *  - kill -9 of the agent that created and hosts a block (3 agents): time from the kill until every other
 *    agent serves the block's name again (a completion answered 200), until another agent reconciles it,
 *    and until a replacement instance is ready;
 *  - request migration: a long greedy streamed completion through agent B from a block with instances on
 *    C and D; the serving host is killed mid-stream; the stall the client sees, tokens replayed ÷ stall,
 *    and the extra time the whole request took;
 *  - desired-state convergence: one write on one of N agents until every agent's /api/state digest equals
 *    the writer's; the same after a partition (agents on separate network hosts, writes on both sides) heals;
 *  - replication at rest: the bytes the desired state adds to each capacity record, and the state messages
 *    (changes applied, state-sync requests) over 10 heartbeats with nothing written.
 * Performance is measured, not asserted.
 */
import { readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { AgentProcess, stopAll, tempDir, until } from '../test/helpers/agents.ts'
import { componentSpec, deploy } from '../test/helpers/models.ts'
import { NetLab } from '../test/helpers/netns.ts'
import { generateModel } from '../agent/model/generate.ts'
import { ensureGeneratedModel } from '../agent/model/cache.ts'
import { PRESETS } from '../agent/model/spec.ts'
import { CapacityRecordSchema, encodeCapacityRecord } from '../mesh/capacity/record.ts'
import { STATE_SYNC_PROTOCOL } from '../agent/state/sync.ts'
import { median } from './stats.ts'

const HB = 1000
/** more than the 15 s a serving agent skips a peer whose instance it lost (agent/serving/instances.ts) */
const LOST_PEER_WAIT_MS = 16_000
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
const now = (): number => performance.now()

export interface KillTrial {
  /** ms from the kill until every survivor lists the killed agent as not live */
  expiredMs: number
  /** until a completion for the block's name, asked of each survivor after the kill, was answered 200 by both */
  servedMs: number
  /** until one survivor reconciles the block (the first view that names a reconciler other than the dead agent) */
  reconciledMs: number
  /** until both survivors' views name that reconciler */
  reconciledAllMs: number
  /** until a survivor's view shows a ready instance on another agent */
  readyMs: number
  termBefore: number
  termAfter: number
  /** HTTP statuses of the completions asked of the survivors while recovering */
  statuses: Record<string, number>
}

export interface MigrationTrial {
  /** content chunks read before the kill */
  killAfterChunks: number
  /** tokens replayed on the new instance: prompt + tokens generated before the loss (from the serving agent's log) */
  replayed: number
  /** the longest pause between two chunks from the kill on (ms) */
  stallMs: number
  /** the whole request, end to end (ms) */
  totalMs: number
  sameText: boolean
}
export type MigrationResult = { skipped: string } | {
  model: string
  promptTokens: number
  maxTokens: number
  referenceMs: number
  /** median pause between chunks without a failure */
  chunkMs: number
  trials: MigrationTrial[]
}

export interface ConvergenceSize {
  agents: number
  formationMs: number
  /** ms from sending the write until every agent's digest equals the writer's (the last agent) */
  trials: number[]
  /** the same for the median agent (each agent polled on its own) */
  medianAgent: number[]
  /** 1-minute load average when the writes started */
  load1: number
  /** changes applied, summed over the agents, by how they came */
  via: { gossip: number, sync: number }
  rest: RestCount
}
export interface RestCount {
  heartbeats: number
  /** capacity records published, summed over the agents, during the window */
  records: number
  /** desired-state changes applied (any way: local, gossip, sync), summed over agents */
  stateChanges: number
  /** inbound /blockmesh/state-sync streams, summed over agents (counted from libp2p's multistream-select trace) */
  syncRequests: number
  /** every other inbound stream negotiated in the window, by protocol (for context) */
  otherStreams: Record<string, number>
  /** user + system CPU of one agent over the window, % of one core (mean over agents) */
  cpuPercent: number
}
export interface PartitionTrial {
  /** ms from the cut until both sides saw it (agent 0 alone, 1 and 2 together) */
  seenMs: number
  /** ms from the heal until every agent lists every other as live */
  liveMs: number
  /** ms from the heal until the three digests are equal (with both sides' writes) */
  convergedMs: number
  complete: boolean
}
export type PartitionResult = { skipped: string } | { trials: PartitionTrial[] }

export interface RecordBytes {
  label: string
  /** signed capacity record as published (envelope bytes) */
  withState: number
  /** the same record without `state` and `reconciles` */
  without: number
  /** `"state":"…",` and `"reconciles":[…],` in the JSON */
  stateField: number
  reconcilesField: number
  reconciles: number
}

export interface ResilienceResult {
  heartbeatMs: number
  kill: KillTrial[]
  migration: MigrationResult
  convergence: ConvergenceSize[]
  partition: PartitionResult
  records: RecordBytes[]
  /** load average (1/5/15 min) at the start and at the end */
  load: { start: number[], end: number[] }
}

export interface ResilienceOptions { quick: boolean, sizes: number[], log: (s: string) => void }

// ---------------------------------------------------------------- helpers

async function formMesh (n: number, prefix: string, extra: Partial<Parameters<typeof AgentProcess.start>[0]> = {}): Promise<{ agents: AgentProcess[], formationMs: number }> {
  const agents: AgentProcess[] = []
  try {
    const first = await AgentProcess.start({ name: `${prefix}-0`, heartbeatMs: HB, ...extra })
    agents.push(first)
    // a few at a time: 2 cores cannot boot 20 Node processes at once quickly (as the gossip bench)
    for (let i = 1; i < n; i += 4) {
      const batch = []
      for (let j = i; j < Math.min(n, i + 4); j++) batch.push(AgentProcess.start({ name: `${prefix}-${j}`, heartbeatMs: HB, bootstrap: [first.addr], ...extra }))
      agents.push(...await Promise.all(batch))
    }
    const t0 = now()
    await until(async () => (await Promise.all(agents.map(async a => (await a.peers()).length))).every(c => c === n), `all ${n} agents to see each other`, 180_000, 250)
    return { agents, formationMs: Math.round(now() - t0) }
  } catch (err) {
    await stopAll(agents)
    throw err
  }
}

async function digests (agents: AgentProcess[]): Promise<string[]> {
  return await Promise.all(agents.map(async a => (await a.api('/api/state')).body.digest as string))
}

const externalComponent = (name: string): Record<string, unknown> => ({ name, version: '1', runtime: 'external', external: { url: 'http://127.0.0.1:9/v1', model: name } })

/** Inbound streams negotiated in [from, to] (ISO strings compare as times), by protocol, from a log written with DEBUG=*:mss:handle:trace. */
function inboundStreams (agent: AgentProcess, from: string, to: string): Record<string, number> {
  const out: Record<string, number> = {}
  for (const line of agent.log().split('\n')) {
    const m = /^(\S+) \S*:mss:handle:trace responded with "([^"]+)" for "([^"]+)"$/.exec(line)
    if (m == null || m[1] < from || m[1] > to || m[2] === '/multistream/1.0.0') continue
    out[m[2]] = (out[m[2]] ?? 0) + 1
  }
  return out
}

/** The capacity record an agent publishes, sealed with a fresh key as the agent seals it, with and without the desired-state fields. */
async function recordBytes (agent: AgentProcess, label: string): Promise<RecordBytes> {
  const node = (await agent.api('/api/node')).body
  const record = CapacityRecordSchema.parse({ ...node, v: 1, ts: Date.now() })
  const key = await generateKeyPair('Ed25519')
  const { state, reconciles, ...rest } = record
  const withState = (await encodeCapacityRecord(record, key)).length
  const without = (await encodeCapacityRecord(rest, key)).length
  return {
    label,
    withState,
    without,
    stateField: state != null ? JSON.stringify({ state }).length - 1 : 0,
    reconcilesField: reconciles != null ? JSON.stringify({ reconciles }).length - 1 : 0,
    reconciles: reconciles?.length ?? 0
  }
}

async function metricSum (agents: AgentProcess[], name: string, labels: Record<string, string> = {}): Promise<number> {
  return (await Promise.all(agents.map(async a => await a.metric(name, labels)))).reduce((s, v) => s + v, 0)
}

// ---------------------------------------------------------------- convergence and at rest

/** CPU seconds (user + system) each process has used, from /proc (as the gossip bench). */
function cpuSeconds (pids: number[]): number[] {
  return pids.map(pid => {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
    return (Number(f[11]) + Number(f[12])) / 100
  })
}

async function restWindow (agents: AgentProcess[], heartbeats: number): Promise<RestCount> {
  const changes0 = await metricSum(agents, 'blockmesh_state_changes_total')
  const records0 = await metricSum(agents, 'blockmesh_gossip_messages_total', { direction: 'out' })
  const pids = agents.map(a => a.child.pid as number)
  const from = new Date().toISOString()
  const cpu0 = cpuSeconds(pids)
  await sleep(heartbeats * HB)
  const cpu1 = cpuSeconds(pids)
  const to = new Date().toISOString()
  const cpuPercent = cpu1.reduce((sum, v, i) => sum + v - cpu0[i], 0) / agents.length / (heartbeats * HB / 1000) * 100
  const changes1 = await metricSum(agents, 'blockmesh_state_changes_total')
  const records1 = await metricSum(agents, 'blockmesh_gossip_messages_total', { direction: 'out' })
  await sleep(200) // let the trace lines of the window reach the logs
  const streams: Record<string, number> = {}
  for (const a of agents) for (const [p, c] of Object.entries(inboundStreams(a, from, to))) streams[p] = (streams[p] ?? 0) + c
  const { [STATE_SYNC_PROTOCOL]: sync = 0, ...otherStreams } = streams
  return { heartbeats, records: records1 - records0, stateChanges: changes1 - changes0, syncRequests: sync, otherStreams, cpuPercent }
}

async function runConvergence (n: number, trials: number, log: (s: string) => void): Promise<{ size: ConvergenceSize, record: RecordBytes }> {
  // libp2p's multistream-select trace in each agent's log: one line per inbound stream, with its protocol
  const prevDebug = process.env.DEBUG
  process.env.DEBUG = '*:mss:handle:trace'
  let mesh: Awaited<ReturnType<typeof formMesh>>
  try { mesh = await formMesh(n, `conv${n}`) } finally {
    if (prevDebug == null) delete process.env.DEBUG
    else process.env.DEBUG = prevDebug
  }
  const { agents, formationMs } = mesh
  try {
    log(`  ${n} agents: mesh formed (${formationMs} ms after the last start)`)
    await sleep(3000) // let start-up work finish
    const via0 = { gossip: await metricSum(agents, 'blockmesh_state_changes_total', { via: 'gossip' }), sync: await metricSum(agents, 'blockmesh_state_changes_total', { via: 'sync' }) }
    const times: number[] = []
    const medianAgent: number[] = []
    const load1 = os.loadavg()[0]
    for (let t = 0; t < trials; t++) {
      const writer = agents[t % n]
      const t0 = now()
      const r = await writer.api('/api/components', { method: 'POST', body: externalComponent(`conv-${n}-${t}`) })
      if (r.status !== 201) throw new Error(`write on ${writer.spec.name}: ${r.status} ${JSON.stringify(r.body)}`)
      const target = (await writer.api('/api/state')).body.digest as string
      // each agent polled on its own, so one slow agent does not hold back the others' times
      const at = await Promise.all(agents.map(async a => await until(async () => (await a.api('/api/state')).body.digest === target ? now() - t0 : undefined, `${a.spec.name} to converge`, 60_000, 50)))
      const ms = Math.round(Math.max(...at))
      times.push(ms)
      medianAgent.push(Math.round(median(at)))
      log(`  ${n} agents, write ${t + 1} on ${writer.spec.name}: median agent ${Math.round(median(at))} ms, every digest equal after ${ms} ms`)
      await sleep(300)
    }
    const via = {
      gossip: await metricSum(agents, 'blockmesh_state_changes_total', { via: 'gossip' }) - via0.gossip,
      sync: await metricSum(agents, 'blockmesh_state_changes_total', { via: 'sync' }) - via0.sync
    }
    await sleep(2 * HB)
    const rest = await restWindow(agents, 10)
    log(`  ${n} agents at rest over 10 heartbeats: ${rest.records} records published, ${rest.stateChanges} state changes, ${rest.syncRequests} state-sync requests, ${rest.cpuPercent.toFixed(1)}% of a core per agent`)
    return { size: { agents: n, formationMs, trials: times, medianAgent, load1, via, rest }, record: await recordBytes(agents[0], `${n}-agent mesh, reconciling no block`) }
  } finally {
    await stopAll(agents)
  }
}

async function runPartition (trials: number, log: (s: string) => void): Promise<PartitionResult> {
  const why = NetLab.available()
  if (why != null) return { skipped: `no network lab on this machine: ${why}` }
  const lab = NetLab.create(3)
  const agents: AgentProcess[] = []
  try {
    agents.push(await AgentProcess.start({ name: 'part-0', heartbeatMs: HB, netns: lab.host(0).ns, listenIp: lab.host(0).ip }))
    agents.push(...await Promise.all([1, 2].map(async i => await AgentProcess.start({ name: `part-${i}`, heartbeatMs: HB, netns: lab.host(i).ns, listenIp: lab.host(i).ip, bootstrap: [agents[0].addr] }))))
    await until(async () => (await Promise.all(agents.map(async x => (await x.peers()).length))).every(c => c === 3), 'the lab mesh to form', 60_000, 250)
    const [p0, p1, p2] = agents
    const out: PartitionTrial[] = []
    for (let t = 0; t < trials; t++) {
      await p0.api('/api/components', { method: 'POST', body: externalComponent(`before-${t}`) })
      await until(async () => new Set(await digests(agents)).size === 1, 'the mesh to agree before the cut', 30_000, 50)
      const cut = now()
      lab.partition([[0], [1, 2]])
      await until(async () => (await p0.peers()).length === 1 && (await p1.peers()).length === 2 && (await p2.peers()).length === 2, 'the partition to be seen', 60_000, 50)
      const seenMs = Math.round(now() - cut)
      // writes on both sides, each acknowledged by its side; a delete on the right of what the left still has
      const writes = [
        await p0.api('/api/components', { method: 'POST', body: externalComponent(`left-${t}`) }),
        await p1.api('/api/components', { method: 'POST', body: externalComponent(`right-${t}`) }),
        await p2.api(`/api/components/before-${t}:1`, { method: 'DELETE' })
      ]
      if (writes.some(w => w.status !== 201 && w.status !== 200)) throw new Error(`a write during the partition failed: ${writes.map(w => w.status).join(', ')}`)
      await sleep(HB)
      const healed = now()
      lab.heal()
      let liveMs = -1
      let convergedMs = -1
      await until(async () => {
        const [ds, peers] = await Promise.all([digests(agents), Promise.all(agents.map(async x => (await x.peers()).length))])
        if (convergedMs < 0 && new Set(ds).size === 1) convergedMs = Math.round(now() - healed)
        if (liveMs < 0 && peers.every(c => c === 3)) liveMs = Math.round(now() - healed)
        return convergedMs >= 0 && liveMs >= 0
      }, 'the three agents to converge after the heal', 90_000, 50)
      const uris = await Promise.all(agents.map(async x => ((await x.api('/api/components')).body.components as Array<{ uri: string }>).map(c => c.uri)))
      const complete = uris.every(u => u.includes(`left-${t}:1`) && u.includes(`right-${t}:1`) && !u.includes(`before-${t}:1`))
      out.push({ seenMs, liveMs, convergedMs, complete })
      log(`  partition ${t + 1}: seen after ${seenMs} ms; after the heal, all live in ${liveMs} ms, one state in ${convergedMs} ms (${complete ? 'every write kept' : 'WRITES MISSING'})`)
    }
    return { trials: out }
  } finally {
    await stopAll(agents)
    lab.destroy()
  }
}

// ---------------------------------------------------------------- kill -9 of a block's creator and host

async function completionStatus (agent: AgentProcess, model: string): Promise<number> {
  try {
    return (await agent.api('/v1/completions', { method: 'POST', body: { model, prompt: 'x', max_tokens: 1, temperature: 0 } })).status
  } catch { return -1 }
}

async function runKillTrial (modelPath: string, md5: string, log: (s: string) => void, withRecord: boolean): Promise<{ trial: KillTrial, record?: RecordBytes }> {
  const a = await AgentProcess.start({ name: 'kill-a', heartbeatMs: HB })
  const agents: AgentProcess[] = [a]
  try {
    agents.push(...await Promise.all(['kill-b', 'kill-c'].map(async name => await AgentProcess.start({ name, heartbeatMs: HB, bootstrap: [a.addr] }))))
    const [, b, c] = agents
    await until(async () => (await Promise.all(agents.map(async x => (await x.peers()).length))).every(n => n === 3), 'the mesh to form', 60_000, 250)
    const id = 'whole'
    const comp = await a.api('/api/components', { method: 'POST', body: { name: 'tiny2', version: '1', runtime: 'onnx', model: { url: modelPath, md5 }, contextLength: 1024 } })
    if (comp.status !== 201) throw new Error(`component: ${comp.status} ${JSON.stringify(comp.body)}`)
    const created = await a.api('/api/blocks', { method: 'POST', body: { id, component: 'tiny2:1' } })
    if (created.status !== 201) throw new Error(`block: ${created.status} ${JSON.stringify(created.body)}`)
    await until(async () => (await a.api(`/api/blocks/${id}`)).body.instances.some((i: any) => i.status === 'ready' && i.peerId === a.peerId), 'the block to be ready on its creator', 60_000, 100)
    for (const x of [b, c]) await until(async () => await completionStatus(x, id) === 200, `${x.spec.name} to serve ${id}`, 60_000, 100)
    const termBefore = (await b.api(`/api/blocks/${id}`)).body.reconciler?.term as number
    await sleep(2 * HB)
    const record = withRecord ? await recordBytes(a, 'creator of a 3-agent mesh, reconciling 1 block') : undefined

    const survivors = [b, c]
    const at: Record<string, Partial<Record<'expired' | 'served' | 'reconciled' | 'ready', number>>> = { [b.peerId]: {}, [c.peerId]: {} }
    const statuses: Record<string, number> = {}
    let termAfter = 0
    let watching = true
    const kill = now()
    const killed = a.stop('SIGKILL')
    const since = (): number => Math.round(now() - kill)
    const servers = survivors.map(async x => {
      while (watching && at[x.peerId].served == null) {
        const s = await completionStatus(x, id)
        statuses[String(s)] = (statuses[String(s)] ?? 0) + 1
        if (s === 200) at[x.peerId].served = since()
        else await sleep(50)
      }
    })
    const viewers = survivors.map(async x => {
      const m = at[x.peerId]
      while (watching && (m.expired == null || m.reconciled == null || m.ready == null)) {
        try {
          const [peers, view] = await Promise.all([x.peers('all'), x.api(`/api/blocks/${id}`)])
          const t = since()
          if (m.expired == null && !peers.some((p: any) => p.peerId === a.peerId && p.status === 'live')) m.expired = t
          const r = view.body.reconciler
          if (m.reconciled == null && r != null && r.peerId !== a.peerId) { m.reconciled = t; termAfter = Math.max(termAfter, r.term) }
          if (m.ready == null && view.body.instances.some((i: any) => i.status === 'ready' && i.peerId !== a.peerId)) m.ready = t
        } catch { /* the API answered mid-change: poll again */ }
        await sleep(50)
      }
    })
    try {
      await until(() => survivors.every(x => Object.keys(at[x.peerId]).length === 4), 'the survivors to recover the block', 90_000, 50)
    } finally {
      watching = false
      await Promise.all([...servers, ...viewers, killed])
    }
    const all = (k: 'expired' | 'served' | 'reconciled' | 'ready'): number[] => survivors.map(x => at[x.peerId][k] as number)
    const trial: KillTrial = {
      expiredMs: Math.max(...all('expired')),
      servedMs: Math.max(...all('served')),
      reconciledMs: Math.min(...all('reconciled')),
      reconciledAllMs: Math.max(...all('reconciled')),
      readyMs: Math.min(...all('ready')),
      termBefore,
      termAfter,
      statuses
    }
    log(`  kill -9 of the creator: expired everywhere ${trial.expiredMs} ms, reconciled by another ${trial.reconciledMs} ms (both views ${trial.reconciledAllMs} ms), replacement ready ${trial.readyMs} ms, served again everywhere ${trial.servedMs} ms; term ${termBefore} → ${termAfter}; statuses ${JSON.stringify(statuses)}`)
    return { trial, record }
  } finally {
    await stopAll(agents)
  }
}

// ---------------------------------------------------------------- request migration

interface Streamed { status: number, text: string, chunks: number[], totalMs: number, servedBy: string | null, usage: any, error: any }

/** A streamed chat completion; after `killAfter` content chunks, `onKill` is called (once) with the serving host. */
async function streamChat (via: AgentProcess, body: Record<string, unknown>, killAfter?: number, onKill?: (servedBy: string) => Promise<void>): Promise<Streamed & { killAt: number }> {
  const t0 = now()
  const res = await fetch(`${via.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${via.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } })
  })
  const out = { status: res.status, text: '', chunks: [] as number[], totalMs: 0, servedBy: res.headers.get('x-blockmesh-served-by'), usage: null as any, error: null as any, killAt: -1 }
  if (res.status !== 200 || res.body == null) { out.error = await res.text(); return out }
  const dec = new TextDecoder()
  let buf = ''
  let pending: Promise<void> | null = null
  for await (const part of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += dec.decode(part, { stream: true })
    let i
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const event = buf.slice(0, i)
      buf = buf.slice(i + 2)
      for (const line of event.split('\n')) {
        if (!line.startsWith('data: ') || line === 'data: [DONE]') continue
        const e = JSON.parse(line.slice(6))
        if (e.error != null) out.error = e.error
        if (e.usage != null) out.usage = e.usage
        const d = e.choices?.[0]?.delta?.content ?? ''
        if (d === '') continue
        out.text += d
        out.chunks.push(now())
        if (out.chunks.length === killAfter && onKill != null) {
          out.killAt = now()
          pending = onKill(out.servedBy as string) // read on while the host dies
        }
      }
    }
  }
  await pending
  out.totalMs = now() - t0
  return out
}

/** `generated` of the serving agent's log lines saying a request was resumed on another instance. */
function resumedCounts (agent: AgentProcess): number[] {
  const out: number[] = []
  for (const line of agent.log().split('\n')) {
    if (!line.includes('request resumed on another instance')) continue
    try { out.push(JSON.parse(line).generated as number) } catch { /* not a JSON log line */ }
  }
  return out
}

async function runMigration (quick: boolean, log: (s: string) => void): Promise<MigrationResult> {
  if (!readFileSync(new URL('../agent/serving/migrate.ts', import.meta.url), 'utf8').includes('class MigratingSource')) {
    return { skipped: 'request migration is not in this checkout (agent/serving/migrate.ts)' }
  }
  const m = await ensureGeneratedModel({ ...PRESETS.demo, seed: 1 }, '.blockmesh/bench-models', 'demo-gpt', log)
  const b = await AgentProcess.start({ name: 'mig-b', cluster: 'front', heartbeatMs: HB })
  const agents: AgentProcess[] = [b]
  try {
    agents.push(...await Promise.all(['mig-c', 'mig-d'].map(async name => await AgentProcess.start({ name, cluster: 'back', heartbeatMs: HB, bootstrap: [b.addr] }))))
    const hosts = agents.slice(1)
    await until(async () => (await Promise.all(agents.map(async x => (await x.peers()).length))).every(n => n === 3), 'the mesh to form', 60_000, 250)
    const model = 'mig'
    const block = await deploy(b, componentSpec(m, 'demo-gpt'), { id: model, component: `demo-gpt:${m.md5.slice(0, 8)}`, minInstances: 2, maxInstances: 2, policy: { cluster: { names: ['back'] } } })
    if (block.status !== 'ready') throw new Error(`block: ${String(block.error)}`)
    const twoReady = async (): Promise<void> => {
      await until(async () => {
        const inst = (await b.api(`/api/blocks/${model}`)).body.instances.filter((i: any) => i.status === 'ready')
        return inst.length === 2 && hosts.every(h => inst.some((i: any) => i.peerId === h.peerId))
      }, 'an instance ready on each host', 120_000, 100)
    }
    await twoReady()
    const maxTokens = 900
    const ask = { model, messages: [{ role: 'user', content: 'Tell me about the harbour.' }], temperature: 0, max_tokens: maxTokens }
    const refs: Streamed[] = []
    for (let i = 0; i < 3; i++) refs.push(await streamChat(b, ask))
    const ref = refs[refs.length - 1]
    if (ref.status !== 200 || ref.error != null) throw new Error(`reference run: ${ref.status} ${JSON.stringify(ref.error)}`)
    const referenceMs = median(refs.slice(1).map(r => r.totalMs))
    const gaps = ref.chunks.slice(1).map((t, i) => t - ref.chunks[i])
    const chunkMs = median(gaps)
    log(`  reference: ${ref.chunks.length} chunks, ${ref.usage?.completion_tokens as number} tokens in ${Math.round(referenceMs)} ms (median chunk gap ${chunkMs.toFixed(2)} ms)`)

    const points = quick ? [0.1, 0.6] : [0.05, 0.35, 0.65]
    const trials: MigrationTrial[] = []
    for (const p of points) {
      const killAfter = Math.max(5, Math.floor(ref.chunks.length * p))
      const before = resumedCounts(b).length
      const killed: { victim?: AgentProcess } = {}
      const got = await streamChat(b, ask, killAfter, async (servedBy) => {
        const victim = hosts.find(h => h.peerId === servedBy)
        if (victim == null) throw new Error(`served by ${servedBy}, not a host`)
        killed.victim = victim
        await victim.stop('SIGKILL')
      })
      const victim = killed.victim
      if (victim == null) throw new Error('the kill did not land mid-stream')
      await sleep(300)
      const resumed = resumedCounts(b).slice(before)
      const k = Math.max(1, got.chunks.findIndex(t => t >= got.killAt))
      const stallMs = got.chunks.findIndex(t => t >= got.killAt) < 0 ? NaN : Math.max(...got.chunks.slice(k).map((t, i) => t - got.chunks[k + i - 1]))
      const trial: MigrationTrial = {
        killAfterChunks: killAfter,
        replayed: resumed.length === 1 ? (got.usage?.prompt_tokens as number) + resumed[0] : NaN,
        stallMs,
        totalMs: got.totalMs,
        sameText: got.error == null && got.text === ref.text
      }
      trials.push(trial)
      log(`  killed the host after ${killAfter} chunks: stall ${stallMs.toFixed(0)} ms, ${trial.replayed} tokens replayed, request ${Math.round(got.totalMs)} ms (${trial.sameText ? 'same text' : `DIFFERENT: ${JSON.stringify(got.error)}`})`)
      await victim.launch()
      await twoReady()
      // the serving agent skips a peer that lost an instance for 15 s (LOST_PEER_MS in agent/serving/instances.ts):
      // space the repetitions so the next migration does not wait that window out on the restarted host
      await sleep(Math.max(0, got.killAt + LOST_PEER_WAIT_MS - now()))
    }
    return { model: `demo (${(m.sizeBytes / 2 ** 20).toFixed(0)} MiB, generated, CPU)`, promptTokens: ref.usage?.prompt_tokens as number, maxTokens, referenceMs, chunkMs, trials }
  } finally {
    await stopAll(agents)
  }
}

// ---------------------------------------------------------------- all of it

export async function runResilienceBench (opts: ResilienceOptions): Promise<ResilienceResult> {
  const { log, quick } = opts
  const loadStart = os.loadavg()
  const records: RecordBytes[] = []
  const convergence: ConvergenceSize[] = []
  for (const n of opts.sizes) {
    log(`resilience: desired-state convergence, ${n} agents`)
    const r = await runConvergence(n, quick ? 3 : 5, log)
    convergence.push(r.size)
    if (records.length === 0 || n === Math.max(...opts.sizes)) records.push(r.record)
  }
  log('resilience: partition with writes on both sides, then heal (3 agents on separate network hosts)')
  const partition = await runPartition(quick ? 2 : 3, log)
  if ('skipped' in partition) log(`  skipped: ${partition.skipped}`)

  log('resilience: kill -9 of the agent that created and hosts a block (3 agents)')
  const dir = tempDir('bm-bench-resilience-')
  const tiny = generateModel({ ...PRESETS.tiny, layers: 2, maxPositions: 1024, seed: 31 }, join(dir, 'tiny2.onnx'))
  const kill: KillTrial[] = []
  try {
    for (let t = 0; t < (quick ? 2 : 3); t++) {
      const r = await runKillTrial(tiny.path, tiny.md5, log, t === 0)
      kill.push(r.trial)
      if (r.record != null) records.unshift(r.record)
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  log('resilience: request migration (kill -9 of the serving host mid-stream)')
  const migration = await runMigration(quick, log)
  if ('skipped' in migration) log(`  skipped: ${migration.skipped}`)
  return { heartbeatMs: HB, kill, migration, convergence, partition, records, load: { start: loadStart, end: os.loadavg() } }
}

// ---------------------------------------------------------------- markdown

function span (xs: number[], digits = 0): string {
  const f = (v: number): string => v.toFixed(digits)
  return xs.length === 1 ? f(xs[0]) : `${f(median(xs))} (${f(Math.min(...xs))}–${f(Math.max(...xs))})`
}
const hb = (xs: number[]): string => span(xs.map(x => x / HB), 1)

export function resilienceMarkdown (r: ResilienceResult): string {
  const out: string[] = []
  out.push(`Real agent processes on this machine (all sharing its cores), heartbeat **${r.heartbeatMs} ms**; figures are median (min–max) over the repetitions, in ms and in heartbeats. ` +
    'The test process polls each agent\'s HTTP API every 50 ms, so each time is late by up to ~50 ms plus the polls\' own latency. ' +
    `Load average (1/5/15 min) at the start ${r.load.start.map(x => x.toFixed(2)).join(' / ')}, at the end ${r.load.end.map(x => x.toFixed(2)).join(' / ')}.`)

  out.push('', '### kill -9 of the agent that created and hosts a block', '')
  out.push(`3 agents, a fresh mesh per repetition (${r.kill.length}); the block (the generated tiny model, 2 layers, one instance) is created through agent A and placed on A; ` +
    'A is killed with SIGKILL. From the kill: *expired* — both survivors list A as not live; *reconciled* — a survivor names a reconciler other than A (its own claim, under a higher term), then both survivors do; ' +
    '*replacement ready* — a survivor\'s view shows a ready instance on another agent; *served again everywhere* — a completion for the block\'s name (max_tokens 1) sent to each survivor after the kill was answered 200 by both ' +
    '(requests sent after the kill are held while the agent waits for a ready instance, so this is when a client\'s first request returns).')
  out.push('', '| | ms | heartbeats |', '| --- | ---: | ---: |')
  const k = r.kill
  const row = (label: string, xs: number[]): void => { out.push(`| ${label} | ${span(xs)} | ${hb(xs)} |`) }
  row('A expired on both survivors', k.map(t => t.expiredMs))
  row('another agent reconciles (first view)', k.map(t => t.reconciledMs))
  row('another agent reconciles (both views)', k.map(t => t.reconciledAllMs))
  row('replacement instance ready', k.map(t => t.readyMs))
  row('name served again on every survivor (200)', k.map(t => t.servedMs))
  const statuses: Record<string, number> = {}
  for (const t of k) for (const [s, c] of Object.entries(t.statuses)) statuses[s] = (statuses[s] ?? 0) + c
  out.push('', `Terms: ${k.map(t => `${t.termBefore} → ${t.termAfter}`).join(', ')}. Answers to the survivors' completions while recovering: ${Object.entries(statuses).map(([s, c]) => `${s === '-1' ? 'connection error' : s} × ${c}`).join(', ')}` +
    `${statuses['404'] != null ? ' (404: a name was forgotten)' : ' (no 404: no survivor forgot the name)'}.`)

  out.push('', '### Request migration: kill -9 of the serving host mid-stream', '')
  const mig = r.migration
  if ('skipped' in mig) out.push(`Not measured: ${mig.skipped}.`)
  else {
    out.push(`Agent B (cluster front) serves a streamed greedy chat completion (${mig.promptTokens} prompt tokens, max_tokens ${mig.maxTokens}) of a block with instances on C and D (cluster back), model ${mig.model}; ` +
      'after k content chunks the host named by x-blockmesh-served-by is killed with SIGKILL, B resumes the sequence on the other instance (prompt + tokens so far replayed as its prompt), and the killed host is restarted before the next repetition. ' +
      `*Stall*: the longest pause between two chunks from the kill on, against a median of ${mig.chunkMs.toFixed(2)} ms between chunks without failure; *replayed*: prompt + tokens generated before the loss (B's log); ` +
      '*replay rate*: replayed ÷ stall (the stall also holds failure detection and picking the other instance, so this is a lower bound on the prefill rate); ' +
      '*extra*: stall − median chunk gap, the latency the migrated request pays at the migration. ' +
      `Whole requests took ${span(mig.trials.map(t => t.totalMs))} ms against ${Math.round(mig.referenceMs)} ms without failure (median of 2), a difference within the run-to-run spread on this shared machine. ` +
      `The host killed is restarted before the next repetition, and repetitions are ${LOST_PEER_WAIT_MS / 1000} s apart: the serving agent skips a peer whose instance it lost for 15 s (agent/serving/instances.ts), so a second loss within that window, with the first host the only other one, waits it out. ` +
      `Text identical to the failure-free run: ${mig.trials.every(t => t.sameText) ? 'yes, every time' : 'NO in ' + String(mig.trials.filter(t => !t.sameText).length) + ' run(s)'}.`)
    out.push('', '| killed after (chunks) | tokens replayed | stall ms | replay rate (tokens/s) | extra ms |', '| ---: | ---: | ---: | ---: | ---: |')
    for (const t of mig.trials) out.push(`| ${t.killAfterChunks} | ${Number.isNaN(t.replayed) ? '?' : t.replayed} | ${t.stallMs.toFixed(0)} | ${Number.isNaN(t.replayed) ? '?' : Math.round(t.replayed / (t.stallMs / 1000))} | ${Math.round(t.stallMs - mig.chunkMs)} |`)
    // least squares stall = fixed + replayed × per-token, when the replays differ
    const pts = mig.trials.filter(t => !Number.isNaN(t.replayed) && !Number.isNaN(t.stallMs))
    const mx = pts.reduce((a, t) => a + t.replayed, 0) / pts.length
    const my = pts.reduce((a, t) => a + t.stallMs, 0) / pts.length
    const sxx = pts.reduce((a, t) => a + (t.replayed - mx) ** 2, 0)
    if (pts.length >= 2 && sxx > 0) {
      const slope = pts.reduce((a, t) => a + (t.replayed - mx) * (t.stallMs - my), 0) / sxx
      out.push('', `Least-squares fit over these runs: stall ≈ ${(my - slope * mx).toFixed(0)} ms + ${slope.toFixed(3)} ms × tokens replayed` +
        `${slope > 0 ? ` (≈ ${Math.round(1000 / slope)} tokens/s of replay once the loss is noticed and another instance picked)` : ''}.`)
    }
  }

  out.push('', '### Desired-state convergence', '')
  out.push('N agents on loopback (meshes formed as in the gossip benchmark); each repetition writes one component through a different agent (POST /api/components, acknowledged once stored in SQLite) ' +
    'and polls each agent\'s `GET /api/state` (every 50 ms, each agent on its own) until its digest equals the writer\'s; the clock starts before the POST. ' +
    '"Applied via": changes applied on the other agents, summed — gossip push or anti-entropy pull. ' +
    'CPU: user + system time per agent over the 10 heartbeats at rest (below), % of one core; the machine has ' + String(os.availableParallelism()) + ' cores for all the agents (and whatever else runs on it: see the load average).')
  out.push('', '| agents | write → every digest equal, ms | heartbeats | median agent, ms | applied via gossip / sync | mesh formation ms | CPU per agent at rest | load average (1 min) |', '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for (const c of r.convergence) out.push(`| ${c.agents} | ${span(c.trials)} | ${hb(c.trials)} | ${span(c.medianAgent)} | ${c.via.gossip} / ${c.via.sync} | ${c.formationMs} | ${c.rest.cpuPercent.toFixed(1)}% | ${c.load1.toFixed(1)} |`)
  const cores = os.availableParallelism()
  for (const c of r.convergence) {
    const why: string[] = []
    const used = c.agents * c.rest.cpuPercent / 100
    if (used > 0.8 * cores) why.push(`at rest the agents use ${c.agents} × ${c.rest.cpuPercent.toFixed(1)}% ≈ ${used.toFixed(2)} of its ${cores} cores`)
    const perBeat = c.rest.records / c.agents / c.rest.heartbeats
    if (perBeat > 1.05) why.push(`heartbeats fell behind and were caught up (${perBeat.toFixed(1)} records per agent per heartbeat, below)`)
    if (why.length === 0) continue
    why.push(`load average ${c.load1.toFixed(1)} on ${cores} cores`)
    out.push('', `At ${c.agents} agents this machine was saturated (${why.join('; ')}): those times are mostly agents waiting for CPU, not the protocol — ` +
      `${c.via.sync === 0 ? 'every change still arrived by the one-hop gossip push, none by a pull' : `${c.via.gossip} changes arrived by the gossip push and ${c.via.sync} by an anti-entropy pull`}. ` +
      'The test process\'s 50 ms polls (≈ 0.4 ms of an agent\'s CPU each) add to the load.')
  }
  const p = r.partition
  out.push('')
  if ('skipped' in p) out.push(`After a partition heals: not measured — ${p.skipped}.`)
  else {
    out.push(`After a partition heals: 3 agents on separate network hosts (test/helpers/netns.ts: namespaces, a bridge, nftables drops), cut into {0} | {1, 2} until both sides see it, ` +
      `then a create on each side and a delete on the right of an object the left still holds, then healed; ${p.trials.length} cycles on one mesh. ` +
      `Every acknowledged write kept: ${p.trials.every(t => t.complete) ? 'yes, every cycle' : 'NO'}.`)
    out.push('', '| | ms | heartbeats |', '| --- | ---: | ---: |')
    row('cut → both sides see the partition', p.trials.map(t => t.seenMs))
    row('heal → every agent lists every other as live', p.trials.map(t => t.liveMs))
    row('heal → one state (digests equal)', p.trials.map(t => t.convergedMs))
  }

  out.push('', '### Replication at rest', '')
  out.push('What the desired state adds to each capacity record (published once per heartbeat per agent, then relayed by gossipsub to its mesh peers): the record of a real agent ' +
    '(`GET /api/node`), sealed as the agent seals it (JSON in a signed envelope) with and without the `state` digest and the `reconciles` list.')
  out.push('', '| record | bytes with | bytes without | `state` field | `reconciles` field (entries) | added per heartbeat |', '| --- | ---: | ---: | ---: | ---: | ---: |')
  for (const b of r.records) out.push(`| ${b.label} | ${b.withState} | ${b.without} | ${b.stateField} | ${b.reconcilesField} (${b.reconciles}) | ${b.withState - b.without} B (${((b.withState - b.without) / b.without * 100).toFixed(1)}%) |`)
  out.push('', 'State messages at rest, over 10 heartbeats after the convergence writes (nothing written): *state changes* is the sum over agents of `blockmesh_state_changes_total` (local writes — the only thing published on the state topic — gossip and sync); ' +
    '*state-sync requests* counts the inbound `/blockmesh/state-sync/1.0.0` streams every agent negotiated, from libp2p\'s multistream-select trace (`DEBUG=*:mss:handle:trace` in the agents\' logs).')
  out.push('', '| agents | capacity records published | state changes | state-sync requests | other inbound streams |', '| ---: | ---: | ---: | ---: | --- |')
  for (const c of r.convergence) {
    const other = Object.entries(c.rest.otherStreams).map(([proto, n]) => `${proto} × ${n}`).join(', ')
    out.push(`| ${c.agents} | ${c.rest.records} | ${c.rest.stateChanges} | ${c.rest.syncRequests} | ${other === '' ? 'none' : other} |`)
  }
  const bursts = r.convergence.filter(c => c.rest.records > 1.05 * c.agents * c.rest.heartbeats)
  if (bursts.length > 0) {
    out.push('', `More than one record per agent per heartbeat (${bursts.map(c => `${c.agents} agents: ${(c.rest.records / c.agents / c.rest.heartbeats).toFixed(1)}`).join(', ')}): ` +
      'an agent whose heartbeats fell behind (its process starved of CPU) publishes the missed ones back to back, since the heartbeat keeps its schedule from the intended times (`CapacityGossip.beat`); ' +
      'each record carries the bytes above, and none of them led to a state message.')
  }
  return out.join('\n')
}
