/**
 * Gossip convergence: N agents, each its own OS process, on loopback.
 * After the mesh forms, agent 0 changes a reading (its simulated GPUs' free
 * memory, which publishes at once); every other agent is polled until it
 * shows the change. "Heartbeats" = sequence number of agent 0's record the
 * last agent first showed it in, minus the sequence number that carried it.
 */
import { readFileSync } from 'node:fs'
import { AgentProcess, stopAll, until } from '../test/helpers/agents.ts'
import { median } from './stats.ts'

const GiB = 1024 ** 3

export interface GossipTrial { heartbeats: number, msToAll: number }
export interface GossipSizeResult {
  agents: number
  heartbeatMs: number
  formationMs: number
  formationHeartbeats: number
  /** mean CPU of one agent in the formed mesh, % of one core, over 10 s */
  cpuPercent: number
  trials: GossipTrial[]
}

/** CPU seconds (user + system) each process has used, from /proc. */
function cpuSeconds (pids: number[]): number[] {
  return pids.map(pid => {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
    return (Number(f[11]) + Number(f[12])) / 100
  })
}

async function poll (agent: AgentProcess, peerId: string, freeBytes: number): Promise<{ seq: number, at: number }> {
  return await until(async () => {
    const r = await agent.api(`/api/peers/${peerId}`)
    return r.status === 200 && r.body.readings.gpus[0]?.memoryFreeBytes === freeBytes ? { seq: r.body.seq as number, at: Date.now() } : undefined
  }, `${agent.spec.name} to see the change`, 60_000, 50)
}

export async function runGossipSize (n: number, trials: number, heartbeatMs: number, log: (s: string) => void): Promise<GossipSizeResult> {
  const agents: AgentProcess[] = []
  try {
    const first = await AgentProcess.start({ name: 'bench-0', heartbeatMs, simulateGpus: 'count=1,model=A100,memory=80GiB,free=80GiB' })
    agents.push(first)
    // start the others a few at a time: 2 cores cannot boot 20 Node processes at once quickly
    for (let i = 1; i < n; i += 4) {
      const batch = []
      for (let j = i; j < Math.min(n, i + 4); j++) batch.push(AgentProcess.start({ name: `bench-${j}`, heartbeatMs, bootstrap: [first.addr] }))
      agents.push(...await Promise.all(batch))
    }
    const t0 = Date.now()
    const seq0 = (await first.api('/api/node')).body.seq as number
    await until(async () => {
      const counts = await Promise.all(agents.map(async a => (await a.peers()).length))
      return counts.every(c => c === n)
    }, `all ${n} agents to see each other`, 180_000, 1000)
    const formationMs = Date.now() - t0
    const formationHeartbeats = (await first.api('/api/node')).body.seq - seq0
    log(`  ${n} agents: mesh formed (${formationMs} ms after the last start)`)
    await new Promise(r => setTimeout(r, 5000)) // let start-up work finish
    const pids = agents.map(a => a.child.pid as number)
    const c0 = cpuSeconds(pids)
    await new Promise(r => setTimeout(r, 10_000))
    const c1 = cpuSeconds(pids)
    const cpuPercent = c1.reduce((s, v, i) => s + (v - c0[i]), 0) / n / 10 * 100
    log(`  ${n} agents: ${cpuPercent.toFixed(1)}% of a core per agent at rest`)

    const result: GossipSizeResult = { agents: n, heartbeatMs, formationMs, formationHeartbeats, cpuPercent, trials: [] }
    for (let t = 0; t < trials; t++) {
      const free = (70 - t) * GiB
      const start = Date.now()
      const put = await first.api('/api/hardware/simulated-gpus', { method: 'PUT', body: { gpus: [{ model: 'A100', memoryTotalBytes: 80 * GiB, memoryFreeBytes: free }] } })
      if (put.status !== 200) throw new Error(`PUT failed: ${JSON.stringify(put.body)}`)
      const published = put.body.publishedSeq as number
      const seen = await Promise.all(agents.slice(1).map(async a => await poll(a, first.peerId, free)))
      const trial = {
        heartbeats: Math.max(...seen.map(s => s.seq - published)),
        msToAll: Math.max(...seen.map(s => s.at)) - start
      }
      result.trials.push(trial)
      log(`  ${n} agents, trial ${t + 1}: all saw the change after ${trial.heartbeats} heartbeat(s), ${trial.msToAll} ms`)
    }
    return result
  } finally {
    await stopAll(agents)
  }
}

export function gossipMarkdown (results: GossipSizeResult[]): string {
  const lines = [
    `Agents as separate processes on one 2-core machine, heartbeat ${results[0]?.heartbeatMs ?? '?'} ms, ${results[0]?.trials.length ?? 0} changes per size. ` +
    'A change is published at once; "heartbeats" counts how many later heartbeats it took to reach the last agent (0 = the record carrying the change reached everyone). ' +
    'Wall time includes the 50 ms polling of every agent\'s API. CPU: user + system time of every agent process over 10 s once the mesh formed, averaged; all agents share the 2 cores.',
    '',
    '| agents | heartbeats until all see a change (median / max) | ms until all see it (median / max) | mesh formation (ms / heartbeats) | CPU per agent at rest (% of a core) |',
    '| ---: | ---: | ---: | ---: | ---: |'
  ]
  for (const r of results) {
    const hb = r.trials.map(t => t.heartbeats)
    const ms = r.trials.map(t => t.msToAll)
    lines.push(`| ${r.agents} | ${median(hb)} / ${Math.max(...hb)} | ${median(ms)} / ${Math.max(...ms)} | ${r.formationMs} / ${r.formationHeartbeats} | ${r.cpuPercent.toFixed(1)} |`)
  }
  return lines.join('\n')
}
