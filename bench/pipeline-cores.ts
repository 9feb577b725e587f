/**
 * The pipeline on a machine with cores to spare (issue 14): the same two pinned agents as `pipeline`'s
 * direct lab, on loopback instead of network namespaces (no root, iproute2 or Toxiproxy needed), so it
 * runs wherever `taskset` does — on a larger server it shows what two boxes that do not share a 2-vCPU
 * VM's memory bandwidth give. The ~100M generated model: whole on box-a (one core, one ONNX Runtime
 * thread) against its 2-stage split (one stage per box, one thread each) and two replicas, single
 * stream and 8 streams, short prompts, rounds interleaved. Also measured in the same run: what the two
 * cores cost each other — memory bandwidth of one thread alone on box-a's core, and of a thread on each
 * core at once — since a decode step streams the weights.
 *
 *   npm run bench -- --only pipecores [--box-width 2] [--cores 0,2]
 *   (default: boxes of one CPU, CPU 0 and a CPU on another physical core; --box-width N: CPUs 0..N−1 and the
 *   next N, the model on one ONNX Runtime thread either way, the other CPUs the agent's; a section of its own)
 */
import os from 'node:os'
import { execFileSync, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { AgentProcess, stopAll, until } from '../test/helpers/agents.ts'
import { componentSpec, deploy, splitAndDeploy } from '../test/helpers/models.ts'
import { ensureGeneratedModel } from '../agent/model/cache.ts'
import { PRESETS } from '../agent/model/spec.ts'
import { aggregate, apiStream } from './inference.ts'
import { StepMeter, replicasOnBoth, twoBoxPlacement } from './pipeline.ts'
import type { Ceiling } from './pipeline.ts'
import { median } from './stats.ts'

export interface PipelineCoresResult {
  /** the CPUs of box-a and of box-b, as taskset takes them ('0', or '0-1' for a box of two) */
  cores: [string, string]
  /** CPUs per box: one runs the ONNX Runtime thread, the others are the agent's (its event loop, libuv) */
  width: number
  /** logical CPUs of the machine, and whether the two chosen share a physical core */
  cpus: number
  siblings: boolean
  /** GB/s of one memcpy thread: alone on cores[0], and on each core at once (the two figures) */
  membwAlone: number
  membwTogether: [number, number]
  whole1: number[]
  split1: number[]
  whole8: number[]
  split8: number[]
  replicas8: number[]
  ceiling8?: Ceiling
  placement: string[]
  skipped?: string
}

/** The physical core of a logical CPU (its thread siblings), where Linux says. */
function siblingsOf (cpu: number): string {
  try { return readFileSync(`/sys/devices/system/cpu/cpu${cpu}/topology/thread_siblings_list`, 'utf8').trim() } catch { return String(cpu) }
}

/**
 * The CPUs of two boxes of `width` CPUs each: for one CPU, CPU 0 and the first CPU not on CPU 0's physical
 * core (an SMT sibling would share its execution units); for more, CPUs 0..width−1 and the next `width`.
 */
export function pickCores (width: number): [string, string] {
  if (width > 1) return [`0-${width - 1}`, `${width}-${2 * width - 1}`]
  const n = os.availableParallelism()
  const zero = siblingsOf(0)
  for (let c = 1; c < n; c++) if (siblingsOf(c) !== zero) return ['0', String(c)]
  return ['0', '1']
}

/** The first CPU of a taskset list ('2-3' → 2). */
const firstCpu = (list: string): number => Number(list.split(/[-,]/)[0])

/** One memcpy thread's bandwidth (bench/membw.ts, read + write) in a process pinned to `cpu`, in GB/s. */
async function membwOn (cpu: number): Promise<number> {
  return await new Promise((resolve, reject) => {
    const child = spawn('taskset', ['-c', String(cpu), process.execPath, fileURLToPath(new URL('./membw.ts', import.meta.url)), '1'], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    child.on('error', reject)
    child.on('exit', (rc) => { const v = Number(out.trim()); rc === 0 && Number.isFinite(v) ? resolve(v / 1e9) : reject(new Error(`membw on CPU ${cpu}: exit ${rc}, ${out}`)) })
  })
}

export function pipelineCoresUnavailable (): string | null {
  try { execFileSync('taskset', ['-c', '0', 'true']); return null } catch { return 'taskset (util-linux) cannot pin a process here' }
}

export async function runPipelineCoresBench (opts: { quick: boolean, width?: number, cores?: [string, string], log: (s: string) => void }): Promise<PipelineCoresResult> {
  const { log } = opts
  const width = opts.width ?? 1
  const cores = opts.cores ?? pickCores(width)
  const [c0, c1] = cores.map(firstCpu)
  const result: PipelineCoresResult = { cores, width, cpus: os.availableParallelism(), siblings: width === 1 && siblingsOf(c0) === siblingsOf(c1) && c0 !== c1, membwAlone: NaN, membwTogether: [NaN, NaN], whole1: [], split1: [], whole8: [], split8: [], replicas8: [], placement: [] }
  let why = pipelineCoresUnavailable()
  if (why == null && 2 * width > result.cpus) why = `boxes of ${width} CPUs need ${2 * width}; this machine has ${result.cpus}`
  if (why != null) { result.skipped = why; log(`pipecores: skipped (${why})`); return result }
  log(`pipecores: boxes on CPUs ${cores[0]} and ${cores[1]} of ${result.cpus}${result.siblings ? ' (SMT siblings)' : ''}`)
  result.membwAlone = await membwOn(c0)
  result.membwTogether = await Promise.all([membwOn(c0), membwOn(c1)]) as [number, number]
  log(`  memcpy, one thread: ${result.membwAlone.toFixed(1)} GB/s alone, ${result.membwTogether.map(v => v.toFixed(1)).join(' and ')} GB/s with one on each core`)

  const agents: AgentProcess[] = []
  try {
    const b = await AgentProcess.start({ name: 'box-b', cluster: 'box-b', cpus: cores[1], extra: ['--inference-threads', '1'] })
    agents.push(b)
    const a = await AgentProcess.start({ name: 'box-a', cluster: 'box-a', cpus: cores[0], extra: ['--inference-threads', '1'], bootstrap: [b.addr] })
    agents.push(a)
    await until(async () => (await a.peers()).length === 2 && (await b.peers()).length === 2, 'the two boxes to see each other', 60_000)
    const names = new Map([[a.peerId, 'box-a'], [b.peerId, 'box-b']])
    const m = await ensureGeneratedModel({ ...PRESETS['100m'], seed: 1 }, '.blockmesh/bench-models', 'gpt-100m', log)
    const tag = m.md5.slice(0, 6)
    const component = `pipe-cores-${tag}:${m.md5.slice(0, 8)}`
    const whole = `whole-${tag}`
    const split = `p2-${tag}`
    const block = await deploy(a, componentSpec(m, `pipe-cores-${tag}`, { contextLength: m.spec.maxPositions }), { id: whole, component, maxBatch: 8, threads: 1, policy: { cluster: { names: ['box-a'] } } })
    if (block.status !== 'ready') throw new Error(`block ${whole}: ${block.error as string}`)
    await splitAndDeploy(a, { modelName: split, modelPath: m.path, worldSize: 2, config: { vdag_name: split, block: { threads: 1, maxBatch: 8 } } })
    result.placement = await twoBoxPlacement(a, split, names)
    const replicas = await replicasOnBoth(a, b, `replicas-${tag}`, component, log)
    for (const id of [whole, split]) await apiStream(a, id, 8) // warm-up

    const rounds = opts.quick ? 2 : 4
    const tokens = opts.quick ? 16 : 40
    const aggTokens = opts.quick ? 8 : 64
    for (let r = 0; r < rounds; r++) {
      result.whole1.push((await apiStream(a, whole, tokens)).tps)
      result.split1.push((await apiStream(a, split, tokens)).tps)
      log(`  round ${r + 1}: whole ${result.whole1.at(-1)?.toFixed(1)}, 2 stages ${result.split1.at(-1)?.toFixed(1)} tok/s`)
    }
    // 8 streams: the three ways in turn, round after round
    const meter = new StepMeter([a, b], whole, split)
    for (let r = 0; r < rounds; r++) {
      result.whole8.push(await meter.whole(async () => await aggregate(a, whole, 8, aggTokens)))
      result.split8.push(await meter.split(async () => await aggregate(a, split, 8, aggTokens)))
      if (replicas != null) result.replicas8.push(await aggregate(a, replicas, 8, aggTokens))
      log(`  8 streams round ${r + 1}: whole ${result.whole8.at(-1)?.toFixed(1)}, 2 stages ${result.split8.at(-1)?.toFixed(1)}${replicas != null ? `, 2 replicas ${result.replicas8.at(-1)?.toFixed(1)}` : ''} tok/s in all`)
    }
    result.ceiling8 = meter.ceiling()
  } finally {
    await stopAll(agents)
  }
  return result
}

export function pipelineCoresMarkdown (r: PipelineCoresResult): string {
  if (r.skipped != null) return `Not measured on this machine: ${r.skipped}.`
  const x = (a: number, b: number): string => `**${(a / b).toFixed(2)}**`
  const [w1, s1, w8, s8, r8] = [median(r.whole1), median(r.split1), median(r.whole8), median(r.split8), median(r.replicas8)]
  const c = r.ceiling8
  const ceiling = c == null || !Number.isFinite(c.ratio) ? '' : `${c.ratio.toFixed(2)} (${c.wholeMsPerToken.toFixed(1)} ÷ ${Math.max(...c.stageMsPerToken).toFixed(1)} ms)`
  return [
    `Two agent processes on a machine of ${r.cpus} logical CPUs, each pinned to ${r.width === 1 ? 'one' : `${r.width} of them`} (\`taskset -c ${r.cores[0]}\` for box-a, \`-c ${r.cores[1]}\` for box-b${r.width > 1 ? '' : r.siblings ? '; the two are SMT siblings of one physical core' : '; not SMT siblings'}${r.width > 1 ? `: each box runs its model on one ONNX Runtime thread and has ${r.width - 1} CPU${r.width > 2 ? 's' : ''} for the rest of the agent — its event loop, the frames, HTTP — as the agent's own thread choice leaves a core to them on small boxes` : ''}), linked over loopback (TCP + Noise + Yamux), the rest of the machine idle; otherwise as the pipeline benchmark's direct lab: the generated ~100M model (float32), one ONNX Runtime thread per box, requests to box-a, which hosts the whole model and drives the pipeline; the split is the built-in splitter's 2 stages, one per box, as a ring with two micro-batches of 4 for 8 streams; "2 replicas" is the whole model on each box, box-a forwarding half the requests to box-b. ` +
    `Single stream: decode tokens/s from the first to the last token (${r.whole1.length} rounds, median); 8 streams: 8 concurrent requests of up to 64 tokens (prefill included), total completion tokens ÷ wall time, the three taking turns round after round, medians. "Decode ceiling" as in the pipeline benchmark: the whole model's decode compute per token ÷ the busier box's stage decode compute per token, from the agents' step metrics over the same runs.`,
    '',
    `What the two cores cost each other (a decode step streams its weights from memory): one memcpy thread (bench/membw.ts: 256 MiB buffers, read + write) moved ${r.membwAlone.toFixed(1)} GB/s alone on CPU ${firstCpu(r.cores[0])}, and ${r.membwTogether[0].toFixed(1)} and ${r.membwTogether[1].toFixed(1)} GB/s with one on each CPU at once (${((r.membwTogether[0] + r.membwTogether[1]) / 2 / r.membwAlone).toFixed(2)}× alone, on average).`,
    '',
    '| served as | 1 stream tok/s | ÷ whole | 8 streams tok/s | ÷ whole | decode ceiling |',
    '| --- | ---: | ---: | ---: | ---: | --- |',
    `| whole, box-a | ${w1.toFixed(1)} | 1 | ${w8.toFixed(1)} | 1 | |`,
    `| 2 stages, ${r.placement.join(' → ')} | ${s1.toFixed(1)} | ${x(s1, w1)} | ${s8.toFixed(1)} | ${x(s8, w8)} | ${ceiling} |`,
    ...(r.replicas8.length > 0 ? [`| 2 replicas, one per box (requests to box-a) | | | ${r8.toFixed(1)} | ${x(r8, w8)} | |`] : []),
    '',
    `Rounds, 8 streams (tok/s): whole ${r.whole8.map(v => v.toFixed(1)).join(', ')}; 2 stages ${r.split8.map(v => v.toFixed(1)).join(', ')}; 2 replicas ${r.replicas8.length > 0 ? r.replicas8.map(v => v.toFixed(1)).join(', ') : 'not measured (they did not land one per box)'}.`,
    '',
    'Goals (issue 14): ≥ 0.85 single stream and ≥ 1.3 with 8 streams.'
  ].join('\n')
}
