import { useMemo, useState } from 'preact/hooks'
import { api, errorOf, headersFor, messageOf } from '../api.ts'
import { useStore } from '../store.ts'
import { auth } from '../auth.ts'
import { usePoll } from '../poll.ts'
import { NeedsLogin } from '../components/login.tsx'
import { ago, bytes } from '../format.ts'
import {
  architectureOf, availabilityText, decisionSummary, deployAnswerOfError, diffVersions, filterTemplates, freeRows, newestFirst, parametersText, quantizationRows, rollTarget, rolloutText
} from '../template-model.ts'
import type { MLServiceRollAnswer, MLServicesAnswer, MLServiceView, TemplateAnswer, TemplateDeployAnswer, TemplatesAnswer } from '../types.ts'

/**
 * POST /api/templates/:ref/deploy. A refusal comes as 422 does_not_fit whose details hold the answer (the
 * decision with its numbers): that is returned like a dry run's; any other failure throws the API's message.
 */
async function deployCall (ref: string, body: Record<string, unknown>): Promise<TemplateDeployAnswer> {
  const res = await fetch(`/api/templates/${encodeURIComponent(ref)}/deploy`, {
    method: 'POST', headers: headersFor('POST', true), body: JSON.stringify(body), credentials: 'omit', cache: 'no-store'
  })
  const text = await res.text()
  let parsed: unknown = text
  try { parsed = text === '' ? null : JSON.parse(text) } catch { /* not JSON */ }
  if (res.ok) return parsed as TemplateDeployAnswer
  const refused = res.status === 422 ? deployAnswerOfError(parsed) : null
  if (refused != null) return refused
  throw errorOf(res.status, parsed)
}

function Decision ({ answer }: { answer: TemplateDeployAnswer }) {
  const d = answer.decision
  return (
    <div class="decision" data-testid="deploy-decision" data-kind={d?.kind ?? 'none'}>
      <p class={d?.kind === 'refused' ? 'error' : ''} data-testid="decision-summary"><span class={`pill ${d?.kind ?? ''}`}>{d?.kind ?? 'no estimate'}</span> {decisionSummary(d)}</p>
      {d != null && <p class="muted">{d.reason}</p>}
      {answer.estimate != null && (
        <p class="muted" data-testid="decision-estimate">
          {answer.version}, {answer.estimate.quantization}: weights {bytes(answer.estimate.weightsBytes)} + KV cache {bytes(answer.estimate.kvCacheBytes)} + runtime {bytes(answer.estimate.runtimeBytes)} = {bytes(answer.estimate.totalBytes)}
        </p>)}
      {d?.kind === 'split' && (
        <table data-testid="decision-stages">
          <thead><tr><th>stage</th><th>peer</th><th>layers</th><th>memory</th></tr></thead>
          <tbody>{d.stages.map((s, i) => <tr key={i}><td>{i + 1}</td><td>{s.peer.name}</td><td>{s.layers[0]}–{s.layers[1] - 1}</td><td>{bytes(s.bytes)}</td></tr>)}</tbody>
        </table>)}
      {d != null && (
        <table data-testid="decision-free">
          <thead><tr><th>peer</th><th>free</th><th class="wide">needed / free</th></tr></thead>
          <tbody>
            {freeRows(d).map(r => (
              <tr key={r.peer}>
                <td>{r.peer}{d.kind === 'whole' && d.peer.name === r.peer && <span class="badge">chosen</span>}</td>
                <td>{bytes(r.freeBytes)}</td>
                <td><progress max={Math.max(1, r.freeBytes)} value={Math.min(d.needBytes, r.freeBytes)} class={r.fits ? '' : 'hot'} aria-label={`${bytes(d.needBytes)} needed of ${bytes(r.freeBytes)} free on ${r.peer}`} /></td>
              </tr>
            ))}
          </tbody>
        </table>)}
      {answer.note != null && <p class="muted" data-testid="decision-note">{answer.note}</p>}
    </div>
  )
}

function DeployDialog ({ template, onClose, onDeployed }: { template: TemplateAnswer, onClose: () => void, onDeployed: () => void }) {
  const { token } = useStore(auth.state)
  const versions = newestFirst(template.versions)
  const [version, setVersion] = useState(template.latest)
  const [name, setName] = useState(template.name)
  const [replicas, setReplicas] = useState(String(versions[0]?.spec.deploymentConfig.replicas ?? 1))
  const [preview, setPreview] = useState<TemplateDeployAnswer | null>(null)
  const [result, setResult] = useState<TemplateDeployAnswer | null>(null)
  const [error, setError] = useState<string | null>(null)
  const [busy, setBusy] = useState(false)
  const body = (dryRun: boolean): Record<string, unknown> => {
    const n = Number(replicas)
    return { ...(name.trim() !== '' ? { name: name.trim() } : {}), ...(replicas.trim() !== '' ? { replicas: Number.isFinite(n) ? n : replicas } : {}), ...(dryRun ? { dryRun: true } : {}) }
  }
  const run = async (dryRun: boolean): Promise<void> => {
    setBusy(true)
    setError(null)
    if (!dryRun) setResult(null)
    try {
      const answer = await deployCall(version, body(dryRun))
      if (dryRun) setPreview(answer)
      else {
        setResult(answer)
        setPreview(answer)
        if (answer.deployed) onDeployed()
      }
    } catch (err) { setError(messageOf(err)) } finally { setBusy(false) }
  }
  const refused = preview?.decision?.kind === 'refused'
  return (
    <div class="modal" role="dialog" aria-modal="true" aria-labelledby="deploy-title" data-testid="deploy-dialog" onKeyDown={e => { if (e.key === 'Escape') onClose() }}>
      <div class="card wide-modal">
        <h2 id="deploy-title">Deploy {template.name}</h2>
        {token == null && <NeedsLogin what="preview and deploy" />}
        <div class="grid">
          <label class="field"><span>Version</span>
            <select data-testid="deploy-version" value={version} onChange={e => { setVersion((e.target as HTMLSelectElement).value); setPreview(null) }}>
              {versions.map(v => <option key={v.name} value={v.name}>{v.name}{v.name === template.latest ? ' (latest)' : ''}</option>)}
            </select>
          </label>
          <label class="field"><span>Model name</span>
            <input data-testid="deploy-name" value={name} onInput={e => { setName((e.target as HTMLInputElement).value); setPreview(null) }} />
          </label>
          <label class="field"><span>Replicas</span>
            <input type="number" min={1} class="narrow" data-testid="deploy-replicas" value={replicas} onInput={e => { setReplicas((e.target as HTMLInputElement).value); setPreview(null) }} />
          </label>
        </div>
        <div class="row">
          <button class="secondary" data-testid="deploy-preview" disabled={busy || token == null} onClick={() => { void run(true) }}>{busy ? 'Working…' : 'Preview'}</button>
          <button data-testid="deploy-go" disabled={busy || token == null || preview == null || refused}
            title={preview == null ? 'preview the decision first' : refused ? 'it fits nowhere' : 'deploy it now'}
            onClick={() => { void run(false) }}>Deploy</button>
          <button class="secondary" data-testid="deploy-close" onClick={onClose}>Close</button>
        </div>
        {preview != null && <Decision answer={preview} />}
        {result != null && (
          <p class={result.deployed ? 'ok' : 'muted'} role="status" data-testid="deploy-result">
            {result.deployed ? `Deployed ${result.version} as block ${result.block?.id ?? result.model}: chat with model "${result.model}".` : 'Nothing deployed.'}
          </p>)}
        {error != null && <p class="error" role="alert" data-testid="deploy-error">{error}</p>}
      </div>
    </div>
  )
}

function Detail ({ template }: { template: TemplateAnswer }) {
  const versions = newestFirst(template.versions)
  const [from, setFrom] = useState(versions[1]?.name ?? versions[0]?.name ?? '')
  const [to, setTo] = useState(versions[0]?.name ?? '')
  const a = template.versions.find(v => v.name === from)
  const b = template.versions.find(v => v.name === to)
  const changes = useMemo(() => a != null && b != null ? diffVersions(a, b) : [], [a, b])
  return (
    <div class="card" data-testid="template-detail" data-template={template.name}>
      <h2>{template.name}</h2>
      <p class="muted">{template.description}</p>
      <h3>Versions</h3>
      <table>
        <thead><tr><th>version</th><th>written</th><th>source</th><th>weights</th><th>context × sequences</th><th>replicas</th></tr></thead>
        <tbody>
          {versions.map(v => (
            <tr key={v.name} data-testid="template-version" data-version={v.name}>
              <td class="mono">{v.name}{v.name === template.latest && <span class="badge">latest</span>}</td>
              <td>{v.createdAt != null ? ago(v.createdAt) : v.builtin ? 'built-in' : '–'}</td>
              <td class="mono">{v.modelSource}</td>
              <td>{v.spec.weights}</td>
              <td>{v.spec.contextLength} × {v.spec.maxConcurrentSequences}</td>
              <td>{v.spec.deploymentConfig.replicas}{v.spec.deploymentConfig.maxReplicas != null ? `–${v.spec.deploymentConfig.maxReplicas}` : ''}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h3>Diff between versions</h3>
      {versions.length < 2
        ? <p class="muted" data-testid="version-diff-none">One version only: an update writes {template.name}-v2.</p>
        : (
          <>
            <div class="row">
              <label class="inline">from <select data-testid="diff-from" value={from} onChange={e => { setFrom((e.target as HTMLSelectElement).value) }}>{versions.map(v => <option key={v.name} value={v.name}>{v.name}</option>)}</select></label>
              <label class="inline">to <select data-testid="diff-to" value={to} onChange={e => { setTo((e.target as HTMLSelectElement).value) }}>{versions.map(v => <option key={v.name} value={v.name}>{v.name}</option>)}</select></label>
            </div>
            {changes.length === 0
              ? <p class="muted" data-testid="version-diff-none">No field differs.</p>
              : (
                <table data-testid="version-diff">
                  <thead><tr><th>field</th><th>old</th><th>new</th></tr></thead>
                  <tbody>
                    {changes.map(c => (
                      <tr key={c.field} data-testid="diff-row" data-field={c.field} data-kind={c.kind}>
                        <td class="mono">{c.field}</td>
                        <td class="mono">{c.from ?? <span class="muted">(absent)</span>}</td>
                        <td class="mono">{c.to ?? <span class="muted">(absent)</span>}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>)}
          </>)}
    </div>
  )
}

function TemplateRow ({ template, selected, onSelect, onDeploy }: { template: TemplateAnswer, selected: boolean, onSelect: () => void, onDeploy: () => void }) {
  const avail = availabilityText(template)
  return (
    <tr data-testid="template" data-template={template.name} class={selected ? 'selected' : ''}>
      <td>
        <strong>{template.name}</strong>{template.builtin ? <span class="badge">built-in</span> : <span class="badge">yours</span>}
        <div class="muted">{template.description}</div>
        {template.hf != null && <div class="muted mono">{template.hf}</div>}
      </td>
      <td>{architectureOf(template) ?? '–'}</td>
      <td>{parametersText(template.parameters)}</td>
      <td>{template.contextLength ?? '–'}</td>
      <td>{template.license ?? '–'}</td>
      <td>
        <ul class="quants">
          {quantizationRows(template).map(q => (
            <li key={q.quantization} data-testid="quantization" data-quantization={q.quantization}>
              <span class="mono">{q.quantization}</span> {q.needBytes != null ? `needs ${bytes(q.needBytes)}` : 'needs ?'}{q.fileBytes != null && <span class="muted"> · file {bytes(q.fileBytes)}</span>}
            </li>
          ))}
        </ul>
      </td>
      <td><span class={`pill avail-${avail.state}`} data-testid="availability" title={avail.text}>{avail.state === 'unknown' ? 'source' : avail.state}</span></td>
      <td>
        <div class="row">
          <button class="secondary" data-testid="template-open" onClick={onSelect}>{selected ? 'Hide' : 'Versions'}</button>
          <button data-testid="template-deploy" onClick={onDeploy}>Deploy…</button>
        </div>
      </td>
    </tr>
  )
}

function TemplateTable ({ templates, selected, onSelect, onDeploy, testid }: { templates: TemplateAnswer[], selected: string | null, onSelect: (n: string | null) => void, onDeploy: (t: TemplateAnswer) => void, testid: string }) {
  return (
    <table data-testid={testid}>
      <thead><tr><th class="wide">template</th><th>architecture</th><th>parameters</th><th>context</th><th>licence</th><th>quantizations</th><th>here</th><th /></tr></thead>
      <tbody>
        {templates.map(t => <TemplateRow key={t.name} template={t} selected={selected === t.name} onSelect={() => { onSelect(selected === t.name ? null : t.name) }} onDeploy={() => { onDeploy(t) }} />)}
      </tbody>
    </table>
  )
}

function Services ({ services, templates, error, onRolled }: { services: MLServiceView[] | null, templates: TemplateAnswer[], error: string | null, onRolled: () => void }) {
  const { token } = useStore(auth.state)
  const [rollError, setRollError] = useState<string | null>(null)
  const roll = async (name: string, version: string): Promise<void> => {
    setRollError(null)
    try {
      await api<MLServiceRollAnswer>(`/api/mlservices/${encodeURIComponent(name)}/rollout`, { method: 'POST', body: { version } })
      onRolled()
    } catch (err) {
      setRollError(messageOf(err))
    }
  }
  return (
    <div class="card" data-testid="services">
      <h2>Services</h2>
      {error != null && <p class="error" role="alert">Could not load: {error}</p>}
      {rollError != null && <p class="error" role="alert" data-testid="roll-error">{rollError}</p>}
      {services != null && services.length === 0 && <p class="muted">No service yet: deploy a template, or POST an MLService to /api/mlservices (YAML or JSON).</p>}
      {services != null && services.length > 0 && (
        <table>
          <thead><tr><th>service</th><th>version</th><th>served by</th><th>decision</th><th>status</th><th>rollout</th><th>created</th><th /></tr></thead>
          <tbody>
            {services.map(s => {
              const next = rollTarget(s, templates)
              return (
                <tr key={`${s.namespace}/${s.name}`} data-testid="service" data-service={s.name} data-phase={s.rollout?.phase ?? ''}>
                  <td>{s.name} <span class="muted">{s.namespace}</span></td>
                  <td class="mono">{s.version}</td>
                  <td class="mono">{s.target}</td>
                  <td>{s.decision ?? '–'}</td>
                  <td><span class={`pill ${s.ready ? 'ready' : 'pending'}`}>{s.ready ? 'ready' : 'not serving'}</span></td>
                  <td class="muted" data-testid="rollout">{rolloutText(s) ?? '–'}</td>
                  <td>{ago(s.createdAt)}</td>
                  <td>{next != null && token != null && <button type="button" data-testid="roll" title={`deploy ${next} beside ${s.version}, switch when it serves, drain ${s.version}`} onClick={() => { void roll(s.name, next) }}>Roll to {next}</button>}</td>
                </tr>)
            })}
          </tbody>
        </table>)}
    </div>
  )
}

/**
 * Model templates: the built-in catalogue and the user's templates with a search (name, architecture,
 * licence), each with its quantizations and the memory they need and whether it can be had here; a
 * template's versions with a diff between two; a deploy dialog whose preview shows the mesh's decision
 * (whole / split / refused, with its numbers) before deploying; the services with their status, their
 * rollouts, and a button rolling one to its template's latest version.
 */
export function TemplatesView () {
  const [templates, setTemplates] = useState<TemplateAnswer[] | null>(null)
  const [services, setServices] = useState<MLServiceView[] | null>(null)
  const [query, setQuery] = useState('')
  const [selected, setSelected] = useState<string | null>(null)
  const [deploying, setDeploying] = useState<TemplateAnswer | null>(null)
  const tPoll = usePoll(async (signal) => { setTemplates((await api<TemplatesAnswer>('/api/templates', { signal })).templates) }, 15000)
  const sPoll = usePoll(async (signal) => { setServices((await api<MLServicesAnswer>('/api/mlservices', { signal })).services) }, 5000)
  const shown = useMemo(() => filterTemplates(templates ?? [], query), [templates, query])
  const builtin = shown.filter(t => t.builtin)
  const mine = shown.filter(t => !t.builtin)
  const detail = templates?.find(t => t.name === selected) ?? null
  return (
    <section class="templates">
      <div class="card" data-testid="templates">
        <div class="row spread">
          <h2>Model templates</h2>
          <input type="search" class="grow search" placeholder="search: name, architecture, licence" aria-label="search templates" data-testid="template-search"
            value={query} onInput={e => { setQuery((e.target as HTMLInputElement).value) }} />
        </div>
        {tPoll.error != null && <p class="error" role="alert">Could not load: {tPoll.error}</p>}
        {templates != null && shown.length === 0 && <p class="muted" data-testid="templates-none">No template matches “{query}”.</p>}
        {builtin.length > 0 && (<><h3>Catalogue</h3><TemplateTable testid="catalogue" templates={builtin} selected={selected} onSelect={setSelected} onDeploy={setDeploying} /></>)}
        {mine.length > 0 && (<><h3>Your templates</h3><TemplateTable testid="user-templates" templates={mine} selected={selected} onSelect={setSelected} onDeploy={setDeploying} /></>)}
      </div>
      {detail != null && <Detail key={detail.name} template={detail} />}
      <Services services={services} templates={templates ?? []} error={sPoll.error} onRolled={() => { sPoll.reload() }} />
      {deploying != null && <DeployDialog template={deploying} onClose={() => { setDeploying(null) }} onDeployed={() => { sPoll.reload(); tPoll.reload() }} />}
    </section>
  )
}
