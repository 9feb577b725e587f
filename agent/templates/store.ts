/**
 * Model templates (ModelTemplate), their versions (ModelTemplateVersion) and ML services (MLService) in the
 * mesh's replicated desired state (collections `templates`, `templateversions`, `mlservices`): written on any
 * agent, known to every agent.
 *
 * Versions are named `NAME-v1`, `NAME-v2`, … and are never changed: an update writes the next version (the
 * latest with the update's changes) and leaves every earlier one as it was. The built-in catalogue
 * (catalogue.ts) gives each of its models a template whose `v1` is computed from the catalogue on every
 * agent (the same code gives the same v1 everywhere) and never stored; an update of a built-in template
 * stores `NAME-v2` onwards.
 *
 * Two agents updating one template at the same moment (a partition, say) both write the same next name;
 * the replicated state keeps one of them (the desired state's rule: highest Lamport counter, then actor).
 */
import type { DesiredState } from '../state/replica.ts'
import { NotFoundError } from '../errors.ts'
import { ConflictError } from '../registry/components.ts'
import { CATALOGUE, catalogueEntry } from './catalogue.ts'
import type { CatalogueEntry } from './catalogue.ts'
import {
  StoredTemplateSchema, StoredVersionSchema, VersionSpecSchema, parseVersionRef, sourceOf, sourceUri, versionName
} from './schemas.ts'
import type { StoredTemplate, UpdateTemplateBody, VersionSpec, VersionSpecInput } from './schemas.ts'

export interface TemplateVersionView {
  /** NAME-vN */
  name: string
  template: string
  version: number
  /** from the built-in catalogue (not stored) */
  builtin: boolean
  /** when it was written (null for a built-in v1) */
  createdAt: string | null
  /** peer ID of the agent that wrote it (null for a built-in v1) */
  writer: string | null
  spec: VersionSpec
  /** what `model add` is given for it */
  modelSource: string
}

export interface TemplateRecord {
  name: string
  description: string
  builtin: boolean
  /** the hub repo it was created from */
  hf: string | null
  /** the catalogue entry, for a built-in template */
  catalogue: CatalogueEntry | null
  /** oldest first */
  versions: TemplateVersionView[]
}

/** v1 of a catalogue model: its first (default) quantization, the catalogue's shape and licence. */
export function builtinVersion (e: CatalogueEntry): VersionSpec {
  const s = e.sources[0]
  return VersionSpecSchema.parse({
    source: { kind: 'hub', repo: s.repo, revision: 'main', file: s.file, quantization: s.quantization },
    engine_config: { model_id: e.upstream },
    weights: 'q8',
    contextLength: Math.min(e.shape.contextLength, 2048),
    maxConcurrentSequences: 4,
    deploymentConfig: { replicas: 1, maxReplicas: 1 },
    model: {
      architecture: e.shape.architecture,
      parameters: e.shape.parameters,
      layers: e.shape.layers,
      hidden: e.shape.hidden,
      heads: e.shape.heads,
      kvHeads: e.shape.kvHeads,
      ...(e.shape.headDim != null ? { headDim: e.shape.headDim } : {}),
      vocab: e.shape.vocab,
      contextLength: e.shape.contextLength,
      license: e.license,
      files: e.sources.map(x => ({ quantization: x.quantization, file: x.file, sizeBytes: x.sizeBytes ?? null }))
    }
  } satisfies VersionSpecInput)
}

/** The update's changes applied to a version's spec (objects merged one level, the rest replaced). */
export function applyUpdate (spec: VersionSpec, u: UpdateTemplateBody): VersionSpec {
  const { description: _d, ...changes } = u
  const next: Record<string, unknown> = { ...spec }
  for (const [k, v] of Object.entries(changes)) {
    if (v === undefined) continue
    const cur = next[k]
    next[k] = ['sampling', 'deploymentConfig', 'model', 'engine_config', 'scalingConfig'].includes(k) && cur != null && typeof cur === 'object'
      ? { ...cur as object, ...v as object }
      : v
  }
  // a new source makes the old file list and shape someone else's
  if (changes.source != null && changes.model == null && JSON.stringify(changes.source) !== JSON.stringify(spec.source)) next.model = {}
  return VersionSpecSchema.parse(next)
}

export class TemplateStore {
  private readonly state: DesiredState
  constructor (state: DesiredState) { this.state = state }

  private storedTemplate (name: string): { value: StoredTemplate, created: number } | undefined {
    const e = this.state.get<unknown>('templates', name)
    if (e == null) return undefined
    const p = StoredTemplateSchema.safeParse(e.value)
    return p.success ? { value: p.data, created: e.created } : undefined
  }

  private storedVersions (name: string): TemplateVersionView[] {
    const out: TemplateVersionView[] = []
    for (const e of this.state.list<unknown>('templateversions')) {
      const p = StoredVersionSchema.safeParse(e.value)
      if (!p.success || p.data.template !== name || e.id !== versionName(name, p.data.version)) continue
      out.push({ name: e.id, template: name, version: p.data.version, builtin: false, createdAt: new Date(e.created).toISOString(), writer: e.writer, spec: p.data.spec, modelSource: sourceUri(sourceOf(p.data.spec)) })
    }
    return out
  }

  find (name: string): TemplateRecord | undefined {
    const builtin = catalogueEntry(name)
    const stored = this.storedTemplate(name)
    if (builtin == null && stored == null) return undefined
    const versions = this.storedVersions(name)
    if (builtin != null) {
      const spec = builtinVersion(builtin)
      versions.push({ name: versionName(name, 1), template: name, version: 1, builtin: true, createdAt: null, writer: null, spec, modelSource: sourceUri(sourceOf(spec)) })
    }
    // a built-in v1 wins over anything stored under its name (nothing stores v1 of a built-in)
    const byVersion = new Map<number, TemplateVersionView>()
    for (const v of versions) if (!byVersion.has(v.version) || v.builtin) byVersion.set(v.version, v)
    return {
      name,
      description: stored?.value.description ?? builtin?.description ?? '',
      builtin: builtin != null,
      hf: stored?.value.hf ?? null,
      catalogue: builtin ?? null,
      versions: [...byVersion.values()].sort((a, b) => a.version - b.version)
    }
  }

  get (name: string): TemplateRecord {
    const t = this.find(name)
    if (t == null) throw new NotFoundError(`no template ${name} (blockmesh template list shows the catalogue and yours)`)
    return t
  }

  /** The catalogue's templates, then the stored ones by name. */
  list (): TemplateRecord[] {
    const names = new Set<string>(CATALOGUE.map(e => e.name))
    const mine = this.state.list<unknown>('templates').map(e => e.id).filter(n => !names.has(n)).sort()
    return [...CATALOGUE.map(e => e.name), ...mine].map(n => this.find(n)).filter((t): t is TemplateRecord => t != null)
  }

  /** NAME-vN, or NAME (its latest version). */
  version (ref: string): { template: TemplateRecord, version: TemplateVersionView } {
    const direct = this.find(ref)
    const { template, version } = direct != null ? { template: ref, version: undefined } : parseVersionRef(ref)
    const t = this.get(template)
    const v = version == null ? t.versions.at(-1) : t.versions.find(x => x.version === version)
    if (v == null) throw new NotFoundError(`template ${template} has no version ${version ?? ''} (it has ${t.versions.map(x => x.name).join(', ') || 'none'})`)
    return { template: t, version: v }
  }

  /** A new template and its v1. */
  async create (t: StoredTemplate, spec: VersionSpec): Promise<TemplateRecord> {
    if (catalogueEntry(t.name) != null) throw new ConflictError(`${t.name} is a built-in template; update it (PUT) to make ${t.name}-v2, or choose another name`)
    await this.state.put('templates', t.name, StoredTemplateSchema.parse(t), current => {
      if (current != null) throw new ConflictError(`template ${t.name} exists; update it to make a new version`)
    })
    await this.writeVersion(t.name, 1, spec)
    return this.get(t.name)
  }

  /** The next version: the latest with the update's changes. Earlier versions are left as they are. */
  async update (name: string, u: UpdateTemplateBody): Promise<{ template: TemplateRecord, version: TemplateVersionView }> {
    const t = this.get(name)
    const latest = t.versions.at(-1)
    if (latest == null) throw new NotFoundError(`template ${name} has no version to start from`)
    const spec = applyUpdate(latest.spec, u)
    const stored = this.storedTemplate(name)
    if (stored == null || (u.description != null && u.description !== stored.value.description)) {
      await this.state.put('templates', name, StoredTemplateSchema.parse({ ...(stored?.value ?? { name }), ...(u.description != null ? { description: u.description } : {}) }))
    }
    let n = latest.version + 1
    for (;;) {
      try {
        await this.writeVersion(name, n, spec)
        break
      } catch (err) {
        // written meanwhile (a concurrent update here): take the next number
        if (!(err instanceof ConflictError) || n > latest.version + 16) throw err
        n++
      }
    }
    return this.version(versionName(name, n))
  }

  private async writeVersion (name: string, version: number, spec: VersionSpec): Promise<void> {
    const id = versionName(name, version)
    await this.state.put('templateversions', id, StoredVersionSchema.parse({ template: name, version, spec }), current => {
      if (current != null) throw new ConflictError(`version ${id} exists; versions are never changed`)
    })
  }
}
