import { useEffect, useState } from 'preact/hooks'
import { api, ApiError, messageOf } from '../api.ts'
import { useStore } from '../store.ts'
import { auth } from '../auth.ts'
import type { Component, ComponentsAnswer, Task, TasksAnswer, Vdag, VdagDeployAnswer, VdagsAnswer } from '../types.ts'
import { Field } from '../components/field.tsx'
import { usePoll } from '../poll.ts'
import { numberOrText } from '../form.ts'
import { NeedsLogin } from '../components/login.tsx'
import { ago, bytes } from '../format.ts'
import { balanceOf, planOf } from '../split-result.ts'

function TaskCard ({ task, canWrite, onChange }: { task: Task, canWrite: boolean, onChange: () => void }) {
  const [open, setOpen] = useState(false)
  const [name, setName] = useState('')
  const [error, setError] = useState<string | null>(null)
  const [deployed, setDeployed] = useState<string | null>(null)
  const [busy, setBusy] = useState(false)
  const plan = planOf(task)
  const balance = balanceOf(task)
  const deploy = async (): Promise<void> => {
    setBusy(true)
    setError(null)
    try {
      const r = await api<VdagDeployAnswer>('/api/vdags/deploy', { method: 'POST', body: { task_id: task.task_id, ...(name.trim() !== '' ? { name: name.trim() } : {}) } })
      setDeployed(`vDAG ${r.vdag.name}: ${r.blocks.map(b => `${b.id}${b.reused ? ' (reused)' : ''}`).join(' → ')}`)
      onChange()
    } catch (err) { setError(messageOf(err)) } finally { setBusy(false) }
  }
  return (
    <article class="card task" data-testid="task" data-task={task.task_id} data-status={task.status}>
      <header class="row spread">
        <div><strong class="mono">{task.task_id}</strong> <span class="muted">{task.task_data.model_name} · world size {task.task_data.world_size} · {task.runner} runner · {ago(task.created_at)}</span></div>
        <span class={`pill ${task.status}`} data-testid="task-status">{task.status}</span>
      </header>
      <progress max={1} value={task.progress} aria-label={`progress of ${task.task_id}`} />
      <p class="muted" data-testid="task-message">{Math.round(task.progress * 100)}% {task.message ?? ''}</p>
      {task.error != null && <pre class="error">{task.error}</pre>}
      {plan != null && (
        <>
          <button class="link" onClick={() => { setOpen(!open) }} data-testid="plan-toggle">{open ? 'Hide' : 'Inspect'} the model plan ({plan.stages.length} stages)</button>
          {open && (
            <table data-testid="plan">
              <thead><tr><th>stage</th><th>layers</th><th>MD5</th><th>size</th><th>inputs → outputs</th></tr></thead>
              <tbody>{plan.stages.map(s => (
                <tr key={s.rank}><td>{s.rank}</td><td>{s.layers[0]}..{s.layers[1] - 1}</td><td class="mono">{s.model_layer_hash}</td><td>{bytes(s.size_bytes)}</td><td class="muted">{(s.inputs ?? []).length} → {(s.outputs ?? []).length} tensors</td></tr>
              ))}</tbody>
            </table>)}
          {balance != null && <p class="muted" data-testid="plan-balance">{balance}</p>}
          {typeof task.result?.max_abs_diff === 'number' && <p class="muted">verified against the whole model: max abs diff {task.result.max_abs_diff}</p>}
          <div class="row">
            <input placeholder={`vDAG name (default ${plan.vdag.name})`} value={name} onInput={e => { setName((e.target as HTMLInputElement).value) }} aria-label="vDAG name" disabled={!canWrite} />
            <button disabled={!canWrite || busy} onClick={() => { void deploy() }} data-testid="deploy-vdag">{busy ? 'Deploying…' : 'Deploy as vDAG'}</button>
          </div>
          {deployed != null && <p class="ok" data-testid="vdag-deployed">{deployed}</p>}
          {error != null && <p class="error" role="alert">{error}</p>}
        </>
      )}
    </article>
  )
}

export function SplitView () {
  const { token } = useStore(auth.state)
  const canWrite = token != null
  const [components, setComponents] = useState<Component[]>([])
  const [tasks, setTasks] = useState<Task[]>([])
  const [vdags, setVdags] = useState<Vdag[]>([])
  const [source, setSource] = useState('')
  const [modelName, setModelName] = useState('')
  const [url, setUrl] = useState('')
  const [worldSize, setWorldSize] = useState('2')
  const [image, setImage] = useState('blockmesh/onnx-splitter')
  const [balance, setBalance] = useState<'params' | 'capacity'>('params')
  const [cost, setCost] = useState<'measured' | 'params'>('measured')
  const [error, setError] = useState<ApiError | Error | null>(null)
  const [busy, setBusy] = useState(false)

  const poll = usePoll(async (signal) => {
    const [c, t, v] = await Promise.all([
      api<ComponentsAnswer>('/api/components', { signal }),
      api<TasksAnswer>('/tasks', { signal }),
      api<VdagsAnswer>('/api/vdags', { signal })
    ])
    setComponents(c.components.filter(x => x.spec.runtime === 'onnx' && x.spec.stage == null && x.spec.model != null))
    setTasks(t.data)
    setVdags(v.vdags)
  }, 1000)

  const pick = (uri: string): void => {
    setSource(uri)
    const c = components.find(x => x.uri === uri)
    if (c?.spec.model != null) { setUrl(c.spec.model.url); setModelName(c.spec.name) }
  }
  const fieldError = (name: string): string | undefined => error instanceof ApiError ? error.field(name) : undefined

  const start = async (e: Event): Promise<void> => {
    e.preventDefault()
    setBusy(true)
    setError(null)
    try {
      await api('/start_model_split_job', {
        method: 'POST',
        body: {
          task_data: { model_name: modelName.trim(), model_download_url: url.trim(), world_size: numberOrText(worldSize), model_split_config: { balance, cost } },
          container_image: image.trim()
        }
      })
      poll.reload()
    } catch (err) { setError(err as Error) } finally { setBusy(false) }
  }

  const removeVdag = async (name: string): Promise<void> => {
    if (!confirm(`Delete vDAG ${name}? Its stage blocks keep running until you delete them.`)) return
    try { await api(`/api/vdags/${encodeURIComponent(name)}`, { method: 'DELETE' }); poll.reload() } catch (err) { setError(err as Error) }
  }

  return (
    <section class="split">
      <form class="card" onSubmit={e => { void start(e) }} noValidate data-testid="split-form">
        <h2>Split a model into pipeline stages</h2>
        {!canWrite && <NeedsLogin what="start split tasks and deploy vDAGs" />}
        <div class="grid">
          <Field label="Model" name="source" hint="a registered component's model, or any URL below">
            <select value={source} onChange={e => { pick((e.target as HTMLSelectElement).value) }} data-testid="split-source">
              <option value="">— a model URL —</option>
              {components.map(c => <option key={c.uri} value={c.uri}>{c.uri}</option>)}
            </select>
          </Field>
          <Field label="Model name" name="task_data.model_name" error={fieldError('task_data.model_name')}>
            <input value={modelName} onInput={e => { setModelName((e.target as HTMLInputElement).value) }} data-testid="split-model-name" />
          </Field>
          <Field label="Model URL or path" name="task_data.model_download_url" error={fieldError('task_data.model_download_url')} hint="local path, file://, http(s)://">
            <input value={url} onInput={e => { setUrl((e.target as HTMLInputElement).value) }} data-testid="split-url" />
          </Field>
          <Field label="World size (stages)" name="task_data.world_size" error={fieldError('task_data.world_size')}>
            <input inputMode="numeric" value={worldSize} onInput={e => { setWorldSize((e.target as HTMLInputElement).value) }} data-testid="split-world-size" />
          </Field>
          <Field label="Stages get" name="balance">
            <select value={balance} onChange={e => { setBalance((e.target as HTMLSelectElement).value as 'params' | 'capacity') }}>
              <option value="params">equal shares of the work</option>
              <option value="capacity">shares by capacity weights (set in the task's config)</option>
            </select>
          </Field>
          <Field label="Work weighed by" name="cost" hint="measured: the embeddings and LM head timed against a layer on this machine (right for quantized models)">
            <select value={cost} onChange={e => { setCost((e.target as HTMLSelectElement).value as 'measured' | 'params') }} data-testid="split-cost">
              <option value="measured">measured step time</option>
              <option value="params">bytes a decode step reads</option>
            </select>
          </Field>
          <Field label="Splitter (container image)" name="container_image" error={fieldError('container_image')} hint="a splitter program on this agent, or an image for a Kubernetes Job">
            <input value={image} onInput={e => { setImage((e.target as HTMLInputElement).value) }} />
          </Field>
        </div>
        {error != null && <div class="error" role="alert" data-testid="split-error">{error.message}</div>}
        <div class="row"><button type="submit" disabled={!canWrite || busy} data-testid="split-submit">Start split task</button></div>
      </form>
      <div class="card">
        <h2>vDAGs of the mesh</h2>
        {vdags.length === 0
          ? <p class="muted">None yet.</p>
          : <ul>{vdags.map(v => <li key={v.name} data-testid="vdag-row"><strong>{v.name}</strong> <span class={`pill ${v.ready ? 'ready' : 'pending'}`}>{v.ready ? 'ready' : 'not ready'}</span> <span class="muted mono">{v.stages.join(' → ')}</span> <button class="link danger" disabled={!canWrite} onClick={() => { void removeVdag(v.name) }}>delete</button></li>)}</ul>}
      </div>
      <h2>Split tasks</h2>
      {poll.error != null && <p class="error" role="alert">Could not load: {poll.error}</p>}
      {tasks.length === 0 && <p class="muted">No tasks yet.</p>}
      {tasks.map(t => <TaskCard key={t.task_id} task={t} canWrite={canWrite} onChange={() => { poll.reload() }} />)}
    </section>
  )
}
