import { useEffect, useState } from 'preact/hooks'
import { parse as parseYaml } from 'yaml'
import { api, ApiError, messageOf } from '../api.ts'
import { useStore } from '../store.ts'
import { auth } from '../auth.ts'
import type { Block, BlocksAnswer, Component, ComponentsAnswer } from '../types.ts'
import { Field } from '../components/field.tsx'
import { usePoll } from '../poll.ts'
import { compact, numberOrText } from '../form.ts'
import { NeedsLogin } from '../components/login.tsx'
import { bytes } from '../format.ts'
import { AddModel } from './add-model.tsx'

const POLICY_FIELDS = {
  cluster: [
    { key: 'names', label: 'Cluster names', hint: 'comma-separated; empty: any' },
    { key: 'vendor', label: 'Vendor', hint: 'provider label of the nodes' },
    { key: 'minGpus', label: 'Min GPUs in cluster' },
    { key: 'minFreeGpuMemory', label: 'Min free GPU memory in cluster', hint: 'e.g. 48GiB' },
    { key: 'maxCpuLoad15', label: 'Max cluster CPU load (15 min)' }
  ],
  node: [
    { key: 'gpus', label: 'GPUs per instance' },
    { key: 'minFreeGpuMemory', label: 'Min free memory per GPU', hint: 'e.g. 16GiB' },
    { key: 'maxGpuUtilisation', label: 'Max GPU utilisation %' },
    { key: 'minCpus', label: 'Min CPUs' },
    { key: 'minRam', label: 'Min available RAM', hint: 'e.g. 4GiB' },
    { key: 'maxCpuLoad15', label: 'Max node CPU load (15 min)' }
  ]
} as const

type Form = Record<string, string>

/** The form's values as a block spec: only what was filled, numbers where they parse. */
function specOf (f: Form): Record<string, unknown> {
  const names = (f['cluster.names'] ?? '').split(',').map(s => s.trim()).filter(Boolean)
  return compact({
    id: f.id?.trim() || undefined,
    component: f.component,
    minInstances: numberOrText(f.minInstances ?? ''),
    maxInstances: numberOrText(f.maxInstances ?? ''),
    executionProvider: f.executionProvider || undefined,
    policy: {
      cluster: {
        names: names.length > 0 ? names : undefined,
        vendor: f['cluster.vendor']?.trim() || undefined,
        minGpus: numberOrText(f['cluster.minGpus'] ?? ''),
        minFreeGpuMemory: numberOrText(f['cluster.minFreeGpuMemory'] ?? ''),
        maxCpuLoad15: numberOrText(f['cluster.maxCpuLoad15'] ?? '')
      },
      node: Object.fromEntries(POLICY_FIELDS.node.map(({ key }) => [key, numberOrText(f[`node.${key}`] ?? '')]))
    }
  })
}

function Placement ({ block }: { block: Block }) {
  return (
    <div class="placement" data-testid="placement">
      {block.instances.length > 0 && (
        <p>Placed {block.instances.length} of {block.target}: {block.instances.map(i => `${i.peerName} (${i.status})`).join(', ')}</p>
      )}
      {block.refusal != null && block.refusal.length > 0 && (
        <div class="refusal" data-testid="refusal">
          <p><strong>Not placed:</strong></p>
          <ul>{block.refusal.map((r, i) => <li key={i}><span class="mono">{r.filter}</span>: {r.message}</li>)}</ul>
        </div>
      )}
      {block.error != null && block.refusal == null && <p class="error">{block.error}</p>}
    </div>
  )
}

function BlockRow ({ block, canWrite, onChange }: { block: Block, canWrite: boolean, onChange: () => void }) {
  const [count, setCount] = useState(String(block.target))
  useEffect(() => { setCount(String(block.target)) }, [block.target])
  const [error, setError] = useState<string | null>(null)
  const act = async (fn: () => Promise<unknown>): Promise<void> => {
    setError(null)
    try { await fn(); onChange() } catch (err) { setError(messageOf(err)) }
  }
  return (
    <tr data-testid="block-row" data-block={block.id}>
      <td class="mono">{block.id}</td>
      <td class="mono">{block.component}</td>
      <td><span class={`pill ${block.status}`} data-testid="block-status">{block.status}</span>{block.runtime != null && <span class="muted"> {block.runtime.provider}</span>}</td>
      <td>{block.instances.map(i => <div key={i.instance}>{i.peerName} <span class={`pill ${i.status}`}>{i.status}</span></div>)}<Placement block={{ ...block, instances: [] }} /></td>
      <td data-testid="block-reconciler">{block.reconciler != null ? <span title={`term ${block.reconciler.term}`}>{block.reconciler.name}</span> : <span class="muted">none yet</span>}</td>
      <td>
        <div class="row">
          <input type="number" min={0} aria-label={`instances of ${block.id}`} class="narrow" value={count} onInput={e => { setCount((e.target as HTMLInputElement).value) }} disabled={!canWrite} />
          <button class="secondary" disabled={!canWrite} onClick={() => { void act(async () => await api(`/api/blocks/${encodeURIComponent(block.id)}/scale`, { method: 'PUT', body: { instances: numberOrText(count) } })) }}>Scale</button>
          <button class="danger" disabled={!canWrite} data-testid="block-delete" onClick={() => { if (confirm(`Delete block ${block.id} and stop its instances?`)) void act(async () => await api(`/api/blocks/${encodeURIComponent(block.id)}`, { method: 'DELETE' })) }}>Delete</button>
        </div>
        {error != null && <p class="error" role="alert">{error}</p>}
      </td>
    </tr>
  )
}

export function DeployView () {
  const { token } = useStore(auth.state)
  const canWrite = token != null
  const [components, setComponents] = useState<Component[]>([])
  const [blocks, setBlocks] = useState<Block[]>([])
  const [form, setForm] = useState<Form>({ minInstances: '1', maxInstances: '1', executionProvider: 'auto' })
  const [mode, setMode] = useState<'form' | 'file'>('form')
  const [fileSpec, setFileSpec] = useState<{ name: string, spec: unknown } | null>(null)
  const [error, setError] = useState<ApiError | Error | null>(null)
  const [created, setCreated] = useState<Block | null>(null)
  const [busy, setBusy] = useState(false)

  const poll = usePoll(async (signal) => {
    const [c, b] = await Promise.all([api<ComponentsAnswer>('/api/components', { signal }), api<BlocksAnswer>('/api/blocks', { signal })])
    setComponents(c.components)
    setBlocks(b.blocks)
    setCreated(cur => cur == null ? cur : b.blocks.find(x => x.id === cur.id) ?? cur)
  }, 2000)
  useEffect(() => {
    if (form.component == null && components.length > 0) setForm(f => ({ ...f, component: components.find(c => c.spec.stage == null)?.uri ?? components[0].uri }))
  }, [components])

  const set = (k: string) => (e: Event) => { const v = (e.target as HTMLInputElement).value; setForm(f => ({ ...f, [k]: v })) }
  const fieldError = (name: string): string | undefined => error instanceof ApiError ? error.field(name) : undefined

  const readFile = async (file: File | undefined): Promise<void> => {
    setError(null)
    setFileSpec(null)
    if (file == null) return
    if (file.size > 256 * 1024) { setError(new Error(`${file.name} is larger than 256 KiB; a block spec is a few lines`)); return }
    try {
      const text = await file.text()
      setFileSpec({ name: file.name, spec: /\.json$/i.test(file.name) ? JSON.parse(text) : parseYaml(text) })
    } catch (err) { setError(new Error(`${file.name}: ${messageOf(err)}`)) }
  }

  const submit = async (e: Event): Promise<void> => {
    e.preventDefault()
    setBusy(true)
    setError(null)
    setCreated(null)
    try {
      const body = mode === 'file' ? fileSpec?.spec : specOf(form)
      if (body === undefined) throw new Error('choose a block spec file (YAML or JSON) first')
      const block = await api<Block>('/api/blocks', { method: 'POST', body })
      setCreated(block)
      poll.reload()
    } catch (err) {
      setError(err as Error)
    } finally { setBusy(false) }
  }

  const unmatched = error instanceof ApiError ? error.fields.filter(f => document.querySelector(`[data-field="${CSS.escape(f.field)}"]`) == null) : []
  return (
    <section class="deploy">
      <AddModel canWrite={canWrite} onAdded={c => { setForm(f => ({ ...f, component: c.uri })); poll.reload() }} />
      <form class="card" onSubmit={e => { void submit(e) }} noValidate data-testid="deploy-form">
        <h2>Deploy a block</h2>
        {!canWrite && <NeedsLogin what="deploy" />}
        <div class="row">
          <label class="inline"><input type="radio" name="mode" checked={mode === 'form'} onChange={() => { setMode('form') }} /> from a component</label>
          <label class="inline"><input type="radio" name="mode" checked={mode === 'file'} onChange={() => { setMode('file') }} data-testid="mode-file" /> upload a block spec (YAML or JSON)</label>
        </div>
        {mode === 'file'
          ? (
            <Field label="Block spec file" name="file" hint="the body of POST /api/blocks: component, policy, minInstances, …">
              <input type="file" accept=".yaml,.yml,.json" data-testid="spec-file" onChange={e => { void readFile((e.target as HTMLInputElement).files?.[0]) }} />
            </Field>)
          : (
            <>
              <div class="grid">
                <Field label="Component" name="component" error={fieldError('component')}>
                  <select value={form.component ?? ''} onChange={set('component')} data-testid="component-select">
                    {components.length === 0 && <option value="">no components registered</option>}
                    {components.map(c => <option key={c.uri} value={c.uri}>{c.uri}{c.spec.stage != null ? ` (stage ${c.spec.stage.index + 1}/${c.spec.stage.worldSize})` : ''}{c.spec.model?.sizeBytes != null ? ` · ${bytes(c.spec.model.sizeBytes)}` : ''}</option>)}
                  </select>
                </Field>
                {(() => {
                  const info = components.find(c => c.uri === form.component)?.spec.modelInfo
                  return info == null ? null : (
                    <p class="model-info" data-testid="model-info">
                      {info.name ?? info.architecture}: {info.architecture}, {(info.parameters / 1e6).toFixed(0)}M parameters, {info.quantization}, context {info.contextLength}, vocabulary {info.vocabSize}, {info.chatTemplate ? 'own chat template' : 'no chat template (fallback format)'} · {info.format} from {info.source}
                    </p>)
                })()}
                <Field label="Block id (model name)" name="id" error={fieldError('id')} hint="optional; generated from the component">
                  <input value={form.id ?? ''} onInput={set('id')} data-testid="block-id" />
                </Field>
                <Field label="Min instances" name="minInstances" error={fieldError('minInstances')}>
                  <input inputMode="numeric" value={form.minInstances} onInput={set('minInstances')} data-testid="min-instances" />
                </Field>
                <Field label="Max instances" name="maxInstances" error={fieldError('maxInstances')}>
                  <input inputMode="numeric" value={form.maxInstances} onInput={set('maxInstances')} data-testid="max-instances" />
                </Field>
                <Field label="Execution provider" name="executionProvider" error={fieldError('executionProvider')}>
                  <select value={form.executionProvider} onChange={set('executionProvider')}>
                    {['auto', 'cpu', 'cuda', 'webgpu'].map(p => <option key={p} value={p}>{p}</option>)}
                  </select>
                </Field>
              </div>
              {(['cluster', 'node'] as const).map(part => (
                <fieldset key={part}>
                  <legend>{part === 'cluster' ? 'Cluster filter' : 'Node filter'}</legend>
                  <div class="grid">
                    {POLICY_FIELDS[part].map(f => (
                      <Field key={f.key} label={f.label} name={`policy.${part}.${f.key}`} error={fieldError(`policy.${part}.${f.key}`)} hint={'hint' in f ? f.hint : undefined}>
                        <input value={form[`${part}.${f.key}`] ?? ''} onInput={set(`${part}.${f.key}`)} data-testid={`policy-${part}-${f.key}`} />
                      </Field>
                    ))}
                  </div>
                </fieldset>
              ))}
            </>)}
        {error != null && (
          <div class="error" role="alert" data-testid="deploy-error">
            <p>{error.message}</p>
            {unmatched.length > 0 && <ul>{unmatched.map(f => <li key={f.field}><span class="mono">{f.field}</span>: {f.message}</li>)}</ul>}
          </div>
        )}
        <div class="row"><button type="submit" disabled={!canWrite || busy} data-testid="deploy-submit">{busy ? 'Placing…' : 'Deploy'}</button></div>
        {created != null && (
          <div class="result" data-testid="deploy-result">
            <p>Block <strong class="mono">{created.id}</strong>: <span class={`pill ${created.status}`} data-testid="deploy-status">{created.status}</span></p>
            <Placement block={created} />
          </div>
        )}
      </form>
      <div class="card">
        <h2>Blocks of the mesh</h2>
        {poll.error != null && <p class="error" role="alert">Could not load: {poll.error}</p>}
        {blocks.length === 0
          ? <p class="muted">None yet.</p>
          : (
            <table>
              <thead><tr><th>block</th><th>component</th><th>status</th><th>instances</th><th title="the agent placing and replacing its instances">reconciled by</th><th>actions</th></tr></thead>
              <tbody>{blocks.map(b => <BlockRow key={b.id} block={b} canWrite={canWrite} onChange={() => { poll.reload() }} />)}</tbody>
            </table>)}
      </div>
    </section>
  )
}
