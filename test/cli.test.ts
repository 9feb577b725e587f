import { describe, test, after } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { cli, CliProcess, alive } from './helpers/cli.ts'
import { realWeights } from './helpers/weights.ts'
import { AgentProcess, stopAll, tempDir, until } from './helpers/agents.ts'
import { skipNamed } from './helpers/skip.ts'

const BIN = fileURLToPath(new URL('../agent/cli/bin.mjs', import.meta.url))

describe('CLI misuse: a clear message and exit code 2', () => {
  const dir = tempDir()
  const cases: Array<[string, string[], RegExp]> = [
    ['unknown command', ['frobnicate'], /unknown command/],
    ['unknown flag', ['agent', '--frobnicate'], /unknown option/],
    ['non-numeric port', ['agent', '--api-port', 'eighty'], /--api-port.*expected an integer/],
    ['port out of range', ['agent', '--api-port', '70000'], /expected 0-65535/],
    ['zero agents', ['demo', '--agents', '0'], /expected 1-64/],
    ['bad node name', ['agent', '--name', 'no spaces!', '--data-dir', dir], /--name: letters, digits/],
    ['bad multiaddr', ['agent', '--name', 'x', '--listen', 'tcp:7600', '--data-dir', dir], /not a multiaddr/],
    ['bad peer ID in the allow-list', ['agent', '--name', 'x', '--allow', 'nobody', '--data-dir', dir], /not a peer ID/],
    ['missing swarm key file', ['agent', '--name', 'x', '--swarm-key', join(dir, 'nope'), '--data-dir', dir], /cannot read swarm key file/],
    ['bad simulated GPU spec', ['agent', '--name', 'x', '--simulate-gpus', 'count=2', '--data-dir', dir], /memory=SIZE is required/],
    ['bad demo GPU spec', ['demo', '--simulate-gpus', 'count=2,memory=1GiB,util=500'], /utilisation/],
    ['bad API URL', ['peers', '--api', 'ftp://x'], /expected an http\(s\) URL/],
    ['bad log level', ['agent', '--name', 'x', '--log-level', 'loud', '--data-dir', dir], /--log-level/]
  ]
  for (const [what, args, re] of cases) {
    test(what, () => {
      const r = cli(args)
      assert.equal(r.code, 2, `exit code for ${args.join(' ')}: stderr ${r.stderr}`)
      assert.match(r.stderr, re)
    })
  }

  test('no agent state is left behind by a refused start', () => {
    assert.equal(existsSync(join(dir, 'agent.json')), false)
  })

  test('--help and --version exit 0', () => {
    const help = cli(['--help'])
    assert.equal(help.code, 0)
    assert.match(help.stdout, /agent.*demo.*peers/s)
    const version = cli(['--version'])
    assert.equal(version.code, 0)
    assert.equal(version.stdout.trim(), JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version)
  })

  test('an unreachable agent is a runtime failure (exit 1) with a hint', () => {
    const r = cli(['peers', '--api', 'http://127.0.0.1:1'])
    assert.equal(r.code, 1)
    assert.match(r.stderr, /cannot reach the agent API.*npm start/)
  })
})

// The machine's own Node (20 here) must be refused with an explanation, not a stack trace.
const systemNode = ['/usr/bin/node', '/usr/local/bin/node'].find(p => existsSync(p))
const systemMajor = systemNode != null ? Number(execFileSync(systemNode, ['-p', 'process.versions.node'], { encoding: 'utf8' }).split('.')[0]) : NaN
test('the blockmesh bin refuses an old system Node with a clear message', {
  skip: systemNode == null || systemMajor >= 22 ? `skipped: this machine has no Node older than 22 to try (found ${systemNode ?? 'none'} ${Number.isNaN(systemMajor) ? '' : 'v' + systemMajor})` : false
}, () => {
  const r = cli(['peers'], { node: systemNode, entry: BIN })
  assert.equal(r.code, 1)
  assert.match(r.stderr, /blockmesh needs Node >= 22/)
})

describe('blockmesh peers', () => {
  let a: AgentProcess, b: AgentProcess
  after(async () => { await stopAll([a, b]) })

  test('prints every peer with its capacity and last-seen age', async () => {
    a = await AgentProcess.start({ name: 'table-a', simulateGpus: 'count=2,model=A100,memory=80GiB,free=40GiB,util=50' })
    b = await AgentProcess.start({ name: 'table-b', bootstrap: [a.addr] })
    await until(async () => (await b.peers()).length === 2, 'b to see a')
    // each agent probes its execution providers in the background at start; its record carries them once known
    await until(async () => (await b.peers()).every(p => p.providers.length > 0), 'both records to carry providers')
    const r = cli(['peers', '--api', b.url], { entry: BIN })
    assert.equal(r.code, 0, r.stderr)
    const lines = r.stdout.trim().split('\n')
    assert.match(lines[0], /NAME\s+CLUSTER\s+PEER\s+STATUS\s+CPUS\s+LOAD 1\/5\/15\s+RAM AVAIL\/TOTAL\s+GPUS\s+LAST SEEN\s+PROVIDERS$/)
    const rowA = lines.find(l => l.startsWith('table-a '))
    const rowB = lines.find(l => l.startsWith('table-b *'))
    assert.ok(rowA != null && rowB != null, r.stdout)
    assert.match(rowA, /live .* 2x 80\.0GiB\/160GiB free 50% \(simulated\) .*\d(\.\d)?(ms|s) ago +cpu\b/)
    assert.match(rowB, / - +self +cpu\b/)
    const json = JSON.parse(cli(['peers', '--api', b.url, '--json']).stdout)
    assert.equal(json.peers.length, 2)
    for (const p of json.peers as Array<{ providers: Array<{ name: string, available: boolean, reason?: string }> }>) {
      assert.deepEqual(p.providers[0], { name: 'cpu', available: true }, 'the full list, CPU available')
      for (const q of p.providers) assert.ok(q.available || (q.reason ?? '') !== '', `a reason for ${q.name}`)
    }
  })
})

describe('blockmesh demo', () => {
  test('starts N agent processes, prints URLs, peer IDs, token and dashboard, serves the generated model (--no-real-model) whole and as a vDAG; SIGTERM stops them all', async () => {
    const dir = tempDir('bm-demo-')
    const demo = new CliProcess(['demo', '--agents', '2', '--base-port', '0', '--data-dir', dir, '--heartbeat-ms', '1000', '--no-real-model'])
    await demo.line(/Ctrl-C stops every agent/)
    assert.ok(demo.lines.some(l => /^mesh formed/.test(l)), demo.lines.join('\n'))
    const agentLines = demo.lines.filter(l => /^agent-\d+ /.test(l))
    assert.equal(agentLines.length, 2)
    for (const l of agentLines) assert.match(l, /api http:\/\/127\.0\.0\.1:\d+ +peer 12D3KooW\w+/)
    const token = (demo.lines.find(l => l.startsWith('token: ')) ?? '').slice(7)
    assert.equal(token, readFileSync(join(dir, 'agent-1', 'api-token'), 'utf8').trim(), 'one token for the demo')
    const dashboard = (demo.lines.find(l => l.startsWith('dashboard: ')) ?? '').slice(11)
    const page = await fetch(dashboard)
    assert.equal(page.status, 200)
    assert.match(await page.text(), /Blockmesh/)

    // the demo model, whole and as a 2-stage vDAG across both agents: the same greedy tokens
    const stages = demo.lines.find(l => l.startsWith('vDAG demo-gpt-pipeline ready: '))
    assert.ok(stages != null, demo.lines.join('\n'))
    assert.match(stages, /stage 0 on agent-(\d) → stage 1 on agent-(?!\1)\d$/)
    const ask = async (model: string): Promise<string> => {
      const url = (agentLines[1].match(/api (\S+)/) as RegExpMatchArray)[1]
      const r = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ model, prompt: 'The harbour', max_tokens: 16, temperature: 0 }) })
      assert.equal(r.status, 200)
      return ((await r.json()) as { choices: Array<{ text: string }> }).choices[0].text
    }
    assert.equal(await ask('demo-gpt-pipeline'), await ask('demo-gpt'))

    const pids = [0, 1].map(i => JSON.parse(readFileSync(join(dir, `agent-${i}`, 'agent.json'), 'utf8')).pid as number)
    assert.ok(pids.every(alive))
    demo.child.kill('SIGTERM')
    assert.equal(await demo.exit(), 0)
    await until(() => pids.every(p => !alive(p)), 'every agent process to exit')
    assert.ok(!existsSync(join(dir, 'agent-0', 'agent.json')), 'agents removed their ready files: a clean stop')
  })

  test(skipNamed('with the real model (what npm start does): SmolLM2 from the weight cache, served whole and as a 3-stage vDAG, answering the same', realWeights('smollm2').skip), { skip: realWeights('smollm2').skip }, async () => {
    const dir = tempDir('bm-demo-')
    const demo = new CliProcess(['demo', '--agents', '3', '--base-port', '0', '--data-dir', dir, '--heartbeat-ms', '1000'])
    try {
      await demo.line(/Ctrl-C stops every agent/, 300_000)
      assert.ok(demo.lines.some(l => /^smollm2: .* \(from the cache\)$/.test(l)), demo.lines.join('\n'))
      assert.ok(demo.lines.some(l => l.startsWith('block smollm2 ready on agent-0')), demo.lines.join('\n'))
      const stages = demo.lines.find(l => l.startsWith('vDAG smollm2-pipeline ready: '))
      assert.ok(stages != null, demo.lines.join('\n'))
      assert.match(stages, /stage 0 on agent-\d → stage 1 on agent-\d → stage 2 on agent-\d$/)
      const token = (demo.lines.find(l => l.startsWith('token: ')) ?? '').slice(7)
      const url = (demo.lines.find(l => /^agent-2 /.test(l))?.match(/api (\S+)/) as RegExpMatchArray)[1]
      const ask = async (model: string): Promise<string> => {
        const r = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ model, messages: [{ role: 'user', content: 'Which city is the capital of France?' }], max_tokens: 16, temperature: 0 }) })
        assert.equal(r.status, 200)
        return ((await r.json()) as { choices: Array<{ message: { content: string } }> }).choices[0].message.content
      }
      const whole = await ask('smollm2')
      assert.match(whole, /Paris/)
      assert.equal(await ask('smollm2-pipeline'), whole)
    } finally {
      demo.child.kill('SIGTERM')
      await demo.exit()
    }
  })

  test('agents do not outlive a supervisor that is killed outright', async () => {
    const dir = tempDir('bm-demo-')
    const demo = new CliProcess(['demo', '--agents', '2', '--base-port', '0', '--data-dir', dir, '--heartbeat-ms', '1000', '--no-real-model'])
    await demo.line(/Ctrl-C stops every agent/)
    const pids = [0, 1].map(i => JSON.parse(readFileSync(join(dir, `agent-${i}`, 'agent.json'), 'utf8')).pid as number)
    demo.child.kill('SIGKILL')
    await demo.exit()
    await until(() => pids.every(p => !alive(p)), 'orphaned agents to notice and exit')
  })
})

describe('blockmesh model / component / block', () => {
  let agent: AgentProcess
  after(async () => { await stopAll([agent]) })

  test('generate a model twice (same MD5), onboard it, deploy, list, get and delete a block from the CLI', async () => {
    const dir = tempDir('bm-cli-model-')
    const gen = (out: string): CliResultLike => cli(['model', 'generate', '--preset', 'tiny', '--seed', '9', '--out', join(dir, out), '--component', join(dir, 'component.json'), '--name', 'cli-gpt'])
    const a = gen('a.onnx')
    const b = gen('b.onnx')
    assert.equal(a.code, 0, a.stderr)
    const md5 = /md5 ([0-9a-f]{32})/.exec(a.stdout)?.[1]
    assert.ok(md5 != null, a.stdout)
    assert.equal(/md5 ([0-9a-f]{32})/.exec(b.stdout)?.[1], md5)
    assert.match(a.stdout, /0\.15M parameters \(2 layers, hidden 64, 4 heads/)
    const bad = cli(['model', 'generate', '--layers', '2', '--hidden', '64', '--heads', '5', '--out', join(dir, 'x.onnx')])
    assert.equal(bad.code, 2)
    assert.match(bad.stderr, /hidden must be a multiple of heads/)

    agent = await AgentProcess.start({ name: 'cli-target' })
    const target = ['--api', agent.url, '--token', agent.token]
    const c = cli(['component', 'create', '-f', join(dir, 'component.json'), ...target])
    assert.equal(c.code, 0, c.stderr)
    const uri = `cli-gpt:${md5.slice(0, 8)}`
    assert.match(c.stdout, new RegExp(uri))
    writeFileSync(join(dir, 'block.yaml'), `id: cli-block\ncomponent: "${uri}"\nmaxBatch: 4\n`)
    const created = cli(['block', 'create', '-f', join(dir, 'block.yaml'), ...target])
    assert.equal(created.code, 0, created.stderr)
    await until(async () => (await agent.api('/api/blocks/cli-block')).body.status === 'ready', 'the block to be ready')
    const list = cli(['block', 'list', '--api', agent.url])
    assert.match(list.stdout, /cli-block\s+cli-gpt:\w+\s+ready\s+1\/1\s+cli-target\(ready\)/)
    assert.equal(JSON.parse(cli(['block', 'get', 'cli-block', '--api', agent.url]).stdout).spec.maxBatch, 4)
    const scale = cli(['block', 'scale', 'cli-block', '--instances', '3', ...target])
    assert.equal(scale.code, 2, 'a scale outside minInstances..maxInstances is bad input')
    assert.match(scale.stderr, /between minInstances \(1\) and maxInstances \(1\)/)
    const same = cli(['block', 'scale', 'cli-block', '--instances', '1', ...target])
    assert.equal(same.code, 0, same.stderr)
    assert.match(same.stdout, /block cli-block: ready, 1 of 1 instance\(s\) placed\n  cli-block-\w+ on cli-target/)
    const noToken = cli(['block', 'delete', 'cli-block', '--api', agent.url, '--token-file', join(dir, 'missing')])
    assert.equal(noToken.code, 2)
    const wrongToken = cli(['block', 'delete', 'cli-block', '--api', agent.url, '--token', 'x'.repeat(43)])
    assert.equal(wrongToken.code, 1)
    assert.match(wrongToken.stderr, /401/)
    assert.equal(cli(['block', 'delete', 'cli-block', ...target]).code, 0)
    assert.equal((await agent.api('/api/blocks/cli-block')).status, 404)
    const badSpec = cli(['component', 'create', '-f', join(dir, 'block.yaml'), ...target])
    assert.equal(badSpec.code, 2, 'a spec the API rejects is bad input: exit 2')
    assert.match(badSpec.stderr, /400 invalid_request/)
  })
})
type CliResultLike = ReturnType<typeof cli>

describe('blockmesh split / task / vdag', () => {
  let agent: AgentProcess
  after(async () => { await stopAll([agent]) })

  test('split a model file, follow the task, deploy the plan, list and delete the vDAG from the CLI', async () => {
    const dir = tempDir('bm-cli-split-')
    assert.equal(cli(['model', 'generate', '--preset', 'tiny', '--seed', '5', '--out', join(dir, 'tiny.onnx')]).code, 0)
    agent = await AgentProcess.start({ name: 'cli-split' })
    const target = ['--api', agent.url, '--token', agent.token]
    const split = cli(['split', '--model', join(dir, 'tiny.onnx'), '--world-size', '2', '--deploy', '--vdag-name', 'tiny-cli', ...target], { timeoutMs: 120_000 })
    assert.equal(split.code, 0, split.stderr)
    assert.match(split.stderr, /started split task task-\w+/)
    assert.match(split.stdout, /model plan: vDAG tiny-cli, verified/)
    // two layers: too few to time (agent/splitter/calibrate.ts)
    assert.match(split.stdout, /verified \(max abs diff [^)]*\), cut by the bytes a step reads\n/)
    assert.match(split.stdout, /^0\s+0\.\.0\s+[0-9a-f]{32}/m)
    assert.match(split.stdout, /deployed vDAG tiny-cli: tiny-cli-s0 → tiny-cli-s1/)
    const id = /started split task (task-\w+)/.exec(split.stderr)?.[1] as string
    const tasks = JSON.parse(cli(['task', 'list', '--api', agent.url, '--json']).stdout)
    assert.equal(tasks[0].task_id, id)
    assert.equal(tasks[0].status, 'complete')
    assert.match(cli(['task', 'get', id, '--api', agent.url]).stdout, new RegExp(`^${id}  complete  100%  done\\nrunner local, image blockmesh/onnx-splitter, model tiny`))
    await until(async () => (await agent.api('/v1/models')).body.data.some((d: any) => d.id === 'tiny-cli'), 'the vDAG to serve')
    assert.match(cli(['vdag', 'list', '--api', agent.url]).stdout, /tiny-cli\s+yes\s+tiny-cli-s0 → tiny-cli-s1\s+256/)
    assert.deepEqual(JSON.parse(cli(['vdag', 'get', 'tiny-cli', '--api', agent.url]).stdout).stages, ['tiny-cli-s0', 'tiny-cli-s1'])
    const again = cli(['vdag', 'deploy', id, '--name', 'tiny-cli-2', ...target])
    assert.equal(again.code, 0, again.stderr)
    assert.match(again.stdout, /deployed vDAG tiny-cli-2: tiny-cli-s0 \(reused\) → tiny-cli-s1 \(reused\)/)
    assert.equal(cli(['vdag', 'delete', 'tiny-cli-2', ...target]).code, 0)
    assert.equal((await agent.api('/api/vdags/tiny-cli-2')).status, 404)

    // misuse: exit 2; a split that fails: exit 1 with the task's error
    const unknown = cli(['split', '--model', 'nope', '--world-size', '2', ...target])
    assert.equal(unknown.code, 2)
    assert.match(unknown.stderr, /--model: "nope" is neither a preset/)
    assert.equal(cli(['split', '--model', join(dir, 'tiny.onnx'), '--world-size', '0', ...target]).code, 2)
    assert.equal(cli(['split', '--world-size', '2', ...target]).code, 2)
    const tooMany = cli(['split', '--model', join(dir, 'tiny.onnx'), '--world-size', '5', '--wait', ...target], { timeoutMs: 120_000 })
    assert.equal(tooMany.code, 1)
    assert.match(tooMany.stderr, /failed: main: world_size 5 exceeds the model's 2 layers/)
    const missing = cli(['task', 'get', 'task-000000000000', '--api', agent.url])
    assert.equal(missing.code, 1)
    assert.match(missing.stderr, /404 not_found: no task task-000000000000/)
  })
})
