// The Templates view's logic that needs no browser: the catalogue search, a version diff field by field, the
// deploy decision (whole / split / refused) as text, and the decision carried by a refusal's error body.
import { bytes } from './format.ts'
import type { DeployDecision, MLServiceView, TemplateAnswer, TemplateDeployAnswer, TemplateVersionView } from './types.ts'

/** The architecture of a template's latest version ("llama"), or null when the spec does not say. */
export function architectureOf (t: TemplateAnswer): string | null {
  return t.versions.at(-1)?.spec.model.architecture ?? null
}

/** 134_515_008 → "135M", 1_711_376_384 → "1.7B". */
export function parametersText (n: number | null | undefined): string {
  if (n == null || !Number.isFinite(n) || n <= 0) return '–'
  if (n >= 1e9) return `${(n / 1e9).toFixed(n >= 1e10 ? 0 : 1).replace(/\.0$/, '')}B`
  if (n >= 1e6) return `${Math.round(n / 1e6)}M`
  return `${Math.round(n / 1e3)}K`
}

/**
 * Whether a template matches a search: every word of the query (case-insensitive) occurs in its name, its
 * description, its architecture, its licence or the hub repo it came from. An empty query matches all.
 */
export function matchesSearch (t: TemplateAnswer, query: string): boolean {
  const words = query.toLowerCase().split(/\s+/).filter(w => w !== '')
  if (words.length === 0) return true
  const hay = [t.name, t.description, architectureOf(t), t.license, t.hf].filter((s): s is string => s != null).join('\n').toLowerCase()
  return words.every(w => hay.includes(w))
}

export function filterTemplates (templates: TemplateAnswer[], query: string): TemplateAnswer[] {
  return templates.filter(t => matchesSearch(t, query))
}

/** Whether the model can be had on this machine, in words, and a state for the pill. */
export function availabilityText (t: TemplateAnswer): { state: 'cached' | 'pypi' | 'hub' | 'unknown', text: string } {
  const a = t.availability
  if (a == null) return { state: 'unknown', text: 'from its source (not a built-in)' }
  if (a.state === 'cached') return { state: 'cached', text: `in the weight cache here (${a.quantization})` }
  if (a.state === 'pypi') return { state: 'pypi', text: `obtainable through PyPI: ${a.requirement} (${a.quantization})` }
  return { state: 'hub', text: a.note }
}

/** Quantizations with the memory each needs (at the latest version's context and concurrency) and file size. */
export function quantizationRows (t: TemplateAnswer): Array<{ quantization: string, needBytes: number | null, fileBytes: number | null }> {
  const rows = new Map<string, { quantization: string, needBytes: number | null, fileBytes: number | null }>()
  for (const s of t.sources) rows.set(s.quantization, { quantization: s.quantization, needBytes: null, fileBytes: s.sizeBytes ?? null })
  for (const e of t.estimates) {
    const r = rows.get(e.quantization) ?? { quantization: e.quantization, needBytes: null, fileBytes: null }
    rows.set(e.quantization, { ...r, needBytes: e.totalBytes })
  }
  return [...rows.values()]
}

/** Versions newest first. */
export function newestFirst (versions: TemplateVersionView[]): TemplateVersionView[] {
  return [...versions].sort((a, b) => b.version - a.version)
}

export interface FieldChange {
  /** dotted path: "deploymentConfig.replicas", "sampling.temperature" */
  field: string
  kind: 'added' | 'removed' | 'changed'
  /** the old and new values as text; null where absent */
  from: string | null
  to: string | null
}

function isPlainObject (v: unknown): v is Record<string, unknown> {
  return v != null && typeof v === 'object' && !Array.isArray(v)
}

/** An object's leaves by dotted path; arrays are one leaf (compared as JSON). */
function flatten (v: unknown, prefix: string, out: Map<string, unknown>): Map<string, unknown> {
  if (isPlainObject(v)) {
    for (const [k, x] of Object.entries(v)) {
      if (x === undefined) continue
      flatten(x, prefix === '' ? k : `${prefix}.${k}`, out)
    }
  } else if (prefix !== '') out.set(prefix, v)
  return out
}

function valueText (v: unknown): string {
  return typeof v === 'string' ? v : JSON.stringify(v)
}

/**
 * What changed from version `a` to version `b`, field by field (the spec, and what `model add` is given),
 * sorted by field; fields equal in both are left out.
 */
export function diffVersions (a: Pick<TemplateVersionView, 'spec' | 'modelSource'>, b: Pick<TemplateVersionView, 'spec' | 'modelSource'>): FieldChange[] {
  const fa = flatten({ ...a.spec, modelSource: a.modelSource }, '', new Map())
  const fb = flatten({ ...b.spec, modelSource: b.modelSource }, '', new Map())
  const fields = [...new Set([...fa.keys(), ...fb.keys()])].sort()
  const out: FieldChange[] = []
  for (const field of fields) {
    const inA = fa.has(field)
    const inB = fb.has(field)
    const va = inA ? valueText(fa.get(field)) : null
    const vb = inB ? valueText(fb.get(field)) : null
    if (inA && inB && va === vb) continue
    out.push({ field, kind: !inA ? 'added' : !inB ? 'removed' : 'changed', from: va, to: vb })
  }
  return out
}

/** The free memory per peer a decision was taken with, most free first. */
export function freeRows (d: DeployDecision): Array<{ peer: string, freeBytes: number, fits: boolean }> {
  return Object.entries(d.freeBytes)
    .map(([peer, freeBytes]) => ({ peer, freeBytes, fits: freeBytes >= d.needBytes }))
    .sort((x, y) => y.freeBytes - x.freeBytes || x.peer.localeCompare(y.peer))
}

/** The decision in one sentence with its numbers: which kind, where, memory needed. */
export function decisionSummary (d: DeployDecision | null): string {
  if (d == null) return 'No memory estimate (the parameter count is unknown): deployed whole, placed by policy.'
  if (d.kind === 'whole') return `Whole: the model needs ${bytes(d.needBytes)} and fits on ${d.peer.name} (${bytes(d.peer.freeBytes)} free).`
  if (d.kind === 'split') {
    const stages = d.stages.map(s => `${s.peer.name} layers ${s.layers[0]}–${s.layers[1] - 1} (${bytes(s.bytes)})`).join(', ')
    return `Split into ${d.stages.length} stages: the model needs ${bytes(d.needBytes)} and no peer has that free; ${stages}.`
  }
  const most = freeRows(d)[0]
  return `Refused: the model needs ${bytes(d.needBytes)}; ${most == null ? 'no live peer reports its memory' : `the most free on one peer is ${bytes(most.freeBytes)} (${most.peer})`}.`
}

/**
 * A refusal comes as an error (422 does_not_fit) whose details hold the same answer as a dry run; the answer,
 * or null when the body is another error.
 */
export function deployAnswerOfError (body: unknown): TemplateDeployAnswer | null {
  const d = (body as { error?: { details?: unknown } } | null)?.error?.details as Partial<TemplateDeployAnswer> | undefined
  if (d == null || typeof d !== 'object' || typeof d.template !== 'string' || typeof d.version !== 'string' || !('decision' in d)) return null
  return d as TemplateDeployAnswer
}

/** A service's rollout in words (null: none recorded). */
export function rolloutText (s: Pick<MLServiceView, 'rollout'>): string | null {
  const r = s.rollout
  if (r == null) return null
  switch (r.phase) {
    case 'starting': return `starting ${r.to.version} as ${r.to.unit}${r.task != null ? ` (split task ${r.task})` : ''}; ${r.from.version} answers meanwhile`
    case 'draining': return `answering from ${r.to.version}; ${r.from.unit} finishes its requests in flight`
    case 'done': return `rolled from ${r.from.version} to ${r.to.version}${r.error != null ? ` (${r.error})` : ''}`
    case 'failed': return `rollout to ${r.to.version} failed: ${r.error ?? 'no reason given'}; still on ${r.from.version}`
  }
}

/** The newer version a service could roll to: its template's latest when that is not what it runs (null: none). */
export function rollTarget (s: Pick<MLServiceView, 'version' | 'rollout'>, templates: Array<Pick<TemplateAnswer, 'name' | 'latest'>>): string | null {
  if (s.rollout != null && (s.rollout.phase === 'starting' || s.rollout.phase === 'draining')) return null
  const m = /^(.+)-v(\d+)$/.exec(s.version)
  const t = templates.find(x => x.name === (m?.[1] ?? s.version))
  return t != null && t.latest !== s.version ? t.latest : null
}
