/**
 * Pipeline on separate boxes (issue 14): two agent processes, each pinned to its own core (taskset)
 * and in its own network namespace with its own IP (test/helpers/netns.ts), their only link through
 * Toxiproxy (latency toxics: this kernel has no netem). The ~100M generated model whole on box A (one
 * core, one ONNX Runtime thread) against the same model split into 2 stages, one per box (one
 * thread each), requests sent to box A (which drives the pipeline). Single-stream decode tokens/s and
 * aggregate tokens/s with 8 streams, at link RTTs of ~0.2 ms (the proxy alone), 5 ms and 50 ms.
 *
 *   npm run bench -- --only pipeline        (root, iproute2, nft and toxiproxy-server: scripts/install-chaos-tools.sh)
 */
import os from 'node:os'
import { AgentProcess, stopAll, until } from '../test/helpers/agents.ts'
import { componentSpec, deploy, splitAndDeploy } from '../test/helpers/models.ts'
import { NetLab, Toxiproxy } from '../test/helpers/netns.ts'
import { existsSync, readFileSync } from 'node:fs'
import { ensureGeneratedModel } from '../agent/model/cache.ts'
import { PRESETS, parameterCount } from '../agent/model/spec.ts'
import { KNOWN_MODELS, cachedWeightPath } from '../agent/model/known-models.ts'
import { aggregate, apiStream, timedStream } from './inference.ts'
import { addModel } from './real-model.ts'
import { median } from './stats.ts'

/** One link setting: the latency toxic on each direction (ms), and what the round trip then is. */
interface LinkSetting { name: string, rtt: string, up: number, down: number }
/** The boxes connected directly (no proxy: the proxy's own CPU is on the same two cores). */
const DIRECT: LinkSetting = { name: 'direct', rtt: '< 0.1 ms (veth, no proxy)', up: 0, down: 0 }
const LINKS: LinkSetting[] = [
  { name: 'LAN', rtt: '~0.2 ms (the proxy alone)', up: 0, down: 0 },
  { name: 'metro', rtt: '5 ms', up: 2, down: 3 },
  { name: 'WAN', rtt: '50 ms', up: 25, down: 25 }
]

export interface PipelineFigures {
  model: string
  parameters: number
  /** tokens/s, single stream, rounds */
  whole1: number[]
  /** tokens/s in all, 8 streams, rounds (interleaved with the split's on the lab's first link) */
  whole8: number[]
  /** per link setting */
  split1: Record<string, number[]>
  split8: Record<string, number[]>
  /** 16 streams (the lab with the direct link only): the whole model with maxBatch 8 and with maxBatch 16, and the split (2 micro-batches of 8) */
  whole16?: number[]
  whole16b?: number[]
  split16?: number[]
  /**
   * 8 streams with long prompts (the lab with the direct link only): distinct prompts of about
   * `promptTokens` tokens each, 64 new tokens. all: completion tokens ÷ wall time (prefill included);
   * decode: tokens of all streams while all 8 were decoding ÷ that window. Rounds, interleaved.
   */
  long?: { promptTokens: number, whole: number[], split: number[], wholeDecode: number[], splitDecode: number[], replicas: number[], replicasDecode: number[], ceiling?: Ceiling }
  /** 8 streams (short prompts, the lab with the direct link): the whole model as two replicas, one per box, requests to box-a (which serves half and forwards half), rounds */
  replicas8?: number[]
  /** the decode ceilings with 8 and 16 streams: see Ceiling */
  ceiling8?: Ceiling
  ceiling16?: Ceiling
  placement: string[]
  /** the link settings measured (in one lab: direct, or through the proxy) */
  links: LinkSetting[]
}

/**
 * What the pipeline could reach if neither box ever waited: the whole model's decode compute per token
 * ÷ the busier box's stage decode compute per token, both read from the agents' own step metrics
 * (blockmesh_model_step_seconds, blockmesh_decode_batch_size) over the same runs. Ratios below it are
 * time a box spent waiting for the other (the link, the hand-offs, run times that differ).
 */
export interface Ceiling { wholeMsPerToken: number, stageMsPerToken: number[], ratio: number }

export interface PipelineResult { figures: PipelineFigures[], cores: number, cpu: string, date: string, skipped?: string }

export function pipelineBenchUnavailable (): string | null {
  return NetLab.available() ?? Toxiproxy.available()
}

export async function runPipelineBench (opts: { quick: boolean, log: (s: string) => void }): Promise<PipelineResult> {
  const { log } = opts
  const result: PipelineResult = { figures: [], cores: os.availableParallelism(), cpu: os.cpus()[0]?.model ?? 'unknown', date: new Date().toISOString().slice(0, 10) }
  const why = pipelineBenchUnavailable()
  if (why != null) { result.skipped = why; log(`pipeline: skipped (${why})`); return result }
  // first the boxes linked directly, then through the proxy at three latencies (a lab each)
  for (const direct of [true, false]) await oneLab(direct)
  return result

  async function oneLab (direct: boolean): Promise<void> {
    const lab = NetLab.create(2)
    const agents: AgentProcess[] = []
    let tp: Toxiproxy | undefined
    try {
      const [ha, hb] = [lab.host(0), lab.host(1)]
      // each box: one core, one ONNX Runtime thread per model
      const b = await AgentProcess.start({ name: 'box-b', cluster: 'box-b', netns: hb.ns, listenIp: hb.ip, cpus: '1', extra: ['--inference-threads', '1'] })
      agents.push(b)
      let proxy: Toxiproxy | undefined
      let bootstrap = b.addr
      if (!direct) {
        proxy = tp = await lab.startToxiproxy()
        const port = Number(/\/tcp\/(\d+)/.exec(b.addr)?.[1])
        await proxy.createProxy('a-to-b', 20001, `${hb.ip}:${port}`)
        // the boxes reach each other only through the proxy
        lab.partition([[0], [1]])
        bootstrap = `/ip4/${proxy.host.ip}/tcp/20001/p2p/${b.peerId}`
      }
      const links = direct ? [DIRECT] : LINKS
      const a = await AgentProcess.start({ name: 'box-a', cluster: 'box-a', netns: ha.ns, listenIp: ha.ip, cpus: '0', extra: ['--inference-threads', '1'], bootstrap: [bootstrap] })
      agents.push(a)
      await until(async () => (await a.peers()).length === 2 && (await b.peers()).length === 2, 'the two boxes to see each other', 60_000)
      const names = new Map([[a.peerId, 'box-a'], [b.peerId, 'box-b']])

      /** The whole model on box-a and its 2-stage split on both boxes, measured over each link setting. */
      const measure = async (label: string, parameters: number, whole: string, whole16: string, split: string, replicas: string | null, tokens: number, aggTokens: number, longChars: number): Promise<void> => {
        const placement = await twoBoxPlacement(a, split, names)
        log(`  ${label}: stages on ${placement.join(' → ')}, requests to box-a`)
        const rounds = opts.quick ? 2 : 3
        const fig: PipelineFigures = { model: label, parameters, whole1: [], whole8: [], split1: {}, split8: {}, placement, links }
        for (const link of links) {
          if (proxy != null) for (const t of (await proxy.proxy('a-to-b')).toxics) await proxy.removeToxic('a-to-b', String(t.name))
          if (proxy != null && link.up > 0) await proxy.addToxic('a-to-b', { name: 'up', type: 'latency', stream: 'upstream', attributes: { latency: link.up, jitter: 0 } })
          if (proxy != null && link.down > 0) await proxy.addToxic('a-to-b', { name: 'down', type: 'latency', stream: 'downstream', attributes: { latency: link.down, jitter: 0 } })
          await apiStream(a, split, 8) // warm-up through this link
          fig.split1[link.name] = []
          fig.split8[link.name] = []
          const baseline = link.name === links[0].name
          if (baseline) await apiStream(a, whole, 8)
          for (let r = 0; r < rounds; r++) {
            if (baseline) fig.whole1.push((await apiStream(a, whole, tokens)).tps)
            fig.split1[link.name].push((await apiStream(a, split, tokens)).tps)
            log(`  ${label} ${link.name} round ${r + 1}: ${baseline ? `whole ${fig.whole1.at(-1)?.toFixed(1)}, ` : ''}2 stages ${fig.split1[link.name].at(-1)?.toFixed(1)} tok/s`)
          }
          // 8 streams: the whole model and the split in turn, round after round, so that the machine's
          // slow and fast spells (other tenants of this VM) fall on both alike
          const busy8 = baseline ? new StepMeter([a, b], whole, split) : null
          for (let r = 0; r < rounds; r++) {
            if (baseline) fig.whole8.push(await busy8!.whole(async () => await aggregate(a, whole, 8, aggTokens)))
            fig.split8[link.name].push(busy8 != null ? await busy8.split(async () => await aggregate(a, split, 8, aggTokens)) : await aggregate(a, split, 8, aggTokens))
            if (baseline && replicas != null) (fig.replicas8 ??= []).push(await aggregate(a, replicas, 8, aggTokens))
            log(`  ${label} ${link.name} 8 streams round ${r + 1}: ${baseline ? `whole ${fig.whole8.at(-1)?.toFixed(1)}, ` : ''}2 stages ${fig.split8[link.name].at(-1)?.toFixed(1)} tok/s in all`)
          }
          if (busy8 != null) fig.ceiling8 = busy8.ceiling()
          if (baseline && direct) {
            // 16 streams: more than one box batches (maxBatch 8): the split runs two micro-batches of 8;
            // the whole model once with the same maxBatch 8 and once with maxBatch 16 (one batch of 16)
            fig.whole16 = []
            fig.whole16b = []
            fig.split16 = []
            const busy16 = new StepMeter([a, b], whole16, split)
            await aggregate(a, whole16, 16, 4) // warm-up: the wider batch's first run
            for (let r = 0; r < rounds; r++) {
              fig.whole16.push(await aggregate(a, whole, 16, aggTokens))
              fig.whole16b.push(await busy16.whole(async () => await aggregate(a, whole16, 16, aggTokens)))
              fig.split16.push(await busy16.split(async () => await aggregate(a, split, 16, aggTokens)))
              log(`  ${label} 16 streams round ${r + 1}: whole (maxBatch 8) ${fig.whole16.at(-1)?.toFixed(1)}, whole (maxBatch 16) ${fig.whole16b.at(-1)?.toFixed(1)}, 2 stages ${fig.split16.at(-1)?.toFixed(1)} tok/s in all`)
            }
            fig.ceiling16 = busy16.ceiling()
            // 8 streams with long prompts: the per-sequence part of a step (the KV cache each row reads)
            // grows with the context, and that part is what the two boxes split
            const prompts = Array.from({ length: 8 }, (_, i) => longPrompt(i, longChars))
            const long = { promptTokens: 0, whole: [] as number[], split: [] as number[], wholeDecode: [] as number[], splitDecode: [] as number[], replicas: [] as number[], replicasDecode: [] as number[] }
            const busyLong = new StepMeter([a, b], whole, split)
            await longAggregate(a, split, prompts.slice(0, 1), 4) // warm-up: the long prompt's first runs
            for (let r = 0; r < rounds; r++) {
              const wr = await busyLong.whole(async () => await longAggregate(a, whole, prompts, aggTokens))
              const sr = await busyLong.split(async () => await longAggregate(a, split, prompts, aggTokens))
              const rr = replicas != null ? await longAggregate(a, replicas, prompts, aggTokens) : { all: NaN, decode: NaN, promptTokens: 0 }
              long.promptTokens = wr.promptTokens
              long.whole.push(wr.all); long.split.push(sr.all); long.wholeDecode.push(wr.decode); long.splitDecode.push(sr.decode)
              long.replicas.push(rr.all); long.replicasDecode.push(rr.decode)
              log(`  ${label} 8 streams, prompts of ${wr.promptTokens} tokens, round ${r + 1}: whole ${wr.all.toFixed(1)} (decode ${wr.decode.toFixed(1)}), 2 stages ${sr.all.toFixed(1)} (decode ${sr.decode.toFixed(1)}), 2 replicas ${rr.all.toFixed(1)} (decode ${rr.decode.toFixed(1)}) tok/s in all`)
            }
            fig.long = { ...long, ceiling: busyLong.ceiling() }
          }
        }
        result.figures.push(fig)
      }

      /** The whole model as a block on box-a (one ONNX Runtime thread), batching up to `maxBatch` sequences. */
      const wholeBlock = async (id: string, component: string, maxBatch: number): Promise<void> => {
        const created = await a.api('/api/blocks', { method: 'POST', body: { id, component, threads: 1, maxBatch, policy: { cluster: { names: ['box-a'] } } } })
        if (created.status !== 201) throw new Error(`block ${id}: ${created.status} ${JSON.stringify(created.body)}`)
        await until(async () => (await a.api(`/api/blocks/${id}`)).body.status === 'ready', `${id} to load`, 600_000, 250)
      }

      /** The whole model as two replicas, one per box (the lab with the direct link): round robin, no session affinity. */
      const replicaBlock = async (id: string, component: string): Promise<string | null> => direct ? await replicasOnBoth(a, b, id, component, log) : null

      // the generated ~100M model
      const m = await ensureGeneratedModel({ ...PRESETS['100m'], seed: 1 }, '.blockmesh/bench-models', 'gpt-100m', log)
      const tag = m.md5.slice(0, 6)
      const block = await deploy(a, componentSpec(m, `pipe-bench-${tag}`, { contextLength: m.spec.maxPositions }), { id: `whole-${tag}`, component: `pipe-bench-${tag}:${m.md5.slice(0, 8)}`, maxBatch: 8, threads: 1, policy: { cluster: { names: ['box-a'] } } })
      if (block.status !== 'ready') throw new Error(`block whole-${tag}: ${block.error as string}`)
      await splitAndDeploy(a, { modelName: `p2-${tag}`, modelPath: m.path, worldSize: 2, config: { vdag_name: `p2-${tag}`, block: { threads: 1, maxBatch: 8 } } })
      if (direct) await wholeBlock(`whole16-${tag}`, `pipe-bench-${tag}:${m.md5.slice(0, 8)}`, 16)
      const replicas = await replicaBlock(`replicas-${tag}`, `pipe-bench-${tag}:${m.md5.slice(0, 8)}`)
      await measure('~100M (generated)', parameterCount(m.spec), `whole-${tag}`, `whole16-${tag}`, `p2-${tag}`, replicas, opts.quick ? 16 : 40, opts.quick ? 8 : 64, 480)

      // SmolLM2-135M-Instruct (GGUF Q4_1, converted on box-a), when its weights are on this machine
      const gguf = cachedWeightPath('smollm2')
      if (existsSync(gguf)) {
        const model = await addModel(a, gguf, KNOWN_MODELS.smollm2.name, 'q8', log)
        await wholeBlock('whole-smollm2', model.uri, 8)
        if (direct) await wholeBlock('whole16-smollm2', model.uri, 16)
        const smolReplicas = await replicaBlock('replicas-smollm2', model.uri)
        const spec = model.spec
        await splitAndDeploy(a, { modelName: 'p2-smollm2', modelPath: spec.model.url, worldSize: 2, config: { vdag_name: 'p2-smollm2', md5: spec.model.md5, tokenizer: spec.tokenizer, context_length: spec.contextLength, block: { threads: 1, maxBatch: 8 } } })
        await measure('SmolLM2-135M Q4_1', spec.modelInfo?.parameters ?? 135e6, 'whole-smollm2', 'whole16-smollm2', 'p2-smollm2', smolReplicas, opts.quick ? 16 : 40, opts.quick ? 8 : 64, 2000)
      } else {
        log(`  SmolLM2: skipped (no ${gguf}; scripts/fetch-weights.sh fetches it)`)
      }
    } finally {
      await stopAll(agents)
      await tp?.stop()
      lab.destroy()
    }
  }
}

/** The route of a 2-stage split once its vDAG is ready, as box names; throws unless its stages are on the two boxes. */
export async function twoBoxPlacement (a: AgentProcess, split: string, names: Map<string, string>): Promise<string[]> {
  const v = await until(async () => {
    const r = (await a.api(`/api/vdags/${split}`)).body
    return r.ready === true && Array.isArray(r.route) ? r : undefined
  }, `vDAG ${split} to be ready`, 600_000, 250)
  const placement = (v.route as Array<{ peer: string }>).map(h => names.get(h.peer) ?? h.peer.slice(0, 8))
  if (new Set(placement).size !== 2) throw new Error(`the two stages are not on the two boxes: ${placement.join(' → ')}`)
  return placement
}

/**
 * The whole model as two replicas, one per box (clusters box-a and box-b; round robin, no session
 * affinity), routed by box-a and warmed up: its id, or null (logged) when the replicas did not land one per box.
 */
export async function replicasOnBoth (a: AgentProcess, b: AgentProcess, id: string, component: string, log: (s: string) => void): Promise<string | null> {
  const created = await a.api('/api/blocks', { method: 'POST', body: { id, component, threads: 1, maxBatch: 8, minInstances: 2, maxInstances: 2, policy: { cluster: { names: ['box-a', 'box-b'] } }, loadBalancing: { strategy: 'round-robin', sessionAffinity: false, sessionTtl: 600 } } })
  if (created.status !== 201) throw new Error(`block ${id}: ${created.status} ${JSON.stringify(created.body)}`)
  const blk = await until(async () => { const r = (await a.api(`/api/blocks/${id}`)).body; return r.instances?.filter((i: { status: string }) => i.status === 'ready').length === 2 ? r : undefined }, `${id}'s two replicas to load`, 600_000, 250)
  const hosts = new Set(blk.instances.map((i: { peerId: string }) => i.peerId))
  if (!hosts.has(a.peerId) || !hosts.has(b.peerId)) { log(`  ${id}: the replicas are not one per box, not measured: ${JSON.stringify(blk.instances)}`); return null }
  await until(async () => (await a.api('/v1/models')).body.data.some((x: { id: string }) => x.id === id), `box-a to route ${id}`, 60_000)
  for (let i = 0; i < 2; i++) await apiStream(a, id, 4) // warm-up: each replica's first run
  return id
}

const CORPUS = readFileSync(new URL('../agent/model/corpus.txt', import.meta.url), 'utf8').replace(/\s+/g, ' ')

/** A prompt of `chars` characters of the corpus, starting at a different place for each stream. */
function longPrompt (i: number, chars: number): string {
  let text = ''
  while (text.length < chars + 97 * i) text += CORPUS + ' '
  return text.slice(97 * i, 97 * i + chars)
}

interface LongRound { all: number, decode: number, promptTokens: number }

/**
 * One request per prompt at once, streamed, each token timed at the client. all: completion tokens ÷ wall
 * time; decode: the tokens all streams produced while every one of them was decoding (from the last first
 * token to the first last token) ÷ that window, so prefill counts in neither engine's decode figure.
 */
async function longAggregate (agent: AgentProcess, model: string, prompts: string[], n: number): Promise<LongRound> {
  const t0 = performance.now()
  const streams = await Promise.all(prompts.map(async prompt => await timedStream(agent, model, prompt, n)))
  const wall = (performance.now() - t0) / 1000
  const from = Math.max(...streams.map(s => s.times[0] ?? Infinity))
  const to = Math.min(...streams.map(s => s.times.at(-1) ?? -Infinity))
  const inWindow = streams.reduce((sum, s) => sum + s.times.filter(t => t > from && t <= to).length, 0)
  return {
    all: streams.reduce((sum, s) => sum + s.usage.completion_tokens, 0) / wall,
    decode: to > from ? inWindow / ((to - from) / 1000) : NaN,
    promptTokens: median(streams.map(s => s.usage.prompt_tokens))
  }
}

/**
 * Reads the agents' step metrics around runs of the whole model and of the split, adding up the model's
 * decode compute (blockmesh_model_step_seconds, kind decode / stage-decode) and the tokens it decoded
 * (blockmesh_decode_batch_size's sum), per block: for the Ceiling.
 */
export class StepMeter {
  private readonly agents: AgentProcess[]
  private readonly wholeBlock: string
  private readonly splitBlocks: string[]
  private readonly totals = new Map<string, { seconds: number, tokens: number }>()

  constructor (agents: AgentProcess[], whole: string, split: string) {
    this.agents = agents
    this.wholeBlock = whole
    this.splitBlocks = [`${split}-s0`, `${split}-s1`]
  }

  async whole<T> (run: () => Promise<T>): Promise<T> { return await this.around([this.wholeBlock], 'decode', run) }
  async split<T> (run: () => Promise<T>): Promise<T> { return await this.around(this.splitBlocks, 'stage-decode', run) }

  ceiling (): Ceiling {
    const per = (block: string): number => { const t = this.totals.get(block); return t == null || t.tokens === 0 ? NaN : 1000 * t.seconds / t.tokens }
    const wholeMsPerToken = per(this.wholeBlock)
    const stageMsPerToken = this.splitBlocks.map(per)
    return { wholeMsPerToken, stageMsPerToken, ratio: wholeMsPerToken / Math.max(...stageMsPerToken) }
  }

  private async around<T> (blocks: string[], kind: string, run: () => Promise<T>): Promise<T> {
    const before = await Promise.all(blocks.map(async b => await this.read(b, kind)))
    const out = await run()
    const after = await Promise.all(blocks.map(async b => await this.read(b, kind)))
    blocks.forEach((b, i) => {
      const t = this.totals.get(b) ?? { seconds: 0, tokens: 0 }
      t.seconds += after[i].seconds - before[i].seconds
      t.tokens += after[i].tokens - before[i].tokens
      this.totals.set(b, t)
    })
    return out
  }

  /** A block's decode seconds and decoded tokens so far, on whichever agent runs it. */
  private async read (block: string, kind: string): Promise<{ seconds: number, tokens: number }> {
    let seconds = 0
    let tokens = 0
    for (const a of this.agents) {
      seconds += await a.metric('blockmesh_model_step_seconds_sum', { block, kind })
      tokens += await a.metric('blockmesh_decode_batch_size_sum', { block })
    }
    return { seconds, tokens }
  }
}

export function pipelineMarkdown (r: PipelineResult): string {
  if (r.skipped != null) return `Not measured on this machine: ${r.skipped}.`
  const rows: string[] = []
  const wide: string[] = []
  const x = (a: number, b: number): string => `**${(a / b).toFixed(2)}**`
  const ceiling = (c: Ceiling | undefined): string => c == null || !Number.isFinite(c.ratio) ? '' : `${c.ratio.toFixed(2)} (${c.wholeMsPerToken.toFixed(1)} ÷ ${Math.max(...c.stageMsPerToken).toFixed(1)} ms)`
  const long: string[] = []
  for (const f of r.figures) {
    if (f.long != null && f.long.whole.length > 0) {
      const l = f.long
      const [wa, sa, wd, sd] = [median(l.whole), median(l.split), median(l.wholeDecode), median(l.splitDecode)]
      const [ra, rd] = [median(l.replicas), median(l.replicasDecode)]
      long.push(`| ${f.model} | ${l.promptTokens} | ${wa.toFixed(1)} | ${sa.toFixed(1)} | ${x(sa, wa)} | ${Number.isFinite(ra) ? `${ra.toFixed(1)} | ${x(ra, wa)}` : '– | –'} | ${wd.toFixed(1)} | ${sd.toFixed(1)} | ${x(sd, wd)} | ${Number.isFinite(rd) ? `${rd.toFixed(1)} | ${x(rd, wd)}` : '– | –'} | ${ceiling(l.ceiling)} |`)
    }
    const w1 = median(f.whole1)
    const w8 = median(f.whole8)
    rows.push(`| ${f.model} | whole, box-a | ${f.links[0].name === 'direct' ? '(lab with a direct link)' : '(lab with the proxy)'} | ${w1.toFixed(1)} | 1 | ${w8.toFixed(1)} | 1 | |`)
    for (const link of f.links) {
      const s1 = median(f.split1[link.name])
      const s8 = median(f.split8[link.name])
      rows.push(`| ${f.model} | 2 stages, ${f.placement.join(' → ')} | ${link.name}: ${link.rtt} | ${s1.toFixed(1)} | ${x(s1, w1)} | ${s8.toFixed(1)} | ${x(s8, w8)} | ${link === f.links[0] ? ceiling(f.ceiling8) : ''} |`)
      if (link.name === 'direct' && f.replicas8 != null && f.replicas8.length > 0) {
        const r8 = median(f.replicas8)
        rows.push(`| ${f.model} | 2 replicas, one per box (requests to box-a) | ${link.name}: ${link.rtt} | | | ${r8.toFixed(1)} | ${x(r8, w8)} | |`)
      }
    }
    if (f.whole16 != null && f.whole16b != null && f.split16 != null && f.whole16.length > 0) {
      const [a, b, s] = [median(f.whole16), median(f.whole16b), median(f.split16)]
      wide.push(`| ${f.model} | ${a.toFixed(1)} | ${b.toFixed(1)} | ${s.toFixed(1)} | ${x(s, a)} | ${x(s, b)} | ${ceiling(f.ceiling16)} |`)
    }
  }
  return [
    `${r.date}, ${r.cpu}, ${r.cores} cores. Two "boxes" on this machine: each agent process pinned to its own core (\`taskset -c 0\` / \`-c 1\`), in its own network namespace with its own IP, the only link between them through Toxiproxy (latency toxics; RTT = the two directions' latencies added, plus ~0.2 ms for the proxy itself). ` +
    'Each model runs with one ONNX Runtime thread per box. Requests go to box-a, which hosts the whole model (baseline) and drives the pipeline. The pipeline is a ring on /blockmesh/pipeline/1.0.0: box-a runs stage 0 and sends the activations to box-b, box-b runs stage 1, samples, and sends the token back; with 8 streams the sequences go round in two micro-batches of 4, one on each box at a time, so both boxes work at once. ' +
    'Single stream: decode tokens/s timed at the client from the first to the last token, median of rounds. 8 streams: 8 concurrent requests of up to 64 tokens each (prefill included), total completion tokens ÷ wall time, median of rounds, the whole model and the split taking turns round after round (this VM has slow and fast spells of ±20%). Ratios are against the whole model on one box in the same lab. The first lab links the boxes directly (a veth pair each, through a bridge); the second only through Toxiproxy, whose own CPU use falls on the same two cores. ' +
    '"2 replicas": for a model that fits one box, the other way to use two: the whole model on each box (one block, two instances), box-a serving half of the requests and forwarding the other half to box-b over the mesh (round robin). ' +
    '"Decode ceiling": what the 8-stream ratio would be if neither box ever waited for the other, from the agents\' own step metrics over the same runs: the whole model\'s decode compute per token ÷ the busier box\'s stage decode compute per token.',
    '',
    '| model | served as | link | 1 stream tok/s | ÷ whole | 8 streams tok/s | ÷ whole | decode ceiling |',
    '| --- | --- | --- | ---: | ---: | ---: | ---: | --- |',
    ...rows,
    '',
    ...(wide.length > 0
      ? [
          'More streams than one box batches (the lab with the direct link): 16 concurrent requests. The split\'s stages keep maxBatch 8 and run two micro-batches of 8; the whole model once with the same maxBatch 8 (two batches of 8 take turns) and once with maxBatch 16 (one batch of 16).',
          '',
          '| model | whole, maxBatch 8 (tok/s) | whole, maxBatch 16 | 2 stages | ÷ whole (8) | ÷ whole (16) | decode ceiling vs maxBatch 16 |',
          '| --- | ---: | ---: | ---: | ---: | ---: | --- |',
          ...wide,
          ''
        ]
      : []),
    ...(long.length > 0
      ? [
          'Long prompts (the lab with the direct link): the same 8 streams, each with its own prompt of the length shown (corpus text), 64 new tokens. "All": completion tokens ÷ wall time, prefill included (the pipeline prefills one prompt on box-b while the next starts on box-a). "Decode": the tokens of all 8 streams while every one of them was decoding ÷ that window, so neither prefill counts. A decode step\'s per-sequence part (each row reads its own KV cache) grows with the context, and that is the part the two boxes split; the weights each box reads per step do not shrink with more rows.',
          '',
          '| model | prompt tokens | whole, all (tok/s) | 2 stages, all | ÷ whole | 2 replicas, all | ÷ whole | whole, decode | 2 stages, decode | ÷ whole | 2 replicas, decode | ÷ whole | decode ceiling (2 stages) |',
          '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
          ...long,
          ''
        ]
      : []),
    'Goals (issue 14): ≥ 0.85 single stream and ≥ 1.3 with 8 streams on the LAN link. For comparison, Petals publishes 1.66 steps/s at 100 Mbit/s with < 5 ms RTT and 1.23 at 100 ms RTT for its distributed Llama-2 70B (a single sequence: every token crosses every hop, so RTT adds to each step, as here).'
  ].join('\n')
}
