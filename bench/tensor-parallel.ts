/**
 * Tensor parallelism on two "boxes" (two cores) vs the whole model on one: what issue 14's 8-stream goal
 * would take, measured before it is built into the serving path. The generated ~100M model (14 layers,
 * hidden 768, float32). Three runs, each process pinned to its own core (taskset) with one ONNX Runtime
 * thread (bench/tp-rank.ts):
 *   1. the whole model alone on core 0: a batched decode step;
 *   2. rank 0 and rank 1 of a 2-way split (agent/model/tp-graph.ts) on cores 0 and 1 at once, each timing
 *      its own segments (compute alone: half the heads and half the MLP for the whole batch);
 *   3. the same two ranks in step, an all-reduce of the partial after every segment (28 per decode step)
 *      over /blockmesh/pipeline/1.0.0 on loopback (TCP + Noise + Yamux, the agent's PeerLinks).
 * The whole-model process also times the 2 stages of the ring pipeline at half the batch, on the same core:
 * the pipeline's ceiling with no agent around it, beside the one bench/pipeline.ts measures inside agents. TP_NODE_FLAGS (environment) adds node flags to the rank
 * processes, for looking into them (e.g. "--trace-gc"; their diagnostics pass through to stderr).
 */
import os from 'node:os'
import { spawn, spawnSync } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import type { RankTimes } from './tp-rank.ts'

export interface TpResult {
  date: string
  cpu: string
  cores: number
  batches: number[]
  past: number
  steps: number
  whole?: RankTimes
  ranks?: RankTimes[]
  skipped?: string
}

const RANK_SCRIPT = fileURLToPath(new URL('./tp-rank.ts', import.meta.url))

export function tensorParallelUnavailable (): string | null {
  if (os.availableParallelism() < 2) return `${os.availableParallelism()} core: two boxes need two cores`
  const t = spawnSync('taskset', ['-c', '0', 'true'])
  if (t.error != null || t.status !== 0) return 'taskset (util-linux) is missing or cannot pin'
  return null
}

interface RankProcess {
  ready: Promise<{ multiaddr?: string, peer?: string }>
  result: Promise<RankTimes>
}

function startRank (core: number, args: Record<string, unknown>, log: (s: string) => void): RankProcess {
  const child = spawn('taskset', ['-c', String(core), process.execPath, ...(process.env.TP_NODE_FLAGS ?? '').split(' ').filter(Boolean), RANK_SCRIPT, JSON.stringify(args)], { stdio: ['ignore', 'pipe', 'inherit'] })
  const lines = createInterface({ input: child.stdout })
  let onReady: (v: { multiaddr?: string, peer?: string }) => void = () => {}
  let onResult: (v: RankTimes) => void = () => {}
  let fail: (e: Error) => void = () => {}
  const ready = new Promise<{ multiaddr?: string, peer?: string }>((resolve, reject) => { onReady = resolve; fail = reject })
  const result = new Promise<RankTimes>((resolve, reject) => {
    onResult = resolve
    const prev = fail
    fail = (e) => { prev(e); reject(e) }
  })
  ready.catch(() => {})
  lines.on('line', l => {
    // node's own diagnostics (--trace-gc and the like) pass through
    if (!l.startsWith('{')) { process.stderr.write(l + '\n'); return }
    const m = JSON.parse(l) as { ready?: boolean, multiaddr?: string, peer?: string, result?: RankTimes }
    if (m.ready === true) onReady(m)
    else if (m.result != null) onResult(m.result)
  })
  child.once('exit', code => { fail(new Error(`${String(args.mode)} ${String(args.rank ?? '')} on core ${core} exited with ${code ?? 'a signal'} before its result`)) })
  log(`  started ${String(args.mode)}${args.mode === 'rank' ? ` ${String(args.rank)}` : ''} on core ${core}`)
  return { ready, result }
}

export async function runTensorParallelBench (opts: { quick: boolean, log: (s: string) => void }): Promise<TpResult> {
  const batches = opts.quick ? [1, 8] : [1, 8, 16]
  const r: TpResult = { date: new Date().toISOString().slice(0, 10), cpu: os.cpus()[0]?.model ?? 'unknown', cores: os.availableParallelism(), batches, past: 128, steps: opts.quick ? 10 : 30 }
  const why = tensorParallelUnavailable()
  if (why != null) { r.skipped = why; opts.log(`tp: skipped (${why})`); return r }
  const common = { batches, past: r.past, steps: r.steps }
  r.whole = await startRank(0, { mode: 'whole', ...common }, opts.log).result
  opts.log(`  whole: ${batches.map(b => `batch ${b} ${r.whole!.computeMs[b].toFixed(1)} ms`).join(', ')}`)
  const one = startRank(1, { mode: 'rank', rank: 1, ranks: 2, ...common }, opts.log)
  const at = await one.ready
  const zero = startRank(0, { mode: 'rank', rank: 0, ranks: 2, ...common, dial: { multiaddr: at.multiaddr, peer: at.peer } }, opts.log)
  r.ranks = await Promise.all([zero.result, one.result])
  for (const b of batches) opts.log(`  2 ranks, batch ${b}: compute ${r.ranks.map(x => x.computeMs[b].toFixed(1)).join(' / ')} ms, in step ${r.ranks.map(x => x.stepMs?.[b].toFixed(1)).join(' / ')} ms, two micro-batches ${r.ranks.map(x => x.overlappedMs?.[b]?.toFixed(1) ?? '-').join(' / ')} ms`)
  return r
}

export function tensorParallelMarkdown (r: TpResult): string {
  if (r.skipped != null || r.whole == null || r.ranks == null) return `Not measured on this machine: ${r.skipped ?? 'no result'}.`
  const [r0, r1] = r.ranks
  const ms = (x: number | undefined): string => x == null ? '–' : x.toFixed(1)
  const rows = r.batches.map(b => {
    const w = r.whole!.computeMs[b]
    const compute = Math.max(r0.computeMs[b], r1.computeMs[b])
    const step = r0.stepMs![b]
    const over = r0.overlappedMs?.[b]
    const wait = r0.waitMs?.[b]
    const perReduce = (step - compute) / r0.exchanges!
    const stage = r.whole!.stageMs?.[b]
    const ring = stage == null ? '–' : `**${(w / (2 * Math.max(...stage))).toFixed(2)}** (${stage.map(x => x.toFixed(1)).join(' / ')} ms)`
    return `| ${b} | ${w.toFixed(1)} | ${(b * 1000 / w).toFixed(1)} | ${ring} | ${compute.toFixed(1)} | **${(w / compute).toFixed(2)}** | ${step.toFixed(1)} | ${(b * 1000 / step).toFixed(1)} | **${(w / step).toFixed(2)}** | ${ms(over)} | ${over == null ? '–' : `**${(w / over).toFixed(2)}**`} | ${(perReduce * 1000).toFixed(0)} | ${wait == null ? '–' : wait.map(x => x.toFixed(2)).join(' / ')} |`
  })
  return [
    `${r.date}, ${r.cpu}, ${r.cores} cores. The generated ~100M model (14 layers, hidden 768, 12 heads, float32), one decode position per sequence over a past of ${r.past} positions, median of ${r.steps} steps. ` +
    'Whole: the model\'s own graph alone on core 0 (fetching logits and the step\'s keys and values, as an engine that keeps its cache does). ' +
    '"Ring pipeline alone": the same model cut into the 2 stages of the ring pipeline (agent/splitter), each timed on core 0 at half the batch (a micro-batch); a box runs both micro-batches in turn, so with no waiting and no agent around it the pipeline would give whole ÷ (2 × the slower stage) — the ceiling the pipeline benchmark measures inside agents. ' +
    'Two ranks: agent/model/tp-graph.ts\'s shards, rank 0 on core 0 and rank 1 on core 1, each process pinned (`taskset`) with one ONNX Runtime thread; a step is 28 segment runs (14 attention, 14 MLP) on each rank and the head on rank 0. ' +
    '"Compute alone": each rank times its segments while the other does the same (the slower rank shown). ' +
    '"In step": an all-reduce after every segment — the rank\'s partial [batch, 1, 768] sent to the other over /blockmesh/pipeline/1.0.0 on loopback (PeerLinks: TCP + Noise + Yamux) and the other\'s added — timed on rank 0. ' +
    '"Two micro-batches": the batch halved, the halves taking turns so that one\'s all-reduce travels while the other computes (56 runs and 56 all-reduces a step). ' +
    'Per all-reduce: (in step − compute alone) ÷ 28. Wait: how long rank 0\'s all-reduces waited for the other rank\'s partial (p50 / p90 / p99, ms). ' +
    'Not in the serving path: this measures what the split would give before it is built (sampling would add one small message per step).',
    '',
    '| batch | whole ms/step | whole tok/s | ring pipeline alone: whole ÷ 2 × slower stage at batch/2 | 2 ranks, compute alone ms/step | ÷ whole | 2 ranks in step ms/step | tok/s | ÷ whole | two micro-batches ms/step | ÷ whole | per all-reduce µs | wait p50 / p90 / p99 ms |',
    '| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
    ...rows
  ].join('\n')
}
