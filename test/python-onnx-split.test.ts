/**
 * examples/python-splitter (issue 17): the built-in ONNX pipeline splitter ported to Python on the seed's SDK, with
 * the `onnx` package for the cut and `onnxruntime` for the verification. Run with the interpreter of the virtual
 * environment the agent runs the example in (agent/python/envs.ts: the SDK and examples/python-splitter/requirements.txt,
 * made once in the machine's cache and shared), with the tree's sdk/python on PYTHONPATH.
 *
 * For generated GPT-style models (5 layers; 2 and 3 stages, and 3 with capacity weights) and a GGUF-converted llama
 * (the converter's graph: RMSNorm, rotary, grouped-query attention, 8-bit weights), the Python cut must give the TS
 * splitter's (agent/splitter/onnx-split.ts) layer ranges and the same stage graphs — each stage file decoded is the TS
 * stage decoded (nodes, initializers, inputs, outputs, metadata) — and the stages chained must reproduce the whole
 * model (the agent's verifySplit: prefill and greedy decode steps within 1e-4, the same greedy tokens). The entrypoint
 * runs as a split runner runs it against a registry served here (progress, layer registrations, a 409 reused, a
 * failure reported) and its plan is the one buildPlan makes; then an agent registers the example with
 * `--splitter my-onnx-splitter=python:…` (its runner makes the program's own environment), runs a split task with it,
 * deploys the plan, and the vDAG answers with the whole model's greedy text. SmolLM2 (when its GGUF is in the weight
 * cache) is cut too.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdirSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:http'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import { generateModel } from '../agent/model/generate.ts'
import { PRESETS } from '../agent/model/spec.ts'
import { decodeModel } from '../agent/model/onnx.ts'
import { ByteTokenizer } from '../agent/model/tokenizer.ts'
import { convertGguf } from '../agent/model/gguf/convert.ts'
import { splitDecoder } from '../agent/splitter/onnx-split.ts'
import { verifySplit } from '../agent/splitter/verify.ts'
import { DeployablePlanSchema, buildPlan } from '../agent/splitter/plan.ts'
import type { PlanStage } from '../agent/splitter/plan.ts'
import { ComponentSpecSchema } from '../agent/registry/components.ts'
import { AgentProcess, stopAll, tempDir, until } from './helpers/agents.ts'
import { tinyLlama } from './helpers/tiny-gguf.ts'
import { realWeights } from './helpers/weights.ts'
import { pythonMissing } from './helpers/python.ts'
import { PythonEnvs, parsePythonProgram } from '../agent/python/envs.ts'

const ROOT = resolve(import.meta.dirname, '..')
const EXAMPLE = join(ROOT, 'examples', 'python-splitter')
const run = promisify(execFile)
const TOLERANCE = 1e-4
const PROMPT = new ByteTokenizer().encode('The harbour town woke before the sun.', { bos: true })

const noPython = pythonMissing()

/** The interpreter of the environment the agent runs the example in (the SDK and requirements.txt; made once, shared). */
let PY = ''
async function ensureVenv (): Promise<void> {
  PY = await new PythonEnvs().interpreter(parsePythonProgram(`python:${join(EXAMPLE, 'my_splitter_entrypoint.py')}`))
}

/** The environment a Python process of the example runs with: the tree's SDK importable, no task variables inherited. */
function pyEnv (extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PYTHONPATH: [join(ROOT, 'sdk', 'python'), process.env.PYTHONPATH].filter(p => p != null && p !== '').join(':'), PYTHONDONTWRITEBYTECODE: '1' }
  for (const k of ['TASK_ID', 'TASK_DATA', 'TASK_STATUS_UPDATE_URL', 'MODEL_LAYERS_REGISTRY_URL', 'BLOCK_DB_URL', 'TASK_TOKEN', 'OUTPUT_DIR', 'AWS_ENDPOINT_URL', 'AWS_ENDPOINT_URL_S3']) delete env[k]
  return { ...env, ...extra }
}

interface PyStage { index: number, layers: [number, number], path: string, md5: string, size_bytes: number, parameter_bytes: number, inputs: string[], outputs: string[] }
interface PyVerification { maxAbsDiff: number, decodeMaxAbsDiff: number, promptTokens: number, decodeSteps: number, greedyEqual: boolean }
interface PyCut { layers: number, ranges: Array<[number, number]>, stages: PyStage[], verification?: PyVerification }

/** python -m my_splitter_code.onnx_stages MODEL N OUTDIR [--capacity W] --verify: the exit code and its JSON. */
async function pyCut (model: string, n: number, outdir: string, capacity?: number[]): Promise<{ code: number, out: any, stderr: string }> {
  const args = ['-m', 'my_splitter_code.onnx_stages', model, String(n), outdir, '--verify', ...(capacity != null ? ['--capacity', capacity.join(',')] : [])]
  const child = spawn(PY, args, { cwd: EXAMPLE, env: pyEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const code = await new Promise<number>(resolve => child.once('close', c => { resolve(c ?? -1) }))
  let out: any = null
  try { out = JSON.parse(stdout) } catch { /* reported by the caller */ }
  return { code, out, stderr }
}

/** The stage IO contract (agent/executor/stage-io.ts) for stage `i` of `n` covering layers [a, b). */
function checkContract (s: { inputs: string[], outputs: string[] }, i: number, n: number, [a, b]: [number, number]): void {
  const past = s.inputs.filter(x => x.startsWith('past_key_values.')).sort()
  const present = s.outputs.filter(x => /^present\.\d+\.(key|value)$/.test(x)).sort()
  const step = s.outputs.filter(x => /^present\.\d+\.(key|value)_step$/.test(x)).sort()
  const layers = Array.from({ length: b - a }, (_, k) => a + k)
  assert.deepEqual(past, layers.flatMap(l => [`past_key_values.${l}.key`, `past_key_values.${l}.value`]).sort(), `stage ${i}: its layers' past KV`)
  assert.deepEqual(present, layers.flatMap(l => [`present.${l}.key`, `present.${l}.value`]).sort(), `stage ${i}: its layers' present KV`)
  // the generated and converted graphs also give each layer's step keys and values (agent/executor/kv-cache.ts): a stage carries its layers'
  assert.deepEqual(step, layers.flatMap(l => [`present.${l}.key_step`, `present.${l}.value_step`]).sort(), `stage ${i}: its layers' step KV`)
  assert.equal(s.inputs.includes('input_ids'), i === 0, `stage ${i}: input_ids only on the first stage`)
  assert.equal(s.inputs.includes('hidden_states'), i > 0, `stage ${i}: hidden_states on every stage after the first`)
  assert.equal(s.outputs.includes('hidden_states_out'), i < n - 1, `stage ${i}: hidden_states_out on every stage but the last`)
  assert.equal(s.outputs.includes('logits'), i === n - 1, `stage ${i}: logits on the last stage only`)
}

/** Cuts `model` with the Python CLI and checks it against the TS splitter and verifySplit; returns the cut. */
async function cutAndCheck (model: string, n: number, outdir: string, capacity?: number[]): Promise<PyCut> {
  const whole = readFileSync(model)
  const r = await pyCut(model, n, outdir, capacity)
  assert.equal(r.code, 0, `the Python cut exited ${r.code}:\n${r.stderr}`)
  const py = r.out as PyCut
  const ts = splitDecoder(whole, n, capacity)
  assert.deepEqual(py.ranges, ts.ranges, 'the TS splitter\'s layer ranges')
  assert.equal(py.layers, ts.layers)
  assert.equal(py.stages.length, n)
  for (const [i, s] of py.stages.entries()) {
    const t = ts.stages[i]
    const bytes = readFileSync(s.path)
    assert.equal(createHash('md5').update(bytes).digest('hex'), s.md5, `stage ${i}: md5 of the file written`)
    assert.equal(bytes.length, s.size_bytes)
    assert.deepEqual(s.layers, t.layers)
    assert.deepEqual(s.inputs, t.inputs, `stage ${i} inputs`)
    assert.deepEqual(s.outputs, t.outputs, `stage ${i} outputs`)
    assert.equal(s.parameter_bytes, t.parameterBytes, `stage ${i} parameter bytes`)
    // the same model: both files decoded by the agent's ONNX decoder are equal field by field
    assert.deepEqual(decodeModel(bytes).toJSON(), decodeModel(t.bytes).toJSON(), `stage ${i}: the Python stage decoded is the TS stage decoded`)
    checkContract(s, i, n, s.layers)
  }
  // the agent's own check, on the Python stage files
  const v = await verifySplit(whole, py.stages.map(s => readFileSync(s.path)), PROMPT, 4)
  assert.ok(v.maxAbsDiff <= TOLERANCE, `prefill max abs diff ${v.maxAbsDiff}`)
  assert.ok(v.decodeMaxAbsDiff <= TOLERANCE, `decode max abs diff ${v.decodeMaxAbsDiff}`)
  assert.equal(v.greedyEqual, true)
  // and the Python verification (onnxruntime) agrees
  const pv = py.verification as PyVerification
  assert.ok(pv.maxAbsDiff <= TOLERANCE && pv.decodeMaxAbsDiff <= TOLERANCE && pv.greedyEqual, JSON.stringify(pv))
  assert.equal(pv.promptTokens, PROMPT.length)
  assert.equal(pv.decodeSteps, 4)
  return py
}

describe(`examples/python-splitter: the ONNX splitter in Python (onnx, onnxruntime)${noPython !== false ? ` (skipped: ${noPython})` : ''}`, { skip: noPython, timeout: 1_200_000 }, () => {
  const dir = tempDir('bm-py-onnx-')
  const gpt = generateModel({ ...PRESETS.tiny, layers: 5, maxPositions: 512, seed: 21 }, join(dir, 'gpt5.onnx'))
  const other = generateModel({ ...PRESETS.tiny, layers: 5, maxPositions: 512, seed: 22 }, join(dir, 'gpt5-other.onnx'))

  before(async () => { await ensureVenv() })
  after(() => { rmSync(dir, { recursive: true, force: true }) })

  test('2 stages of a 5-layer GPT: the TS splitter\'s ranges and stage graphs; chained, the whole model\'s logits', async () => {
    const py = await cutAndCheck(gpt.path, 2, join(dir, 'gpt-2'))
    console.log(`# gpt5 × 2: ranges ${JSON.stringify(py.ranges)}, python verification ${JSON.stringify(py.verification)}`)
  })

  test('3 stages, and 3 with capacity weights 1,3,1 (the middle stage takes more layers)', async () => {
    const even = await cutAndCheck(gpt.path, 3, join(dir, 'gpt-3'))
    const weighted = await cutAndCheck(gpt.path, 3, join(dir, 'gpt-3w'), [1, 3, 1])
    const width = (r: [number, number]): number => r[1] - r[0]
    assert.notDeepEqual(weighted.ranges, even.ranges)
    assert.ok(width(weighted.ranges[1]) > width(even.ranges[1]), `${JSON.stringify(weighted.ranges)} vs ${JSON.stringify(even.ranges)}`)
    console.log(`# gpt5 × 3: ${JSON.stringify(even.ranges)}; capacity 1,3,1: ${JSON.stringify(weighted.ranges)}`)
  })

  test('a GGUF-converted llama (RMSNorm, rotary, grouped-query attention, 8-bit weights) cut in 2 as the TS splitter cuts it', async () => {
    tinyLlama(join(dir, 'llama.gguf'), { quant: true })
    const converted = await convertGguf(join(dir, 'llama.gguf'), { cacheDir: join(dir, 'converted') })
    await cutAndCheck(converted.onnxPath, 2, join(dir, 'llama-2'))
  })

  test('refusals are the TS splitter\'s: more stages than layers, wrong capacity weights', async () => {
    const tooMany = await pyCut(gpt.path, 6, join(dir, 'x'))
    assert.equal(tooMany.code, 1)
    assert.deepEqual(tooMany.out, { error: 'world_size 6 exceeds the model\'s 5 layers', code: 'split_failed' })
    assert.throws(() => splitDecoder(readFileSync(gpt.path), 6), { message: tooMany.out.error })
    const badWeights = await pyCut(gpt.path, 2, join(dir, 'x'), [1, 0])
    assert.equal(badWeights.code, 1)
    assert.equal(badWeights.out.error, 'capacity weights must be one positive number per stage')
    assert.throws(() => splitDecoder(readFileSync(gpt.path), 2, [1, 0]), { message: badWeights.out.error })
  })

  test('the Python verification sees a wrong chain: another model\'s stages against this one', async () => {
    const cut = await pyCut(other.path, 2, join(dir, 'other-2'))
    assert.equal(cut.code, 0, cut.stderr)
    const script = 'import json, sys\nfrom my_splitter_code.onnx_stages import verify_split, byte_prompt\n' +
      'print(json.dumps(verify_split(sys.argv[1], sys.argv[2:], byte_prompt("The harbour town woke before the sun."), 4).to_json()))'
    const { stdout } = await run(PY, ['-c', script, gpt.path, ...cut.out.stages.map((s: PyStage) => s.path)], { cwd: EXAMPLE, env: pyEnv() })
    const v = JSON.parse(stdout) as PyVerification
    assert.ok(v.maxAbsDiff > 1e-2, `a different model's logits differ: ${JSON.stringify(v)}`)
  })

  describe('the entrypoint, run as a split runner runs it', () => {
    /** What the entrypoint sent: status updates (PUT /tasks/ID) and model layers (POST /model-layer). */
    const reports: any[] = []
    const layers = new Map<string, any>()
    let posts = 0
    let server: Server
    let base = ''
    let agent: AgentProcess | undefined

    before(async () => {
      server = createServer((req, res) => {
        let body = ''
        req.on('data', (d: Buffer) => { body += d.toString() })
        req.on('end', () => {
          const json = body === '' ? null : JSON.parse(body)
          const send = (code: number, value: unknown): void => { res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(value)) }
          if (req.headers.authorization !== 'Bearer task-token') { send(401, { success: false, error: 'unauthorized', code: 'unauthorized' }); return }
          if (req.method === 'PUT' && req.url?.startsWith('/tasks/') === true) { reports.push({ task: req.url.slice(7), ...json }); send(200, { success: true, data: {} }); return }
          if (req.method === 'POST' && req.url === '/model-layer') {
            posts++
            if (layers.has(json.model_layer_hash)) { send(409, { success: false, error: 'already registered', code: 'duplicate' }); return }
            layers.set(json.model_layer_hash, json)
            send(201, { success: true, data: json })
            return
          }
          send(404, { success: false, error: 'not found', code: 'not_found' })
        })
      })
      await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
      base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    })
    after(async () => {
      await stopAll([agent])
      await new Promise<void>(resolve => server.close(() => { resolve() }))
    })

    const config = { balance: 'capacity', capacity: [1, 3, 1], vdag_name: 'py-gpt5-pipeline', md5: gpt.md5, context_length: 512, tokenizer: { type: 'byte' }, block: { maxBatch: 4 } }
    const entry = async (taskId: string, taskData: Record<string, unknown>, out: string): Promise<{ code: number, log: string }> => {
      const env = pyEnv({
        TASK_ID: taskId,
        TASK_DATA: JSON.stringify(taskData),
        TASK_STATUS_UPDATE_URL: `${base}/tasks/${taskId}`,
        MODEL_LAYERS_REGISTRY_URL: base,
        BLOCK_DB_URL: base,
        TASK_TOKEN: 'task-token',
        OUTPUT_DIR: out
      })
      const cwd = join(dir, `run-${taskId}`)
      mkdirSync(cwd, { recursive: true })
      // as the runner starts it: the venv's python on the script's path, in a folder of the task's own
      const child = spawn(PY, ['-u', join(EXAMPLE, 'my_splitter_entrypoint.py')], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
      let log = ''
      child.stdout.on('data', (d: Buffer) => { log += d.toString() })
      child.stderr.on('data', (d: Buffer) => { log += d.toString() })
      const code = await new Promise<number>(resolve => child.once('close', c => { resolve(c ?? -1) }))
      return { code, log }
    }
    const last = (taskId: string): any => reports.filter(r => r.task === taskId).at(-1)

    test('python my_splitter_entrypoint.py: exit 0, progress reported, stages registered, the plan is buildPlan\'s', async () => {
      const out = join(dir, 'out-1')
      const r = await entry('t-1', { model_name: 'gpt5', model_download_url: pathToFileURL(gpt.path).toString(), world_size: 3, model_split_config: config }, out)
      assert.equal(r.code, 0, r.log)
      const mine = reports.filter(x => x.task === 't-1')
      assert.deepEqual(mine.map(x => x.message), ['begin', 'main', 'splitting into 3 stages', 'verifying: stages chained against the whole model', 'finish', 'registering model layers', 'done'])
      const done = last('t-1')
      assert.equal(done.status, 'complete')
      const result = done.result
      const plan = result.plan
      assert.equal(result.status, 'done')
      assert.equal(result.world_size, 3)
      assert.equal(result.max_abs_diff, plan.verification.maxAbsDiff)
      assert.deepEqual(JSON.parse(readFileSync(result.artifact, 'utf8')), plan)
      // cut as the TS splitter cuts it, with the capacity weights
      assert.deepEqual(plan.stages.map((s: PlanStage) => s.layers), splitDecoder(readFileSync(gpt.path), 3, [1, 3, 1]).ranges)
      assert.equal(plan.source_md5, gpt.md5)
      assert.ok(plan.verification.maxAbsDiff <= TOLERANCE && plan.verification.decodeMaxAbsDiff <= TOLERANCE && plan.verification.greedyEqual === true, JSON.stringify(plan.verification))
      for (const s of plan.stages as PlanStage[]) {
        assert.equal(createHash('md5').update(readFileSync(new URL(s.url))).digest('hex'), s.model_layer_hash)
      }
      // exactly what the TS buildPlan makes of the same stages
      assert.deepEqual(plan, buildPlan({ modelName: 'gpt5', sourceMd5: gpt.md5, layers: 5, stages: plan.stages, contextLength: 512, vdagName: 'py-gpt5-pipeline', block: { maxBatch: 4 }, verification: plan.verification, tokenizer: { type: 'byte' } }))
      assert.equal(DeployablePlanSchema.safeParse(plan).success, true)
      for (const c of plan.components) assert.equal(ComponentSpecSchema.safeParse(c).success, true, JSON.stringify(ComponentSpecSchema.safeParse(c).error?.issues))
      // one model layer per stage, as the built-in splitter registers them
      assert.equal(layers.size, 3)
      for (const s of plan.stages as PlanStage[]) {
        const l = layers.get(s.model_layer_hash)
        assert.deepEqual(l, {
          model_layer_hash: s.model_layer_hash,
          model_asset_id: 'gpt5',
          model_component_registry_uri: `${plan.components[s.rank].name as string}:${plan.components[s.rank].version as string}`,
          model_layer_public_url: s.url,
          model_layer_metadata: [{ layers: s.layers, size_bytes: s.size_bytes, parameter_bytes: s.parameter_bytes, source_md5: gpt.md5 }],
          model_layer_rank: s.rank,
          model_world_size: 3
        })
      }
    })

    test('run again (a bundle tokenizer, no context_length): the same stage files, already registered (409) and reused; exit 0', async () => {
      const before = posts
      const tokenizer = { type: 'bundle', url: 'file:///models/tokenizer.json', md5: 'ABCDEF0123456789ABCDEF0123456789' }
      const { context_length: _, ...rest } = config
      const r = await entry('t-2', { model_name: 'gpt5', model_download_url: gpt.path, world_size: 3, model_split_config: { ...rest, tokenizer } }, join(dir, 'out-2'))
      assert.equal(r.code, 0, r.log)
      assert.equal(posts - before, 3)
      assert.equal(layers.size, 3)
      const plan = last('t-2').result.plan
      assert.deepEqual(plan.stages.map((s: PlanStage) => s.model_layer_hash), last('t-1').result.plan.stages.map((s: PlanStage) => s.model_layer_hash))
      // the tokenizer as the component schema takes it (md5 lowercased), in every component and the vDAG
      const parsed = { type: 'bundle', url: tokenizer.url, md5: tokenizer.md5.toLowerCase() }
      assert.deepEqual(plan.vdag.tokenizer, parsed)
      for (const c of plan.components) assert.deepEqual(c.tokenizer, parsed)
      // the context from the generated model's metadata (maxPositions)
      assert.equal(plan.vdag.contextLength, 512)
      assert.ok(plan.components.every((c: any) => c.contextLength === 512))
    })

    test('a tokenizer the component schema refuses fails the task in begin', async () => {
      const r = await entry('t-4', { model_name: 'gpt5', model_download_url: gpt.path, world_size: 3, model_split_config: { ...config, tokenizer: { type: 'bundle', url: 'x', md5: 'nope' } } }, join(dir, 'out-4'))
      assert.equal(r.code, 1, r.log)
      assert.equal(last('t-4').status, 'failed')
      assert.match(last('t-4').error, /^begin: model_split_config\.tokenizer: md5 must be 32 hex digits$/)
    })

    test('a wrong md5 fails the task in begin: exit 1, reported failed with the reason', async () => {
      const r = await entry('t-3', { model_name: 'gpt5', model_download_url: gpt.path, world_size: 3, model_split_config: { ...config, md5: '0'.repeat(32) } }, join(dir, 'out-3'))
      assert.equal(r.code, 1, r.log)
      assert.equal(last('t-3').status, 'failed')
      assert.equal(last('t-3').error, `begin: model MD5 is ${gpt.md5}, expected ${'0'.repeat(32)}`)
    })

    test('through an agent: --splitter my-onnx-splitter=python:…/my_splitter_entrypoint.py, a split task, its plan deployed, the vDAG answers as the whole model', { timeout: 1_200_000 }, async () => {
      const a = agent = await AgentProcess.start({ name: 'py-onnx', extra: ['--splitter', `my-onnx-splitter=python:${join(EXAMPLE, 'my_splitter_entrypoint.py')}`] })
      const start = await a.api('/start_model_split_job', {
        method: 'POST',
        body: { task_data: { model_name: 'gpt5', model_download_url: gpt.path, world_size: 3, model_split_config: config }, container_image: 'my-onnx-splitter', storage_size: '1Gi' }
      })
      assert.equal(start.status, 201, JSON.stringify(start.body))
      // the first run on a machine makes the program's environment (the SDK and requirements.txt: minutes)
      const task = await until(async () => {
        const t = (await a.api(`/tasks/${start.body.task_id as string}`)).body.data
        return t.status === 'complete' || t.status === 'failed' ? t : undefined
      }, 'the Python split task to finish', 1_000_000, 500)
      const log = (): string => { try { return readFileSync(join(a.dir, 'tasks', task.task_id, 'splitter.log'), 'utf8') } catch { return '(no splitter.log)' } }
      assert.equal(task.status, 'complete', `${task.error as string}\n${log()}`)
      assert.equal(task.runner, 'local')
      const plan = task.result.plan
      assert.deepEqual(plan.stages.map((s: PlanStage) => s.layers), splitDecoder(readFileSync(gpt.path), 3, [1, 3, 1]).ranges)
      // the same stage files as the run above (the cut is deterministic)
      assert.deepEqual(plan.stages.map((s: PlanStage) => s.model_layer_hash), last('t-1').result.plan.stages.map((s: PlanStage) => s.model_layer_hash))
      for (const s of plan.stages as PlanStage[]) {
        const layer = await a.api(`/model-layer/${s.model_layer_hash}`)
        assert.equal(layer.status, 200, JSON.stringify(layer.body))
        assert.equal(layer.body.data.model_layer_rank, s.rank)
        assert.equal(layer.body.data.model_world_size, 3)
      }
      const deployed = await a.api('/api/vdags/deploy', { method: 'POST', body: { task_id: task.task_id } })
      assert.equal(deployed.status, 201, JSON.stringify(deployed.body))
      assert.equal((await a.api('/api/components', { method: 'POST', body: { name: 'gpt5-whole', version: '1', runtime: 'onnx', model: { url: gpt.path, md5: gpt.md5 }, contextLength: 512 } })).status, 201)
      assert.equal((await a.api('/api/blocks', { method: 'POST', body: { id: 'gpt5-whole', component: 'gpt5-whole:1' } })).status, 201)
      await until(async () => {
        const ids = (await a.api('/v1/models')).body.data.map((d: any) => d.id)
        return ids.includes('py-gpt5-pipeline') && ids.includes('gpt5-whole')
      }, 'the agent to serve the vDAG and the whole model', 90_000)
      for (const prompt of ['The harbour town', 'Mara kept']) {
        const split = await a.api('/v1/completions', { method: 'POST', body: { model: 'py-gpt5-pipeline', prompt, max_tokens: 24, temperature: 0 } })
        const whole = await a.api('/v1/completions', { method: 'POST', body: { model: 'gpt5-whole', prompt, max_tokens: 24, temperature: 0 } })
        assert.equal(split.status, 200, JSON.stringify(split.body))
        assert.equal(split.body.choices[0].text, whole.body.choices[0].text)
        assert.equal(split.body.usage.completion_tokens, 24)
      }
    })
  })

  const smol = realWeights('smollm2')
  test(`SmolLM2 (converted from its GGUF) cut in 2 and 3 as the TS splitter cuts it${smol.skip !== false ? ` (skipped: ${smol.skip})` : ''}`, { skip: smol.skip }, async () => {
    const converted = await convertGguf(smol.path, { cacheDir: join(dir, 'smol-converted') })
    for (const n of [2, 3]) {
      const py = await cutAndCheck(converted.onnxPath, n, join(dir, `smol-${n}`))
      console.log(`# SmolLM2 × ${n}: ranges ${JSON.stringify(py.ranges)}, python verification ${JSON.stringify(py.verification)}`)
      rmSync(join(dir, `smol-${n}`), { recursive: true, force: true })
    }
  })
})
