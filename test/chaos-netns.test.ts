// Chaos: real agent processes, each on its own network host (a Linux network namespace with its own IP,
// joined by veth pairs to a bridge), with links cut at the bridge and faults injected by Toxiproxy.
// Harness: test/helpers/netns.ts; tools: scripts/install-chaos-tools.sh (.ci/run runs it).
// Every assertion is on states (live/expired peers, counters), none on wall-clock durations.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { AgentProcess, stopAll, until } from './helpers/agents.ts'
import type { AgentSpec } from './helpers/agents.ts'
import { NetLab, Toxiproxy } from './helpers/netns.ts'
import type { NetHost } from './helpers/netns.ts'
import { skipNamed } from './helpers/skip.ts'

const noLab = NetLab.available()
const noToxiproxy = noLab ?? Toxiproxy.available()

function onHost (host: NetHost, spec: AgentSpec): Promise<AgentProcess> {
  return AgentProcess.start({ ...spec, netns: host.ns, listenIp: host.ip })
}

/** name → status, as `agent` sees every peer it has heard of (itself included). */
async function statuses (agent: AgentProcess): Promise<Record<string, string>> {
  return Object.fromEntries((await agent.peers('all')).map(p => [p.name, p.status]))
}

async function untilStatuses (agent: AgentProcess, want: Record<string, string>, what: string): Promise<void> {
  let last: Record<string, string> = {}
  try {
    await until(async () => {
      last = await statuses(agent)
      return Object.entries(want).every(([name, status]) => last[name] === status)
    }, what, 30_000, 200)
  } catch (err) {
    throw new Error(`${(err as Error).message}; ${agent.spec.name} sees ${JSON.stringify(last)}`)
  }
}

/** Whether `from` (a command run inside its namespace) can open a TCP connection to ip:port. */
function tcpReaches (from: NetHost, ip: string, port: number): boolean {
  const out = from.exec(process.execPath, ['-e', `
    const s = require('node:net').connect(${port}, '${ip}')
    s.setTimeout(1000, () => { console.log('timeout'); process.exit(0) })
    s.on('connect', () => { console.log('connected'); process.exit(0) })
    s.on('error', e => { console.log(e.code); process.exit(0) })`]).trim()
  return out === 'connected'
}

describe(skipNamed('chaos harness: network namespaces (NetLab)', noLab), { skip: noLab ?? false }, () => {
  test('a partition cuts the links between hosts in different groups, never the test process\'s path to a host', async () => {
    const lab = NetLab.create(3)
    try {
      const [h0, h1, h2] = lab.hosts
      assert.deepEqual(new Set(lab.hosts.map(h => h.ip)).size, 3)
      const server = h0.spawn(process.execPath, ['-e', `require('node:net').createServer(s => s.end()).listen(7000, '${h0.ip}', () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] })
      await new Promise(resolve => server.stdout!.once('data', resolve))
      const fromRoot = async (): Promise<boolean> => {
        const net = await import('node:net')
        return await new Promise(resolve => {
          const s = net.connect(7000, h0.ip)
          s.setTimeout(1000, () => { s.destroy(); resolve(false) })
          s.on('connect', () => { s.destroy(); resolve(true) })
          s.on('error', () => { resolve(false) })
        })
      }
      assert.equal(tcpReaches(h1, h0.ip, 7000), true, 'host 1 reaches host 0')
      assert.equal(await fromRoot(), true, 'the test process reaches host 0')

      lab.partition([[0], [1, 2]])
      assert.equal(tcpReaches(h1, h0.ip, 7000), false, 'partitioned: host 1 does not reach host 0')
      assert.equal(tcpReaches(h2, h0.ip, 7000), false, 'partitioned: host 2 does not reach host 0')
      assert.equal(await fromRoot(), true, 'partitioned: the test process still reaches host 0')

      lab.heal()
      assert.equal(tcpReaches(h2, h0.ip, 7000), true, 'healed: host 2 reaches host 0')

      lab.isolate(0)
      assert.equal(tcpReaches(h1, h0.ip, 7000), false, 'isolated: host 1 does not reach host 0')
      assert.equal(await fromRoot(), true, 'isolated: the test process still reaches host 0')
    } finally {
      lab.destroy()
    }
  })
})

describe(skipNamed('three agents, each on its own network host (namespaces), through a partition and its healing', noLab), { skip: noLab ?? false }, () => {
  let lab: NetLab
  let agents: AgentProcess[] = []

  before(async () => {
    lab = NetLab.create(3)
    const a0 = await onHost(lab.host(0), { name: 'n0' })
    agents = [a0, ...await Promise.all([1, 2].map(i => onHost(lab.host(i), { name: `n${i}`, bootstrap: [a0.addr] })))]
  })
  after(async () => {
    await stopAll(agents)
    lab?.destroy()
  })

  test('they mesh over the veth network; a partition expires the peers across it; healing brings them back', async () => {
    const [a0, a1, a2] = agents
    // each agent is on its own address, and the test process reaches every API there
    for (const [i, a] of agents.entries()) {
      assert.ok(a.url.startsWith(`http://${lab.host(i).ip}:`), a.url)
      assert.ok(a.addr.startsWith(`/ip4/${lab.host(i).ip}/tcp/`), a.addr)
    }
    const allLive = { n0: 'live', n1: 'live', n2: 'live' }
    for (const a of agents) await untilStatuses(a, allLive, `${a.spec.name} to see all three live`)
    // what each agent gossips is its own host's address
    const view = (await a1.peers()).find(p => p.name === 'n0')
    assert.ok(view.addrs.some((m: string) => m.startsWith(`/ip4/${lab.host(0).ip}/tcp/`)), JSON.stringify(view.addrs))

    lab.partition([[0], [1, 2]])
    await untilStatuses(a0, { n0: 'live', n1: 'expired', n2: 'expired' }, 'n0 to see n1 and n2 expire')
    await untilStatuses(a1, { n0: 'expired', n1: 'live', n2: 'live' }, 'n1 to see n0 expire and n2 stay live')
    await untilStatuses(a2, { n0: 'expired', n1: 'live', n2: 'live' }, 'n2 to see n0 expire and n1 stay live')
    // the test process still reaches all three APIs
    for (const a of agents) assert.equal((await a.api('/api/node')).status, 200)

    lab.heal()
    for (const a of agents) await untilStatuses(a, allLive, `${a.spec.name} to see all three live again after heal()`)
  })
})

describe(skipNamed('two agents on separate network hosts that reach each other only through Toxiproxy (namespaces)', noToxiproxy), { skip: noToxiproxy ?? false }, () => {
  let lab: NetLab
  let tp: Toxiproxy
  let agents: AgentProcess[] = []

  before(async () => {
    lab = NetLab.create(2)
    tp = await lab.startToxiproxy() // host 2
    // cut the direct link: the proxy's host, in no group, still reaches both
    lab.partition([[0], [1]])
  })
  after(async () => {
    await stopAll(agents)
    await tp?.stop()
    lab?.destroy()
  })

  test('the mesh forms through a latency toxic; a stalled link expires the peers, and they return when it clears', async () => {
    const b = await onHost(lab.host(1), { name: 'b' })
    agents.push(b)
    const port = Number(/\/tcp\/(\d+)/.exec(b.addr)![1])
    const proxy = await tp.createProxy('to-b', 20001, `${lab.host(1).ip}:${port}`)
    assert.equal(proxy.listen, `${tp.host.ip}:20001`)
    await tp.addToxic('to-b', { type: 'latency', stream: 'downstream', attributes: { latency: 150, jitter: 50 } })
    await tp.addToxic('to-b', { type: 'latency', stream: 'upstream', attributes: { latency: 150, jitter: 50 } })
    assert.deepEqual((await tp.proxy('to-b')).toxics.map(t => t.name).sort(), ['latency_downstream', 'latency_upstream'])

    const a = await onHost(lab.host(0), { name: 'a', bootstrap: [`/ip4/${tp.host.ip}/tcp/20001/p2p/${b.peerId}`] })
    agents.push(a)
    await untilStatuses(a, { a: 'live', b: 'live' }, 'a to see b live through the proxy')
    await untilStatuses(b, { a: 'live', b: 'live' }, 'b to see a live through the proxy')
    // the proxy is a's only way to b
    assert.equal(tcpReaches(lab.host(0), lab.host(1).ip, port), false, 'a must not reach b directly')
    assert.equal(tcpReaches(lab.host(0), tp.host.ip, 20001), true, 'a reaches the proxy')

    // a stall: nothing passes either way on the connections through the proxy (timeout 0: data is dropped, connections stay open)
    await tp.addToxic('to-b', { name: 'stall-up', type: 'timeout', stream: 'upstream', attributes: { timeout: 0 } })
    await tp.addToxic('to-b', { name: 'stall-down', type: 'timeout', stream: 'downstream', attributes: { timeout: 0 } })
    await untilStatuses(a, { a: 'live', b: 'expired' }, 'a to see b expire while the link stalls')
    await untilStatuses(b, { a: 'expired', b: 'live' }, 'b to see a expire while the link stalls')

    await tp.removeToxic('to-b', 'stall-up')
    await tp.removeToxic('to-b', 'stall-down')
    await untilStatuses(a, { a: 'live', b: 'live' }, 'a to see b live again once the stall is removed')
    await untilStatuses(b, { a: 'live', b: 'live' }, 'b to see a live again once the stall is removed')
    // Toxiproxy counts a connection's bytes when it closes: the stalled one that carried the mesh did
    assert.ok(await tp.bytesReceived('to-b') > 0, 'Toxiproxy carried the agents\' traffic')
  })
})
