/**
 * Property-based fuzzing of the HTTP API (issue 13): one real agent process; BODIES malformed
 * requests spread over every state-changing route (POST/PUT/PATCH/DELETE in agent/api/routes/*.ts,
 * sent with the agent's token) — mutated valid bodies that no longer fit the route's schema, JSON that
 * does not parse, bytes that are not UTF-8, wrong content types, empty and oversized bodies, malformed
 * MongoDB-style updates and filters, odd path parameters — plus malformed query strings and path
 * parameters on the GET routes. Every answer to a malformed body is a 4xx (never a 5xx, never a
 * hang), no GET answers 5xx, and the agent's state (components, blocks, vDAGs, tasks, registries,
 * simulated GPUs, the replicated desired state) is the same afterwards.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, readdirSync } from 'node:fs'
import { request } from 'node:http'
import fc from 'fast-check'
import { z } from 'zod'
import { AgentProcess, stopAll } from './helpers/agents.ts'
import { componentSpec, deploy, tinyModel } from './helpers/models.ts'
import { FUZZ_SEED, Tally, brokenJsonText, fuzzParams, mutatedJson, nastyValue, notUtf8, utf8 } from './helpers/fuzz.ts'
import { ComponentSpecSchema } from '../agent/registry/components.ts'
import { BlockSpecSchema } from '../agent/registry/blocks.ts'
import { VdagSpecSchema } from '../agent/vdag/registry.ts'
import { DeployablePlanSchema } from '../agent/splitter/plan.ts'
import { StartSplitJobSchema, TaskUpdateSchema } from '../agent/tasks/store.ts'
import { CreateSplitRunnerSchema } from '../agent/registry/split-runners.ts'
import { ModelLayerSchema } from '../agent/registry/model-layers.ts'
import { SimulatedGpuListSchema, parseSimulatedGpus } from '../agent/hardware/gpus.ts'
import { AddModelBodySchema } from '../agent/catalog/add-model.ts'
import { ContentFetchBodySchema } from '../agent/api/routes/content.ts'
import { CreateTemplateBodySchema, DeployTemplateBodySchema, MLServiceSchema, RolloutBodySchema, UpdateTemplateBodySchema } from '../agent/templates/schemas.ts'
import { ChatCompletionRequestSchema, CompletionRequestSchema } from '../agent/openai/schemas.ts'

/** Malformed bodies over the state-changing routes (the issue: 1,000); FUZZ_BODIES=n to change. */
const BODIES = Number(process.env.FUZZ_BODIES ?? 1000)
/** Malformed query strings and path parameters over the GET routes. */
const QUERIES = Number(process.env.FUZZ_QUERIES ?? 250)
/** /v1 requests valid by schema with odd contents (constraints, stops, penalties, n, logprobs, roles). */
const ODD_INFERENCE = Number(process.env.FUZZ_INFERENCE ?? 150)
const HANG_MS = 20_000

interface Answer { status: number, body: string }

/** One raw HTTP request (node:http, so paths, headers and bytes go out exactly as generated). */
async function send (base: URL, method: string, path: string, headers: Record<string, string>, body?: Uint8Array): Promise<Answer> {
  return await new Promise((resolve, reject) => {
    // a connection per request (agent: false): a kept-alive socket the server closed after a 414/431 is no hang
    const req = request({ agent: false, host: base.hostname, port: base.port, method, path, headers: { ...headers, ...(body != null ? { 'content-length': String(body.length) } : {}) }, signal: AbortSignal.timeout(HANG_MS) }, res => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }) })
      res.on('error', reject)
    })
    req.on('error', (err) => { reject(new Error(`${method} ${path.slice(0, 120)}: ${err.message} (a hang or a dropped connection)`)) })
    req.end(body != null ? Buffer.from(body) : undefined)
  })
}

// ------------------------------------------------------------------ the routes

/** The block (a tiny generated model) the agent serves, so /v1 has something to serve. */
const MODEL = 'tiny'

/** The seeded objects (created before the fuzz; their routes get only bodies no parser accepts). */
const seed = {
  component: { name: 'fuzz-model', version: '1', runtime: 'onnx', model: { url: 'file:///nonexistent/fuzz-model.onnx', md5: '0123456789abcdef0123456789abcdef' }, contextLength: 128 },
  componentUri: 'fuzz-model:1',
  vdag: { name: 'fuzz-vdag', nodes: [{ id: 'n0', block: 'fuzz-stage-0' }, { id: 'n1', block: 'fuzz-stage-1' }], edges: [{ from: 'n0', to: 'n1' }], contextLength: 128 },
  runner: { split_runner_public_host: 'runner.example', split_runner_tags: ['gpu'], split_runner_metadata: { zone: 'a' } },
  runnerId: '',
  /** the MD5 of the model file the deployed block uses (in the agent's content store) */
  modelMd5: '',
  layer: { model_layer_hash: 'a'.repeat(32), model_asset_id: 'fuzz-asset', model_component_registry_uri: 'fuzz-model:1', model_layer_public_url: 'https://example.com/layers/0', model_layer_rank: 0, model_world_size: 2 },
  gpus: { spec: 'count=1,model=L4,memory=24GiB' }
}

type BodyKind = 'json' | 'none' | 'mongo-update' | 'mongo-filter'

interface Route {
  method: 'POST' | 'PUT' | 'PATCH' | 'DELETE'
  /** as registered (agent/api/routes/*.ts) */
  pattern: string
  body: BodyKind
  /** a valid body: mutations start from it */
  sample?: unknown
  /** whether a (parsed) body is one the route accepts: those are not malformed and are never sent */
  accepts?: (body: unknown) => boolean
  /** the seeded object's parameter, for a route with one */
  existing?: () => string
  /** a mongo update or filter's fields and a wrong-typed value for each (registries) */
  fields?: Record<string, fc.Arbitrary<unknown>>
  /** fields a stored document cannot lack (no default): unsetting one is malformed */
  required?: string[]
}

const fits = (schema: z.ZodType) => (b: unknown): boolean => schema.safeParse(b).success
const SimulatedBody = z.union([z.object({ gpus: SimulatedGpuListSchema }).strict(), z.object({ spec: z.string().max(4096) }).strict()])
const ScaleBody = z.object({ instances: z.number().int().min(0).max(1024) }).strict()
const ProbeBody = z.object({ prompt: z.string().max(65_536), max_tokens: z.number().int().min(1).max(256).default(8) }).strict()
const QueryBody = z.object({ component: z.string().max(130).optional(), model_layer_hash: z.string().regex(/^[a-fA-F0-9]{32}$/).optional() }).strict()
const DeployBody = z.union([z.object({ task_id: z.string().min(1).max(64), name: z.string().min(1).max(64).optional() }).strict(), z.object({ plan: z.record(z.string(), z.unknown()), name: z.string().min(1).max(64).optional() }).strict()])

const notString = fc.oneof(fc.integer(), fc.boolean(), fc.constant(null), fc.constant([]), fc.constant({}), fc.constant([1, 2]))
const notNumber = fc.oneof(fc.string(), fc.boolean(), fc.constant(null), fc.constant([]), fc.constant({}))
const notArray = fc.oneof(fc.string(), fc.integer(), fc.constant(null), fc.constant({ a: 1 }))
const notObject = fc.oneof(fc.string(), fc.integer(), fc.constant(null), fc.constant([1]))

const ROUTES: Route[] = [
  { method: 'PUT', pattern: '/api/hardware/simulated-gpus', body: 'json', sample: { gpus: [{ model: 'L4', memoryTotalBytes: 24e9, memoryFreeBytes: 20e9, utilisation: 5 }] }, accepts: b => { const r = SimulatedBody.safeParse(b); if (!r.success) return false; if ('gpus' in r.data) return true; try { parseSimulatedGpus(r.data.spec); return true } catch { return false } } },
  { method: 'POST', pattern: '/api/components', body: 'json', sample: seed.component, accepts: fits(ComponentSpecSchema) },
  { method: 'DELETE', pattern: '/api/components/:uri', body: 'none', existing: () => seed.componentUri },
  { method: 'POST', pattern: '/api/models', body: 'json', sample: { source: '/nonexistent/model.gguf', name: 'fuzz-added', weights: 'q8', contextLength: 256 }, accepts: fits(AddModelBodySchema) },
  { method: 'POST', pattern: '/api/content/fetch', body: 'json', sample: { md5: 'c'.repeat(32) }, accepts: fits(ContentFetchBodySchema) },
  { method: 'DELETE', pattern: '/api/content/:md5', body: 'none', existing: () => seed.modelMd5 },
  { method: 'POST', pattern: '/api/blocks', body: 'json', sample: { component: seed.componentUri, minInstances: 1, maxInstances: 2, executionProvider: 'cpu', maxBatch: 4 }, accepts: fits(BlockSpecSchema) },
  { method: 'DELETE', pattern: '/api/blocks/:id', body: 'none', existing: () => MODEL },
  { method: 'PUT', pattern: '/api/blocks/:id/scale', body: 'json', sample: { instances: 2 }, accepts: fits(ScaleBody), existing: () => MODEL },
  { method: 'POST', pattern: '/v1/chat/completions', body: 'json', sample: { model: MODEL, messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: [{ type: 'text', text: 'hi' }] }], max_tokens: 4, temperature: 0, stop: ['\n'], n: 2, logprobs: true, top_logprobs: 2, response_format: { type: 'json_schema', json_schema: { name: 'answer', schema: { type: 'object', properties: { a: { type: 'string' } }, required: ['a'] } } } }, accepts: fits(ChatCompletionRequestSchema) },
  { method: 'POST', pattern: '/v1/completions', body: 'json', sample: { model: MODEL, prompt: 'hi', max_tokens: 4, logprobs: 2, seed: 7, stream: true, stream_options: { include_usage: true } }, accepts: fits(CompletionRequestSchema) },
  { method: 'POST', pattern: '/api/vdags', body: 'json', sample: seed.vdag, accepts: fits(VdagSpecSchema) },
  { method: 'DELETE', pattern: '/api/vdags/:name', body: 'none', existing: () => seed.vdag.name },
  { method: 'POST', pattern: '/api/vdags/deploy', body: 'json', sample: { plan: { components: [seed.component], blocks: [{ id: 'fuzz-stage-0', component: seed.componentUri }], vdag: { name: 'fuzz-deployed', contextLength: 128 } }, name: 'fuzz-deployed' }, accepts: b => { const r = DeployBody.safeParse(b); return r.success && ('task_id' in r.data || DeployablePlanSchema.safeParse(r.data.plan).success) } },
  { method: 'POST', pattern: '/api/vdags/:name/probe', body: 'json', sample: { prompt: 'hello', max_tokens: 4 }, accepts: fits(ProbeBody), existing: () => seed.vdag.name },
  { method: 'POST', pattern: '/api/blocks/query', body: 'json', sample: { component: seed.componentUri, model_layer_hash: 'b'.repeat(32) }, accepts: fits(QueryBody) },
  { method: 'POST', pattern: '/start_model_split_job', body: 'json', sample: { task_data: { model_name: 'fuzz', model_download_url: 'file:///nonexistent/model.onnx', world_size: 2, model_split_config: {} }, container_image: 'blockmesh/onnx-splitter', storage_size: '1Gi' }, accepts: fits(StartSplitJobSchema) },
  { method: 'PUT', pattern: '/tasks/:id', body: 'json', sample: { status: 'running', progress: 0.5, message: 'halfway' }, accepts: fits(TaskUpdateSchema) },
  { method: 'POST', pattern: '/split-runner', body: 'json', sample: seed.runner, accepts: fits(CreateSplitRunnerSchema) },
  {
    method: 'PUT',
    pattern: '/split-runner/:runner_id',
    body: 'mongo-update',
    existing: () => seed.runnerId,
    required: ['split_runner_public_url', 'split_runner_public_host'],
    fields: { split_runner_public_url: fc.oneof(notString, fc.constantFrom('not a url', 'ftp://x', 'javascript:alert(1)')), split_runner_public_host: fc.oneof(notString, fc.constantFrom('', ' ', 'a b', 'x'.repeat(300))), split_runner_tags: fc.oneof(notArray, fc.constant([5]), fc.constant([''])), split_runner_metadata: fc.oneof(notObject, fc.constant([{ a: 1 }])), created_at: fc.oneof(notString, fc.constant('yesterday')), split_runner_id: fc.string() }
  },
  { method: 'DELETE', pattern: '/split-runner/:runner_id', body: 'none', existing: () => seed.runnerId },
  { method: 'POST', pattern: '/split-runners', body: 'mongo-filter', fields: { split_runner_tags: fc.constant(0), split_runner_public_host: fc.constant(0), 'split_runner_metadata.zone': fc.constant(0) } },
  { method: 'POST', pattern: '/model-layer', body: 'json', sample: { ...seed.layer, model_layer_hash: 'c'.repeat(32) }, accepts: fits(ModelLayerSchema) },
  {
    method: 'PUT',
    pattern: '/model-layer/:hash',
    body: 'mongo-update',
    existing: () => seed.layer.model_layer_hash,
    required: ['model_asset_id', 'model_component_registry_uri', 'model_layer_public_url', 'model_layer_rank', 'model_world_size'],
    fields: { model_layer_rank: fc.oneof(notNumber, fc.constantFrom(-1, 1.5, 2, 1e9)), model_world_size: fc.oneof(notNumber, fc.constantFrom(0, -1, 0.5, 1e9)), model_layer_public_url: fc.oneof(notString, fc.constant('not a url')), model_asset_id: fc.oneof(notString, fc.constant('')), model_layer_metadata: fc.oneof(notArray, fc.constant([1])), model_layer_hash: fc.string() }
  },
  { method: 'DELETE', pattern: '/model-layer/:hash', body: 'none', existing: () => seed.layer.model_layer_hash },
  { method: 'POST', pattern: '/model-layers', body: 'mongo-filter', fields: { model_layer_rank: fc.constant(0), model_asset_id: fc.constant(0), model_layer_metadata: fc.constant(0) } },
  { method: 'POST', pattern: '/api/templates', body: 'json', sample: { name: 'fuzz-template', source: { kind: 'uri', uri: '/nonexistent/model.gguf' }, contextLength: 256, deploymentConfig: { replicas: 1, maxReplicas: 2 } }, accepts: fits(CreateTemplateBodySchema) },
  { method: 'PUT', pattern: '/api/templates/:name', body: 'json', sample: { contextLength: 512, sampling: { temperature: 0.2 } }, accepts: fits(UpdateTemplateBodySchema), existing: () => 'smollm2-135m-instruct' },
  { method: 'POST', pattern: '/api/templates/:name/deploy', body: 'json', sample: { replicas: 1, dryRun: true }, accepts: fits(DeployTemplateBodySchema), existing: () => 'smollm2-135m-instruct' },
  { method: 'POST', pattern: '/api/mlservices', body: 'json', sample: { apiVersion: 'ml.oneblock.ai/v1alpha1', kind: 'MLService', metadata: { name: 'fuzz-service', namespace: 'default' }, spec: { modelTemplateVersionRef: { name: 'smollm2-135m-instruct-v1' }, mlClusterRef: { rayClusterSpec: { workerGroupSpec: [{ replicas: 1, maxReplicas: 2 }] } } } }, accepts: fits(MLServiceSchema) },
  // (no service is seeded: a deploy loads a real model; these name none, so every request is refused)
  { method: 'PUT', pattern: '/api/mlservices/:name', body: 'json', sample: { apiVersion: 'ml.oneblock.ai/v1alpha1', kind: 'MLService', metadata: { name: 'fuzz-service' }, spec: { modelTemplateVersionRef: { name: 'smollm2-135m-instruct-v1' } } }, accepts: fits(MLServiceSchema) },
  { method: 'POST', pattern: '/api/mlservices/:name/rollout', body: 'json', sample: { version: 'smollm2-135m-instruct-v1', readyTimeoutMs: 60_000 }, accepts: fits(RolloutBodySchema) },
  { method: 'DELETE', pattern: '/api/mlservices/:name', body: 'none' },
  // EXTENSION POINT: a new state-changing route gets an entry here (the coverage test below fails until it has one).
]

/** Every state-changing route registered in agent/api/routes/*.ts, read from the sources. */
function registeredRoutes (): string[] {
  const dir = new URL('../agent/api/routes/', import.meta.url)
  const found: string[] = []
  for (const f of readdirSync(dir).filter(n => n.endsWith('.ts'))) {
    const src = readFileSync(new URL(f, dir), 'utf8')
    for (const m of src.matchAll(/\b(?:app|scope)\.(post|put|patch|delete)\s*(?:<[^>]*>)?\s*\(\s*'([^']+)'/g)) found.push(`${m[1].toUpperCase()} ${m[2]}`)
  }
  return found.sort()
}

// ------------------------------------------------------------------ malformed requests

interface Sent { route: string, method: string, path: string, headers: Record<string, string>, body?: Uint8Array, label: string, /** what it must get: 4xx, or (GETs) anything but 5xx */ want: '4xx' | 'not-5xx' }

const json = (v: unknown): Uint8Array => utf8(JSON.stringify(v) ?? 'null')
const parses = (text: string): { ok: true, value: unknown } | { ok: false } => { try { return { ok: true, value: JSON.parse(text) } } catch { return { ok: false } } }

/**
 * Bodies the API refuses before any handler runs, on any route: JSON that does not parse, bytes that are
 * not UTF-8, an empty JSON body, a content type no parser takes, prototype keys, over the 1 MiB limit.
 */
const refusedBeforeHandler: fc.Arbitrary<{ ct: string | null, body: Uint8Array | undefined, label: string }> = fc.oneof(
  // (a leading byte-order mark is skipped by the parser, as RFC 8259 allows)
  { weight: 4, arbitrary: brokenJsonText.filter(t => !parses(t.replace(/^\ufeff/, '')).ok).map(t => ({ ct: 'application/json', body: utf8(t), label: 'broken-json' })) },
  { weight: 2, arbitrary: notUtf8.map(b => ({ ct: 'application/json', body: b, label: 'not-utf8' })) },
  { weight: 2, arbitrary: fc.tuple(fc.constantFrom('application/xml', 'application/x-www-form-urlencoded', 'multipart/form-data', 'application/octet-stream', 'application/json-patch', 'image/png', '*/*', 'json'), fc.json()).map(([ct, j]) => ({ ct, body: utf8(j), label: 'unsupported-content-type' })) },
  { weight: 1, arbitrary: fc.constant({ ct: 'application/json', body: new Uint8Array(0), label: 'empty' }) },
  { weight: 1, arbitrary: fc.constantFrom('{"__proto__":{"admin":true}}', '{"a":{"__proto__":{"admin":true}}}', '{"constructor":{"prototype":{"admin":true}}}').map(t => ({ ct: 'application/json', body: utf8(t), label: 'prototype-keys' })) },
  { weight: 1, arbitrary: fc.integer({ min: 2, max: 3 }).map(k => ({ ct: 'application/json', body: utf8(JSON.stringify({ pad: 'x'.repeat(k * 700 * 1024) })), label: 'over-1MiB' })) }
)

/** Bodies no route taking a JSON object accepts: the above, plus JSON sent as text or without a content type (the handler sees a string or nothing). */
const unparseable: fc.Arbitrary<{ ct: string | null, body: Uint8Array | undefined, label: string }> = fc.oneof(
  { weight: 8, arbitrary: refusedBeforeHandler },
  { weight: 1, arbitrary: fc.json().map(j => ({ ct: 'text/plain', body: utf8(j), label: 'json-as-text' })) },
  { weight: 1, arbitrary: fc.json().map(j => ({ ct: null, body: utf8(j), label: 'no-content-type' })) }
)

/** A path parameter that names nothing (odd characters, traversal, huge, bad percent-encoding). */
const oddParam: fc.Arbitrary<string> = fc.oneof(
  fc.string({ minLength: 1, maxLength: 40 }).map(encodeURIComponent),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 20 }).map(encodeURIComponent),
  fc.constantFrom('..%2F..%2Fetc%2Fpasswd', '%00', '%zz', '%', '%E0%A4%A', '__proto__', 'constructor', '%2e%2e', 'null', 'undefined', '-1', '%F0%9F%92%A9', 'a%20b', 'x:y:z'),
  fc.integer({ min: 200, max: 6000 }).map(n => 'p'.repeat(n))
)

const CODE_OPS = ['$where', '$function', '$accumulator']
/** An operator name no MongoDB dialect has ("$" and letters: what mingo takes for an operator). */
const operatorName = fc.stringMatching(/^[a-z]{1,8}$/).map(s => `$${s}zq`)

function nestedObject (depth: number): unknown {
  let v: unknown = 1
  for (let i = 0; i < depth; i++) v = { a: v }
  return v
}

/** MongoDB-style update documents that cannot apply: not an object, unknown or code operators, values the schema refuses, over the limits. */
function badUpdate (fields: Record<string, fc.Arbitrary<unknown>>, required: string[]): fc.Arbitrary<{ value: unknown, label: string }> {
  const field = fc.constantFrom(...Object.keys(fields))
  return fc.oneof(
    { weight: 4, arbitrary: field.chain(f => fields[f].map(v => ({ value: { $set: { [f]: v } }, label: `update:wrong-type:${f}` }))) },
    { weight: 1, arbitrary: fc.constantFrom(...required).map(f => ({ value: { $unset: { [f]: '' } }, label: 'update:unset-required' })) },
    { weight: 2, arbitrary: fc.tuple(operatorName, nastyValue).map(([op, v]) => ({ value: { [op]: v }, label: 'update:unknown-operator' })) },
    { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...CODE_OPS), fc.constantFrom<unknown>('this.x = 1', { body: 'function () { return 1 }', args: [], lang: 'js' })).map(([op, v]) => ({ value: { [op]: v }, label: 'update:code' })) },
    { weight: 2, arbitrary: nastyValue.filter(v => v === null || typeof v !== 'object' || Array.isArray(v)).map(v => ({ value: v, label: 'update:not-an-object' })) },
    { weight: 1, arbitrary: fc.record({ a: nastyValue }).map(v => ({ value: { ...v, $set: { x: 1 } }, label: 'update:mixed-fields-and-operators' })) },
    { weight: 1, arbitrary: fc.integer({ min: 40, max: 400 }).map(d => ({ value: { $set: { [Object.keys(fields)[0]]: nestedObject(d) } }, label: 'update:too-deep' })) },
    { weight: 1, arbitrary: fc.constant({ value: { $set: { [Object.keys(fields)[0]]: 'x'.repeat(70 * 1024) } }, label: 'update:too-big' }) },
    { weight: 1, arbitrary: fc.constantFrom('__proto__.x', 'constructor.prototype.x', 'a.__proto__').map(k => ({ value: { $set: { [k]: 1 } }, label: 'update:prototype-path' })) },
    { weight: 1, arbitrary: fc.constant({ value: { $inc: { [Object.keys(fields)[0]]: 'one' } }, label: 'update:bad-operand' }) }
  )
}

/** Filters that cannot run: not an object, code, unknown operators, bad operands, over the limits. */
function badFilter (fields: Record<string, fc.Arbitrary<unknown>>): fc.Arbitrary<{ value: unknown, label: string }> {
  const field = fc.constantFrom(...Object.keys(fields))
  return fc.oneof(
    // (null is no filter at all: every document, as an empty body)
    { weight: 2, arbitrary: nastyValue.filter(v => v !== null && (typeof v !== 'object' || Array.isArray(v))).map(v => ({ value: v, label: 'filter:not-an-object' })) },
    { weight: 1, arbitrary: fc.constantFrom(...CODE_OPS).map(op => ({ value: { [op]: 'this.a == 1' }, label: 'filter:code' })) },
    { weight: 2, arbitrary: fc.tuple(field, operatorName).map(([f, op]) => ({ value: { [f]: { [op]: 1 } }, label: 'filter:unknown-operator' })) },
    { weight: 1, arbitrary: operatorName.map(op => ({ value: { [op]: [{ a: 1 }] }, label: 'filter:unknown-top-operator' })) },
    { weight: 1, arbitrary: fc.tuple(field, fc.constantFrom('(', '[', '*', '\\', '(?<', 'a{2,1}')).map(([f, re]) => ({ value: { [f]: { $regex: re } }, label: 'filter:bad-regex' })) },
    { weight: 1, arbitrary: fc.constantFrom('$and', '$or', '$nor').chain(op => notArray.map(v => ({ value: { [op]: v }, label: 'filter:logical-not-array' }))) },
    { weight: 1, arbitrary: fc.integer({ min: 40, max: 400 }).map(d => ({ value: { a: nestedObject(d) }, label: 'filter:too-deep' })) },
    { weight: 1, arbitrary: fc.constant({ value: { a: 'x'.repeat(70 * 1024) }, label: 'filter:too-big' }) },
    { weight: 1, arbitrary: fc.constantFrom('__proto__', 'constructor.prototype', 'a.__proto__.b').map(k => ({ value: { [k]: 1 }, label: 'filter:prototype-path' })) }
  )
}

function pathOf (r: Route, param: string): string {
  return r.pattern.replace(/:[a-z_]+/, param)
}

/** One malformed request for `r`, with the token. */
function malformed (r: Route, token: string): fc.Arbitrary<Sent> {
  const auth = { authorization: `Bearer ${token}` }
  const withBody = (path: string, b: { ct: string | null, body: Uint8Array | undefined, label: string }): Sent =>
    ({ route: `${r.method} ${r.pattern}`, method: r.method, path, headers: { ...auth, ...(b.ct != null ? { 'content-type': b.ct } : {}) }, body: b.body, label: b.label, want: '4xx' })
  // bodies for a route: mutated samples the schema refuses, bad updates/filters, or unparseable
  const bodies: fc.Arbitrary<{ ct: string | null, body: Uint8Array | undefined, label: string }> = (() => {
    const parsedBodies: Array<fc.Arbitrary<{ value: unknown, label: string }>> = []
    if (r.sample != null) {
      parsedBodies.push(mutatedJson(r.sample).map(m => ({ value: m.value, label: `json:${m.how.split('+')[0]}` })).filter(m => r.accepts == null || !r.accepts(JSON.parse(JSON.stringify(m.value) ?? 'null'))))
    }
    if (r.body === 'mongo-update' && r.fields != null) parsedBodies.push(badUpdate(r.fields, r.required ?? []))
    if (r.body === 'mongo-filter' && r.fields != null) parsedBodies.push(badFilter(r.fields))
    const asJson = parsedBodies.map(a => a.map(m => ({ ct: 'application/json', body: json(m.value), label: m.label })))
    return asJson.length > 0 ? fc.oneof({ weight: 3, arbitrary: fc.oneof(...asJson) }, { weight: 1, arbitrary: unparseable }) : unparseable
  })()
  const needsParam = r.pattern.includes('/:')
  if (!needsParam) return bodies.map(b => withBody(r.pattern, b))
  const existing = r.existing
  return fc.oneof(
    // an odd parameter: names nothing, so any body at all is refused (4xx)
    { weight: 2, arbitrary: fc.tuple(oddParam, fc.oneof(bodies, fc.json().map(j => ({ ct: 'application/json', body: utf8(j), label: 'any-json' })))).map(([p, b]) => withBody(pathOf(r, p), { ...b, label: `odd-param/${b.label}` })) },
    // the seeded object: only bodies refused before the handler (or by its schema) — never one that would change it
    ...(existing != null ? [{ weight: 3, arbitrary: (r.body === 'none' ? refusedBeforeHandler : bodies).map(b => withBody(pathOf(r, encodeURIComponent(existing())), { ...b, label: `existing/${b.label}` })) }] : [])
  )
}

/** Anything but a token: missing, empty, another scheme, a wrong one. */
function badAuth (r: Route): fc.Arbitrary<Sent> {
  return fc.tuple(fc.constantFrom<string | null>(null, '', 'Bearer', 'Bearer ', 'Basic dXNlcjpwYXNz', 'bearer x y', `Bearer ${'x'.repeat(43)}`, 'Bearer \u00ff'), fc.json())
    .map(([a, j]) => ({ route: `${r.method} ${r.pattern}`, method: r.method, path: pathOf(r, 'x'), headers: { 'content-type': 'application/json', ...(a != null ? { authorization: a } : {}) }, body: utf8(j), label: 'no-or-wrong-token', want: '4xx' as const }))
}

/** GET /api/peers takes nothing but include=live or include=all (agent/api/routes/mesh.ts). */
function peersQueryOk (q: string): boolean {
  const entries = [...new URLSearchParams(q)]
  return entries.length === 0 || (entries.length === 1 && entries[0][0] === 'include' && ['live', 'all'].includes(entries[0][1]))
}

/** GET routes with malformed query strings and path parameters. */
function malformedGet (): fc.Arbitrary<Sent> {
  const query = fc.oneof(
    fc.dictionary(fc.string({ minLength: 1, maxLength: 10 }), fc.string({ maxLength: 20 }), { minKeys: 1, maxKeys: 4 }).map(d => new URLSearchParams(d).toString()),
    fc.constantFrom('%zz', '%', 'a=%E0%A4%A', '&&&', '=', '==x', 'a[b]=c', 'a[]=1&a[]=2', '__proto__[x]=1', 'constructor[prototype][x]=1', 'include', 'include=', 'include=LIVE', 'include=live&include=all', 'include[]=live', 'limit=0', 'limit=-1', 'limit=1e9', 'limit=abc'),
    fc.integer({ min: 1000, max: 12_000 }).map(n => `q=${'x'.repeat(n)}`)
  )
  const plain = ['/api/health', '/api/node', '/api/peers', '/api/state', '/api/hardware', '/api/hardware/simulated-gpus', '/api/components', '/api/models', '/api/blocks', '/api/instances', '/api/vdags', '/tasks', '/v1/models', '/metrics', '/api/auth', '/api/templates', '/api/mlservices']
  const param = ['/api/peers/:id', '/api/components/:uri', '/api/blocks/:id', '/api/vdags/:name', '/tasks/:id', '/split-runner/:runner_id', '/model-layer/:hash', '/v1/models/:model', '/api/templates/:name', '/api/mlservices/:name']
  return fc.oneof(
    fc.tuple(fc.constantFrom(...plain), query).map(([p, q]) => ({ route: `GET ${p}`, method: 'GET', path: `${p}?${q}`, headers: {}, label: `get-query:${p}`, want: p === '/api/peers' && !peersQueryOk(q) ? '4xx' as const : 'not-5xx' as const })),
    fc.tuple(fc.constantFrom(...param), oddParam, fc.option(query)).map(([p, v, q]) => ({ route: `GET ${p}`, method: 'GET', path: p.replace(/:[a-z_]+/, v) + (q != null ? `?${q}` : ''), headers: {}, label: `get-param:${p}`, want: 'not-5xx' as const }))
  )
}

/** JSON schemas for response_format: supported keywords nested oddly, unsupported ones, impossible ones, not schemas at all. */
const oddJsonSchema: fc.Arbitrary<unknown> = fc.letrec<{ schema: unknown }>(tie => ({
  schema: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constantFrom<unknown>({ type: 'string' }, { type: 'integer' }, { type: 'number' }, { type: 'boolean' }, { type: 'null' }, { type: ['string', 'null'] }, { type: 'nope' },
      { enum: [] }, { enum: ['a', 1, null, { b: [2] }] }, { const: 'x' }, { const: { a: [1, { b: null }] } }, {}, true, false, null, 5, 'string',
      { $ref: '#' }, { anyOf: [{ type: 'string' }] }, { pattern: '(' }, { type: 'string', minLength: 5, maxLength: 1 }, { not: {} }),
    fc.record({ type: fc.constant('object'), properties: fc.dictionary(fc.string({ maxLength: 6 }), tie('schema'), { maxKeys: 3 }), required: fc.array(fc.string({ maxLength: 6 }), { maxLength: 3 }), additionalProperties: fc.oneof(fc.boolean(), tie('schema')) }, { requiredKeys: ['type'] }),
    fc.record({ type: fc.constant('array'), items: tie('schema'), minItems: fc.integer({ min: -1, max: 3 }), maxItems: fc.integer({ min: 0, max: 3 }) }, { requiredKeys: ['type'] })
  )
})).schema

/** Chat and completion requests the request schemas take, with odd contents. */
function oddInference (): fc.Arbitrary<Record<string, unknown>> {
  const text = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'grapheme', maxLength: 20 }), fc.constantFrom('', '\u0000', '<|im_start|>', '\ud800', 'x'.repeat(2000)))
  const common = {
    max_tokens: fc.oneof(fc.integer({ min: 1, max: 12 }), fc.constantFrom(4096, 1_000_000)),
    temperature: fc.double({ min: 0, max: 2, noNaN: true }),
    top_p: fc.double({ min: 0.01, max: 1, noNaN: true }),
    seed: fc.oneof(fc.integer(), fc.constantFrom(0, -1, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER)),
    stop: fc.oneof(fc.string({ minLength: 1, maxLength: 256 }), fc.array(fc.string({ minLength: 1, maxLength: 8 }), { maxLength: 4 }), fc.constant(null)),
    n: fc.integer({ min: 1, max: 8 }),
    frequency_penalty: fc.double({ min: -2, max: 2, noNaN: true }),
    presence_penalty: fc.double({ min: -2, max: 2, noNaN: true }),
    repetition_penalty: fc.double({ min: 0.01, max: 10, noNaN: true }),
    stream: fc.boolean(),
    stream_options: fc.record({ include_usage: fc.boolean() }),
    user: fc.string({ maxLength: 20 }),
    response_format: fc.oneof(fc.constant({ type: 'text' }), fc.constant({ type: 'json_object' }), fc.record({ type: fc.constant('json_schema'), json_schema: fc.record({ name: fc.constantFrom('a', 'answer_1', 'x-y'), schema: oddJsonSchema, strict: fc.option(fc.boolean()) }, { requiredKeys: ['name'] }) }))
  }
  const message = fc.record({
    role: fc.constantFrom('system', 'developer', 'user', 'assistant', 'tool'),
    content: fc.oneof(text, fc.constant(null), fc.array(fc.record({ type: fc.constant('text'), text }), { maxLength: 3 })),
    name: fc.string({ maxLength: 10 })
  }, { requiredKeys: ['role', 'content'] })
  const chat = fc.record({
    ...common,
    messages: fc.array(message, { minLength: 1, maxLength: 4 }),
    logprobs: fc.boolean(),
    top_logprobs: fc.integer({ min: 0, max: 20 }),
    max_completion_tokens: fc.integer({ min: 1, max: 12 }),
    tools: fc.constant([]),
    tool_choice: fc.constantFrom('none', 'auto')
  }, { requiredKeys: ['messages'] })
  const completion = fc.record({
    ...common,
    prompt: fc.oneof(text, text.map(t => [t])),
    logprobs: fc.integer({ min: 0, max: 20 }),
    echo: fc.constant(false),
    best_of: fc.constant(1),
    suffix: fc.constant(null)
  }, { requiredKeys: ['prompt'] })
  return fc.oneof(chat, completion)
    .map(b => ({ model: MODEL, ...b }) as Record<string, unknown>)
    .filter(b => ('prompt' in b ? CompletionRequestSchema : ChatCompletionRequestSchema).safeParse(b).success)
}

// ------------------------------------------------------------------ the test

describe(`HTTP API: ${BODIES} malformed bodies over every state-changing route, ${QUERIES} malformed GETs, one agent process`, () => {
  let agent: AgentProcess
  let base: URL

  /** What the agent holds: every listing a malformed request could have changed. */
  async function snapshot (): Promise<Record<string, unknown>> {
    const get = async (p: string, method = 'GET', body?: unknown): Promise<unknown> => {
      const r = await agent.api(p, { method, body })
      assert.equal(r.status, 200, `${method} ${p}: ${JSON.stringify(r.body).slice(0, 300)}`)
      return r.body
    }
    const state = await get('/api/state') as { digest: string, changes: number, objects: unknown }
    return {
      components: await get('/api/components'),
      models: await get('/api/models'),
      blocks: await get('/api/blocks'),
      instances: await get('/api/instances'),
      vdags: await get('/api/vdags'),
      tasks: await get('/tasks'),
      runners: await get('/split-runners', 'POST', {}),
      layers: await get('/model-layers', 'POST', {}),
      gpus: await get('/api/hardware/simulated-gpus'),
      state: { digest: state.digest, changes: state.changes, objects: state.objects }
    }
  }

  before(async () => {
    agent = await AgentProcess.start({ name: 'fuzz-http' })
    base = new URL(agent.url)
    // something to change: a component, a vDAG, a split runner, a model layer, simulated GPUs
    assert.equal((await agent.api('/api/components', { method: 'POST', body: seed.component })).status, 201)
    assert.equal((await agent.api('/api/vdags', { method: 'POST', body: seed.vdag })).status, 201)
    const runner = await agent.api('/split-runner', { method: 'POST', body: seed.runner })
    assert.equal(runner.status, 201)
    seed.runnerId = runner.body.data.id
    assert.equal((await agent.api('/model-layer', { method: 'POST', body: seed.layer })).status, 201)
    assert.equal((await agent.api('/api/hardware/simulated-gpus', { method: 'PUT', body: seed.gpus })).status, 200)
    const m = tinyModel()
    seed.modelMd5 = m.md5
    assert.equal((await deploy(agent, componentSpec(m), { id: MODEL, component: `tiny-gpt:${m.md5.slice(0, 8)}` })).status, 'ready')
  })
  after(async () => { await stopAll([agent]) })

  test('the fuzz covers every state-changing route the API registers', () => {
    const covered = ROUTES.map(r => `${r.method} ${r.pattern}`).sort()
    assert.deepEqual(covered, registeredRoutes(), 'a route was added or removed: give it an entry in ROUTES (fuzz-http.test.ts)')
  })

  test('every malformed body gets a 4xx (never a 5xx or a hang), and nothing changes', async () => {
    const before = await snapshot()
    const tally = new Tally()
    const arb = fc.oneof(
      { weight: 19, arbitrary: fc.constantFrom(...ROUTES).chain(r => malformed(r, agent.token)) },
      { weight: 1, arbitrary: fc.constantFrom(...ROUTES).chain(r => badAuth(r)) }
    )
    await fc.assert(fc.asyncProperty(arb, async (s: Sent) => {
      const res = await send(base, s.method, s.path, s.headers, s.body)
      tally.add(`${s.route} ${res.status}`)
      assert.ok(res.status >= 400 && res.status < 500, `${s.method} ${s.path.slice(0, 200)} (${s.label}) answered ${res.status}: ${res.body.slice(0, 300)}`)
    }), fuzzParams(BODIES))
    console.log(`malformed bodies: ${tally.total}; ${tally.toString()}`)
    assert.deepEqual(await snapshot(), before, 'no malformed request changed anything')
  })

  test('malformed query strings and path parameters on GET routes: never a 5xx or a hang', async () => {
    const before = await snapshot()
    const statuses = new Tally()
    await fc.assert(fc.asyncProperty(malformedGet(), async (s: Sent) => {
      const res = await send(base, s.method, s.path, s.headers)
      statuses.add(`${s.route} ${res.status}`)
      if (s.want === '4xx') assert.ok(res.status >= 400 && res.status < 500, `${s.path.slice(0, 200)} answered ${res.status}`)
      else assert.ok(res.status < 500, `${s.path.slice(0, 200)} (${s.label}) answered ${res.status}: ${res.body.slice(0, 300)}`)
    }), { ...fuzzParams(QUERIES), seed: FUZZ_SEED + 1 })
    console.log(`malformed GETs: ${statuses.total}; statuses ${statuses.toString()}`)
    assert.deepEqual(await snapshot(), before)
    assert.equal((await agent.api('/api/health')).body.status, 'ok')
  })

  test('/v1 requests that fit the request schema but ask for odd things: never a 5xx, every answer (streamed too) complete', async () => {
    const before = await snapshot()
    const statuses = new Tally()
    await fc.assert(fc.asyncProperty(oddInference(), async (body: Record<string, unknown>) => {
      const path = 'prompt' in body ? '/v1/completions' : '/v1/chat/completions'
      const res = await send(base, 'POST', path, { authorization: `Bearer ${agent.token}`, 'content-type': 'application/json' }, json(body))
      statuses.add(`${path} ${res.status}`)
      assert.ok(res.status < 500, `${path} ${JSON.stringify(body).slice(0, 400)} answered ${res.status}: ${res.body.slice(0, 300)}`)
      if (res.status === 200 && body.stream === true) assert.match(res.body, /data: \[DONE\]\s*$/, 'a stream ends with [DONE]')
      if (res.status === 200 && body.stream !== true) assert.ok(Array.isArray((JSON.parse(res.body) as { choices: unknown[] }).choices))
    }), { ...fuzzParams(ODD_INFERENCE), seed: FUZZ_SEED + 2 })
    console.log(`odd /v1 requests: ${statuses.total}; ${statuses.toString()}`)
    assert.deepEqual(await snapshot(), before)
  })
})
