/**
 * Where a vDAG's driver runs (issue 14): a 2-stage split on box-a and box-b, requests to an agent that runs
 * no stage. front-1 (the default) hands the driving to the first stage's host, so a token crosses two links
 * (stage 0 → stage 1 → stage 0's host); front-2 (`--vdag-driver here`) drives itself, three links (front →
 * stage 0 → stage 1 → front). Each agent in its own network namespace, every pair linked only through
 * Toxiproxy at the same one-way latency, the two front agents taking turns. The generated demo model (5M),
 * so that the links, not the compute, set the pace.
 *
 *   npm run bench -- --only vdagdriver      (root, iproute2, nft and toxiproxy-server: scripts/install-chaos-tools.sh)
 */
import os from 'node:os'
import { NetLab } from '../test/helpers/netns.ts'
import type { Toxiproxy } from '../test/helpers/netns.ts'
import { AgentProcess, stopAll, until } from '../test/helpers/agents.ts'
import { splitAndDeploy } from '../test/helpers/models.ts'
import { ensureGeneratedModel } from '../agent/model/cache.ts'
import { PRESETS } from '../agent/model/spec.ts'
import { apiStream } from './inference.ts'
import { pipelineBenchUnavailable, twoBoxPlacement } from './pipeline.ts'
import { median } from './stats.ts'

/** One-way latency added to each direction of every link (ms); RTT is twice it, plus the proxy's own. */
const LATENCIES = [0, 5, 25]

export interface DriverFigures { oneWayMs: number, firstStage: number[], here: number[] }
export interface VdagDriverResult {
  figures: DriverFigures[]
  placement: string[]
  tokens: number
  /** requests front-1 drove itself after all (the host declined or was lost): 0 when every one was driven there */
  frontDrove: number
  cores: number
  cpu: string
  date: string
  skipped?: string
}

export async function runVdagDriverBench (opts: { quick: boolean, log: (s: string) => void }): Promise<VdagDriverResult> {
  const { log } = opts
  const tokens = opts.quick ? 16 : 32
  const result: VdagDriverResult = { figures: [], placement: [], tokens, frontDrove: 0, cores: os.availableParallelism(), cpu: os.cpus()[0]?.model ?? 'unknown', date: new Date().toISOString().slice(0, 10) }
  const why = pipelineBenchUnavailable()
  if (why != null) { result.skipped = why; log(`vdagdriver: skipped (${why})`); return result }
  const lab = NetLab.create(4)
  const agents: AgentProcess[] = []
  let tp: Toxiproxy | undefined
  try {
    const [ha, hb, h1, h2] = [0, 1, 2, 3].map(i => lab.host(i))
    const b = await AgentProcess.start({ name: 'box-b', cluster: 'box-b', netns: hb.ns, listenIp: hb.ip, cpus: '1', extra: ['--inference-threads', '1'] })
    agents.push(b)
    tp = await lab.startToxiproxy()
    const proxy = tp
    // every link through the proxy: the agents reach each other only by the addresses it listens on
    lab.partition([[0], [1], [2], [3]])
    const portOf = (x: AgentProcess): number => Number(/\/tcp\/(\d+)/.exec(x.addr)?.[1])
    const via = async (name: string, port: number, to: AgentProcess, host: typeof ha): Promise<string> => {
      await proxy.createProxy(name, port, `${host.ip}:${portOf(to)}`)
      return `/ip4/${proxy.host.ip}/tcp/${port}/p2p/${to.peerId}`
    }
    const a = await AgentProcess.start({ name: 'box-a', cluster: 'box-a', netns: ha.ns, listenIp: ha.ip, cpus: '0', extra: ['--inference-threads', '1'], bootstrap: [await via('a-b', 20001, b, hb)] })
    agents.push(a)
    const toA = await via('f1-a', 20002, a, ha)
    const toB = await via('f1-b', 20003, b, hb)
    const f1 = await AgentProcess.start({ name: 'front-1', cluster: 'front', netns: h1.ns, listenIp: h1.ip, bootstrap: [toA, toB] })
    agents.push(f1)
    const f2 = await AgentProcess.start({ name: 'front-2', cluster: 'front', netns: h2.ns, listenIp: h2.ip, bootstrap: [await via('f2-a', 20004, a, ha), await via('f2-b', 20005, b, hb)], extra: ['--vdag-driver', 'here'] })
    agents.push(f2)
    for (const x of agents) await until(async () => (await x.peers()).length >= 3, `${x.spec.name} to see the boxes`, 60_000)

    const m = await ensureGeneratedModel({ ...PRESETS.demo, seed: 1 }, '.blockmesh/bench-models', 'demo-gpt', log)
    const split = `drv2-${m.md5.slice(0, 6)}`
    await splitAndDeploy(a, { modelName: split, modelPath: m.path, worldSize: 2, config: { vdag_name: split, block: { threads: 1, maxBatch: 8, policy: { cluster: { names: ['box-a', 'box-b'] } } } } })
    result.placement = await twoBoxPlacement(a, split, new Map([[a.peerId, 'box-a'], [b.peerId, 'box-b']]))
    for (const f of [f1, f2]) await until(async () => (await f.api('/v1/models')).body.data.some((x: { id: string }) => x.id === split), `${f.spec.name} to route ${split}`, 60_000)
    log(`  stages on ${result.placement.join(' → ')}; requests to front-1 (driven by the first stage's host) and front-2 (--vdag-driver here)`)

    const rounds = opts.quick ? 2 : 4
    for (const oneWayMs of LATENCIES) {
      for (const p of ['a-b', 'f1-a', 'f1-b', 'f2-a', 'f2-b']) {
        for (const t of (await proxy.proxy(p)).toxics) await proxy.removeToxic(p, String(t.name))
        if (oneWayMs > 0) {
          await proxy.addToxic(p, { name: 'up', type: 'latency', stream: 'upstream', attributes: { latency: oneWayMs, jitter: 0 } })
          await proxy.addToxic(p, { name: 'down', type: 'latency', stream: 'downstream', attributes: { latency: oneWayMs, jitter: 0 } })
        }
      }
      for (const f of [f1, f2]) await apiStream(f, split, 4) // warm-up over these links
      const fig: DriverFigures = { oneWayMs, firstStage: [], here: [] }
      for (let r = 0; r < rounds; r++) {
        fig.firstStage.push((await apiStream(f1, split, tokens)).tps)
        fig.here.push((await apiStream(f2, split, tokens)).tps)
        log(`  one-way ${oneWayMs} ms, round ${r + 1}: driven by the first stage's host ${fig.firstStage.at(-1)?.toFixed(1)}, driven here ${fig.here.at(-1)?.toFixed(1)} tok/s`)
      }
      result.figures.push(fig)
    }
    for (const res of ['declined', 'resumed', 'failed']) result.frontDrove += await f1.metric('blockmesh_request_migrations_total', { kind: 'driver', result: res })
  } finally {
    await stopAll(agents)
    await tp?.stop()
    lab.destroy()
  }
  return result
}

export function vdagDriverMarkdown (r: VdagDriverResult): string {
  if (r.skipped != null) return `Skipped: ${r.skipped}.`
  const rows = r.figures.map(f => {
    const first = median(f.firstStage)
    const here = median(f.here)
    return `| ${f.oneWayMs === 0 ? 'the proxy alone' : `${f.oneWayMs} ms (RTT ${2 * f.oneWayMs} ms)`} | ${here.toFixed(1)} | ${first.toFixed(1)} | **${(first / here).toFixed(2)}** |`
  })
  return [
    `${r.date}, ${r.cpu}, ${r.cores} cores. Four agent processes, each in its own network namespace with its own IP, every pair linked only through Toxiproxy (latency toxics on both directions of each link; this kernel has no netem): box-a and box-b (pinned to a core each, one ONNX Runtime thread) run the 2 stages of the generated demo model (5M parameters, so that the links rather than the compute set the pace; stages on ${r.placement.join(' → ')}); front-1 and front-2 run no stage and take the requests. front-1 is as shipped: it hands the driving to the first stage's host over /blockmesh/generate/1.0.0 and keeps the client, so each token crosses two links (first stage → second stage → back). front-2 runs with \`--vdag-driver here\`, the way before: it drives the ring itself, three links a token. Single stream, ${r.tokens} tokens a request, decode tokens/s at the client from the first token to the last, the two front agents taking turns, median of the rounds.`,
    '',
    '| one-way latency of every link | driven by the front agent (tok/s) | driven by the first stage\'s host (tok/s) | ÷ |',
    '| --- | ---: | ---: | ---: |',
    ...rows,
    '',
    `front-1's requests its own driver took over (the host declined, or was lost): ${r.frontDrove}.`,
    '',
    `Rounds (tok/s, first stage's host / here): ${r.figures.map(f => `${f.oneWayMs} ms: ${f.firstStage.map(x => x.toFixed(1)).join(', ')} / ${f.here.map(x => x.toFixed(1)).join(', ')}`).join('; ')}.`
  ].join('\n')
}
