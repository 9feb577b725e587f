/**
 * Where a decode step of a converted GGUF model spends its time: ONNX Runtime's profiler, per operator
 * type, for each conversion mode (q8, q4, f32), on the real models when their weights are in the cache.
 * The figures behind the converter's choices (docs/decisions.md, "Conversion modes" and "Fused standard
 * operators").
 */
import { readFileSync, readdirSync, rmSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import ort from 'onnxruntime-node'
import { openGguf } from '../agent/model/gguf/file.ts'
import { decoderConfig } from '../agent/model/gguf/arch.ts'
import { buildDecoder } from '../agent/model/gguf/decoder-graph.ts'
import { encodeModel } from '../agent/model/onnx.ts'
import { realWeights } from '../test/helpers/weights.ts'
import { median } from './stats.ts'

export interface ModeFigures { mode: 'q8' | 'q4' | 'f32', mib: number, nodes: number, stepMs: number, kernelMs: number, ops: Array<[string, number]> }
export interface GraphFigures { model: string, skipped?: string, modes: ModeFigures[] }

async function profile (file: string, mode: 'q8' | 'q4' | 'f32', threads: number, steps: number): Promise<ModeFigures> {
  const f = await openGguf(file)
  const cfg = decoderConfig(f)
  const bytes = encodeModel(buildDecoder(cfg, n => { const t = f.tensors.get(n); return t != null ? { type: t.type, shape: t.shape, data: f.read(n) } : undefined }, { weights: mode }))
  f.close()
  const dir = mkdtempSync(join(tmpdir(), 'bm-prof-'))
  const s = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'all', intraOpNumThreads: threads, enableProfiling: true, profileFilePrefix: join(dir, 'p') })
  const i64 = (a: number[], dims: number[]): ort.Tensor => new ort.Tensor('int64', BigInt64Array.from(a.map(BigInt)), dims)
  let past: Record<string, ort.Tensor> = {}
  for (let i = 0; i < cfg.layers; i++) {
    past[`past_key_values.${i}.key`] = new ort.Tensor('float32', new Float32Array(0), [1, cfg.kvHeads, 0, cfg.headDim])
    past[`past_key_values.${i}.value`] = new ort.Tensor('float32', new Float32Array(0), [1, cfg.kvHeads, 0, cfg.headDim])
  }
  let ids = Array.from({ length: 32 }, (_, i) => 100 + i)
  let pos = 0
  const times: number[] = []
  for (let step = 0; step <= steps; step++) {
    const t0 = performance.now()
    const r = await s.run({ input_ids: i64(ids, [1, ids.length]), attention_mask: i64(new Array<number>(pos + ids.length).fill(1), [1, pos + ids.length]), position_ids: i64(ids.map((_, i) => pos + i), [1, ids.length]), ...past })
    if (step > 0) times.push(performance.now() - t0)
    pos += ids.length
    past = {}
    for (let i = 0; i < cfg.layers; i++) { past[`past_key_values.${i}.key`] = r[`present.${i}.key`]; past[`past_key_values.${i}.value`] = r[`present.${i}.value`] }
    ids = [200 + step]
  }
  s.endProfiling()
  await s.release()
  const file2 = readdirSync(dir).map(x => join(dir, x))[0]
  const events = JSON.parse(readFileSync(file2, 'utf8')) as Array<{ cat: string, name: string, dur: number, args?: { op_name?: string } }>
  rmSync(dir, { recursive: true, force: true })
  const runs = events.filter(e => e.cat === 'Session' && e.name === 'model_run').length
  const byOp = new Map<string, number>()
  let kernel = 0
  let nodes = 0
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue
    const op = e.args?.op_name ?? '?'
    byOp.set(op, (byOp.get(op) ?? 0) + e.dur)
    kernel += e.dur
    nodes++
  }
  return {
    mode,
    mib: bytes.length / 2 ** 20,
    nodes: Math.round(nodes / runs),
    stepMs: median(times),
    kernelMs: kernel / runs / 1000,
    ops: [...byOp.entries()].sort((a, b) => b[1] - a[1]).slice(0, 6).map(([k, v]) => [k, v / runs / 1000])
  }
}

export async function runGraphProfile (opts: { quick: boolean, log: (s: string) => void }): Promise<GraphFigures[]> {
  const out: GraphFigures[] = []
  for (const [id, name] of [['smollm2', 'SmolLM2-135M-Instruct Q4_1'], ['gemma3', 'Gemma 3 270M Q4_K_M']] as const) {
    const w = realWeights(id)
    if (w.skip !== false) { out.push({ model: name, skipped: w.skip, modes: [] }); continue }
    const fig: GraphFigures = { model: name, modes: [] }
    for (const mode of ['q8', 'q4', 'f32'] as const) {
      const m = await profile(w.path, mode, 2, opts.quick ? 10 : 40)
      opts.log(`  ${name} ${mode}: ${m.mib.toFixed(0)} MiB, ${m.nodes} nodes, ${m.stepMs.toFixed(1)} ms a step`)
      fig.modes.push(m)
    }
    out.push(fig)
  }
  return out
}

export function graphMarkdown (r: GraphFigures[]): string {
  const lines = [
    'One ONNX Runtime session (2 intra-op threads, graph optimisation "all") per conversion mode, in this process; a 32-token prefill, then decode steps of one token with the KV cache; ORT\'s own profiler gives the nodes run per step and the kernel time per operator type (the difference to the step time is ORT\'s per-run and per-node overhead). Median step time over the decode steps. `q8` is the default conversion (docs/decisions.md).',
    ''
  ]
  for (const m of r) {
    lines.push(`**${m.model}**${m.skipped != null ? `: skipped, ${m.skipped}` : ''}`, '')
    if (m.modes.length === 0) continue
    lines.push('| mode | ONNX MiB | nodes a step | decode step ms (tok/s) | kernel ms | top operators (ms a step) |', '| --- | ---: | ---: | ---: | ---: | --- |')
    for (const x of m.modes) lines.push(`| ${x.mode} | ${x.mib.toFixed(0)} | ${x.nodes} | ${x.stepMs.toFixed(1)} (${(1000 / x.stepMs).toFixed(1)}) | ${x.kernelMs.toFixed(1)} | ${x.ops.map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')} |`)
    lines.push('')
  }
  return lines.join('\n')
}
