/**
 * npm run bench [-- --only gossip,stream,dashboard] [--sizes 3,10,20] [--quick]
 * (`real`, the real-model comparison with llama.cpp, and `resilience`, kill -9 / migration / desired-state
 * convergence over real agents (~7 min), run only when named: --only real,resilience; so is `pipecores`, the
 * pipeline on two pinned boxes over loopback, for a machine with cores to spare: --only pipecores [--box-width 2] [--cores 0,2])
 * Runs the benchmarks and writes their sections of BENCHMARKS.md.
 */
import { parseArgs } from 'node:util'
import { runGossipSize, gossipMarkdown } from './gossip.ts'
import type { GossipSizeResult } from './gossip.ts'
import { runStreamBench, streamMarkdown } from './stream.ts'
import { syncReadme, writeSection } from './report.ts'
import { runInferenceBench, inferenceMarkdown } from './inference.ts'
import { runSchedulerBench } from './scheduler.ts'
import { runVdagBench, vdagMarkdown } from './vdag.ts'
import { runActivationBench, activationMarkdown } from './activations.ts'
import { runTunnelBench, tunnelMarkdown } from './tunnel.ts'
import { runDashboardBench, dashboardMarkdown } from './dashboard.ts'
import { runRealModelBench, realModelMarkdown } from './real-model.ts'
import { runGraphProfile, graphMarkdown } from './graph-profile.ts'
import { runLoadBench, loadMarkdown } from './load.ts'
import { runResilienceBench, resilienceMarkdown } from './resilience.ts'
import { runPipelineBench, pipelineMarkdown } from './pipeline.ts'
import { runPipelineCoresBench, pipelineCoresMarkdown } from './pipeline-cores.ts'
import { runKvCopyBench, kvCopyMarkdown } from './kv-copy.ts'
import { runContentBench, contentMarkdown, UPLINK } from './content.ts'
import { runTensorParallelBench, tensorParallelMarkdown } from './tensor-parallel.ts'
import { runPrefillMixBench, prefillMixMarkdown } from './prefill-mix.ts'
import { runVdagDriverBench, vdagDriverMarkdown } from './vdag-driver.ts'

const { values } = parseArgs({
  options: {
    only: { type: 'string' },
    sizes: { type: 'string', default: '3,10,20' },
    quick: { type: 'boolean', default: false },
    cores: { type: 'string' },
    'box-width': { type: 'string' }
  }
})
const only = new Set((values.only ?? 'scheduler,gossip,stream,inference,vdag,activations,tunnel,pipeline,vdagdriver,tp,kvcopy,prefillmix,content,load,dashboard').split(',').map(s => s.trim()))
const log = (s: string): void => { process.stdout.write(s + '\n') }

const known = ['scheduler', 'gossip', 'stream', 'inference', 'vdag', 'activations', 'tunnel', 'load', 'dashboard', 'real', 'graph', 'resilience', 'pipeline', 'pipecores', 'vdagdriver', 'tp', 'kvcopy', 'content', 'prefillmix']
for (const name of only) {
  if (!known.includes(name)) {
    process.stderr.write(`unknown benchmark ${JSON.stringify(name)}; known: ${known.join(', ')}\n`)
    process.exit(2)
  }
}

if (only.has('scheduler')) {
  log('scheduler: placement decisions over simulated meshes')
  writeSection('scheduler', 'Scheduler: one placement decision', await runSchedulerBench({ quick: values.quick, log }))
}

if (only.has('stream')) {
  log('stream: libp2p (Noise + Yamux) vs raw TCP on loopback')
  const r = await runStreamBench({
    totalMiB: values.quick ? 64 : 256, frameBytes: 1024 * 1024, rounds: values.quick ? 2 : 5, echoBytes: 4096, echoCount: values.quick ? 1000 : 5000
  }, log)
  writeSection('stream', 'libp2p stream vs raw TCP (loopback)', streamMarkdown(r))
}

if (only.has('gossip')) {
  const sizes = values.sizes.split(',').map(Number).filter(n => Number.isInteger(n) && n >= 2)
  log(`gossip convergence for ${sizes.join(', ')} agent processes`)
  const results: GossipSizeResult[] = []
  for (const n of sizes) results.push(await runGossipSize(n, values.quick ? 2 : 5, 2000, log))
  writeSection('gossip', 'Capacity gossip convergence', gossipMarkdown(results))
}
syncReadme()
if (only.has('inference')) {
  log('inference: API vs bare ONNX Runtime, bandwidth limit, concurrent streams')
  const r = await runInferenceBench({ quick: values.quick, log })
  writeSection('inference', 'Inference on one agent', inferenceMarkdown(r))
}
if (only.has('vdag')) {
  log('vdag: a model split into 2 and 3 stages across agent processes vs whole')
  const v = await runVdagBench({ quick: values.quick, log })
  writeSection('vdag', 'vDAG: a model served across peers', vdagMarkdown(v))
}
if (only.has('activations')) {
  log('activations: a decode hop (4 KiB step, small result) over PeerLinks on /blockmesh/pipeline/1.0.0 vs raw TCP (and the old tensor protocol)')
  writeSection('activations', 'Pipeline hop: a decode step over /blockmesh/pipeline/1.0.0 ÷ raw TCP (loopback)', activationMarkdown(await runActivationBench({ quick: values.quick, hidden: 1024, log })))
}
if (only.has('tunnel')) {
  log('tunnel: small completions through one agent, direct vs via a peer (token by token for onnx, the byte tunnel for an external system)')
  writeSection('tunnel', 'Serving through a peer: the hop\'s cost', tunnelMarkdown(await runTunnelBench({ quick: values.quick, log })))
}
if (only.has('pipeline')) {
  log('pipeline: 2 stages on two pinned cores in their own namespaces (Toxiproxy link at 0.2 / 5 / 50 ms RTT) vs the whole model on one')
  writeSection('pipeline', 'Pipeline on separate boxes: 2 stages on two cores vs the whole model on one', pipelineMarkdown(await runPipelineBench({ quick: values.quick, log })))
}
if (only.has('vdagdriver')) {
  log('vdagdriver: a 2-stage vDAG asked through an agent outside it, driven by the first stage\'s host vs by that agent (Toxiproxy links at 0 / 10 / 50 ms RTT)')
  writeSection('vdagdriver', 'Where a vDAG\'s driver runs: the first stage\'s host vs the agent that got the request', vdagDriverMarkdown(await runVdagDriverBench({ quick: values.quick, log })))
}
if (only.has('pipecores')) {
  const width = Number(values['box-width'] ?? 1)
  const cores = values.cores?.split(',')
  if (!Number.isInteger(width) || width < 1 || (cores != null && (cores.length !== 2 || !cores.every(c => /^\d+(-\d+)?$/.test(c))))) {
    process.stderr.write(`--box-width takes a CPU count and --cores two taskset CPU lists, e.g. --cores 0,2 or --cores 0-1,2-3 (got ${JSON.stringify(values['box-width'])}, ${JSON.stringify(values.cores)})\n`)
    process.exit(2)
  }
  log(`pipecores: 2 stages on two pinned boxes of ${width} CPU(s) over loopback vs the whole model on one (for machines with cores to spare)`)
  const title = width === 1 ? 'Pipeline on two pinned cores of a larger machine (loopback)' : `Pipeline on two pinned boxes of ${width} CPUs each, one for the model (loopback)`
  writeSection(width === 1 ? 'pipecores' : `pipecores-${width}`, title, pipelineCoresMarkdown(await runPipelineCoresBench({ quick: values.quick, width, cores: cores as [string, string] | undefined, log })))
}
if (only.has('tp')) {
  log('tp: tensor parallelism, 2 ranks on two pinned cores with an all-reduce per segment over PeerLinks, vs the whole model on one core')
  writeSection('tp', 'Tensor parallelism: 2 ranks on two cores vs the whole model on one', tensorParallelMarkdown(await runTensorParallelBench({ quick: values.quick, log })))
}
if (only.has('prefillmix')) {
  log('prefillmix: a long prompt arriving while streams decode, in chunks vs in one run')
  writeSection('prefillmix', 'A long prompt while others decode: prompts in chunks vs in one run', prefillMixMarkdown(await runPrefillMixBench({ quick: values.quick, log })))
}

if (only.has('kvcopy')) {
  log('kvcopy: a batched decode step with and without its KV cache copied out of ONNX Runtime; the engine keeping the cache vs taking present.* back')
  writeSection('kvcopy', 'Decode step: what handing the KV cache back to JavaScript costs, and the engine keeping it', kvCopyMarkdown(await runKvCopyBench({ quick: values.quick, log })))
}
if (only.has('content')) {
  log(`content: a ~116 MiB model to 1, 2 and 4 new hosts, every uplink at ${UPLINK / 1024 ** 2} MiB/s: mesh fetch vs one HTTP server; one host's mesh throughput ÷ raw TCP`)
  writeSection('content', 'Models peer to peer: deploying a model file to new hosts, mesh vs one HTTP server', contentMarkdown(await runContentBench({ quick: values.quick, log })))
}
if (only.has('load')) {
  log('load: 100 concurrent streamed chats through one agent, to a block on 3 agents and to a 3-stage vDAG')
  writeSection('load', 'Load: 100 concurrent streamed chats through one agent', loadMarkdown(await runLoadBench({ quick: values.quick, log })))
}
if (only.has('dashboard')) {
  log('dashboard: live updates over the event stream vs polling')
  writeSection('dashboard', 'Dashboard live updates: event stream vs polling', dashboardMarkdown(await runDashboardBench({ quick: values.quick, log })))
}
if (only.has('graph')) {
  log('graph: where a converted model\'s decode step spends its time, per conversion mode (ORT profiler)')
  writeSection('graph', 'Converted models: decode step by operator and conversion mode', graphMarkdown(await runGraphProfile({ quick: values.quick, log })))
}
if (only.has('resilience')) {
  const sizes = values.sizes.split(',').map(Number).filter(n => Number.isInteger(n) && n >= 2)
  log(`resilience: kill -9, request migration, desired-state convergence for ${sizes.join(', ')} agents and after a partition, replication at rest`)
  writeSection('resilience', 'Resilience: kill -9, request migration, desired-state convergence', resilienceMarkdown(await runResilienceBench({ quick: values.quick, sizes, log })))
}
if (only.has('real')) {
  log('real: SmolLM2-135M and Gemma 3 270M GGUFs, Blockmesh vs llama.cpp (llama-cpp-python server), same threads')
  writeSection('real', 'Real models: Blockmesh vs llama.cpp (same GGUF, same threads)', realModelMarkdown(await runRealModelBench({ quick: values.quick, log })))
}
syncReadme()
log('wrote BENCHMARKS.md (and its copy in README.md)')
process.exit(0)
