/**
 * Live updates for dashboards: K clients on the agent's event stream
 * (GET /api/events, one push per heartbeat) vs the same K clients polling
 * GET /api/peers once per heartbeat (what a dashboard without the stream does),
 * side by side on one agent of a 3-agent mesh. Measures the agent's CPU time
 * (process_cpu_seconds_total, idle baseline subtracted) and the bytes sent.
 */
import { AgentProcess, stopAll, until } from '../test/helpers/agents.ts'

export interface DashboardBenchResult {
  clients: number
  seconds: number
  heartbeatMs: number
  /** idle runs before and after the two loads (their difference is the noise) */
  idleCpuMs: [number, number]
  sse: { cpuMs: number, bytes: number, updates: number }
  poll: { cpuMs: number, bytes: number, updates: number }
}

async function cpuSeconds (a: AgentProcess): Promise<number> {
  return await a.metric('blockmesh_process_cpu_seconds_total')
}

/** Agent CPU ms spent while `load` runs for `seconds`. */
async function measure (a: AgentProcess, seconds: number, load: (signal: AbortSignal) => Promise<void>): Promise<number> {
  const ctl = new AbortController()
  const before = await cpuSeconds(a)
  const running = load(ctl.signal)
  await new Promise(resolve => setTimeout(resolve, seconds * 1000))
  ctl.abort()
  await running.catch(() => {})
  return (await cpuSeconds(a) - before) * 1000
}

export async function runDashboardBench (opts: { quick: boolean, log: (s: string) => void }): Promise<DashboardBenchResult> {
  const clients = 16
  const seconds = opts.quick ? 8 : 30
  const heartbeatMs = 1000
  const a = await AgentProcess.start({ name: 'dash-a', heartbeatMs })
  const rest = await Promise.all(['dash-b', 'dash-c'].map(async name => await AgentProcess.start({ name, heartbeatMs, bootstrap: [a.addr] })))
  try {
    await until(async () => (await a.peers()).length === 3, 'the mesh to form')
    opts.log(`  idle for ${seconds} s`)
    const idleBefore = await measure(a, seconds, async () => {})

    const sse = { cpuMs: 0, bytes: 0, updates: 0 }
    opts.log(`  ${clients} event-stream clients for ${seconds} s`)
    sse.cpuMs = await measure(a, seconds, async (signal) => {
      await Promise.all(Array.from({ length: clients }, async () => {
        const res = await fetch(`${a.url}/api/events`, { signal })
        const reader = res.body!.getReader()
        try {
          for (;;) {
            const { value, done } = await reader.read()
            if (done) break
            sse.bytes += value.byteLength
            sse.updates += new TextDecoder().decode(value).split('event: ').length - 1
          }
        } catch { /* aborted */ }
      }))
    })

    const poll = { cpuMs: 0, bytes: 0, updates: 0 }
    opts.log(`  ${clients} clients polling /api/peers every ${heartbeatMs} ms for ${seconds} s`)
    poll.cpuMs = await measure(a, seconds, async (signal) => {
      await Promise.all(Array.from({ length: clients }, async (_, i) => {
        await new Promise(resolve => setTimeout(resolve, (i * heartbeatMs) / clients)) // spread like independent browsers
        while (!signal.aborted) {
          try {
            const body = await (await fetch(`${a.url}/api/peers`, { signal })).arrayBuffer()
            poll.bytes += body.byteLength
            poll.updates++
          } catch { break }
          await new Promise(resolve => setTimeout(resolve, heartbeatMs))
        }
      }))
    })
    opts.log(`  idle again for ${seconds} s`)
    const idleAfter = await measure(a, seconds, async () => {})
    return { clients, seconds, heartbeatMs, idleCpuMs: [idleBefore, idleAfter], sse, poll }
  } finally {
    await stopAll([a, ...rest])
  }
}

export function dashboardMarkdown (r: DashboardBenchResult): string {
  const idle = (r.idleCpuMs[0] + r.idleCpuMs[1]) / 2
  const noise = Math.abs(r.idleCpuMs[0] - r.idleCpuMs[1])
  const net = (x: { cpuMs: number }): number => x.cpuMs - idle
  const perClientSecond = (x: { cpuMs: number }): string => (net(x) / r.clients / r.seconds).toFixed(3)
  const kib = (b: number): string => (b / 1024 / r.clients / r.seconds).toFixed(1)
  const ratio = net(r.sse) > noise ? `**${(net(r.poll) / net(r.sse)).toFixed(1)}×**` : `more than ${(net(r.poll) / Math.max(noise, 1)).toFixed(1)}× (the stream's cost, ${net(r.sse).toFixed(0)} ms, is within the idle runs' spread of ${noise.toFixed(0)} ms)`
  return [
    `${r.clients} clients on agent 0 of a 3-agent mesh (separate processes, loopback), heartbeat ${r.heartbeatMs} ms, ${r.seconds} s per run; agent CPU from \`blockmesh_process_cpu_seconds_total\`. Idle runs before and after: ${r.idleCpuMs.map(x => x.toFixed(0)).join(' and ')} ms; their mean is subtracted.`,
    '',
    '| live updates | updates received | agent CPU ms (run) | net CPU ms per client-second | KiB per client-second |',
    '| --- | --- | --- | --- | --- |',
    `| event stream (\`GET /api/events\`, push per heartbeat) | ${r.sse.updates} | ${r.sse.cpuMs.toFixed(0)} | ${perClientSecond(r.sse)} | ${kib(r.sse.bytes)} |`,
    `| polling \`GET /api/peers\` per heartbeat | ${r.poll.updates} | ${r.poll.cpuMs.toFixed(0)} | ${perClientSecond(r.poll)} | ${kib(r.poll.bytes)} |`,
    '',
    `Agent CPU for the updates, polling ÷ event stream: ${ratio}. The stream serialises each update once for all clients (and also carries the chart samples: hence more bytes); polling pays HTTP parsing, routing and serialisation per client and request.`
  ].join('\n')
}
