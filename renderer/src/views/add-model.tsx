import { useState } from 'preact/hooks'
import { headersFor, errorOf, messageOf } from '../api.ts'
import { Field } from '../components/field.tsx'
import type { AddModelEvent, Component, ImportProgress } from '../types.ts'
import { bytes } from '../format.ts'

function progressText (p: ImportProgress): string {
  if ('receivedBytes' in p) return `downloading ${p.file.replace(/^.*\//, '')}: ${bytes(p.receivedBytes)}${p.totalBytes != null ? ` of ${bytes(p.totalBytes)}` : ''}`
  return `${p.phase} ${p.done}/${p.total}`
}

/**
 * Adds a model as a component (POST /api/models): a path on the agent's machine, hf://, ollama:// or an
 * https URL; the answer streams progress lines (NDJSON), then the component.
 */
export function AddModel ({ canWrite, onAdded }: { canWrite: boolean, onAdded: (c: Component) => void }) {
  const [source, setSource] = useState('')
  const [name, setName] = useState('')
  const [weights, setWeights] = useState('q8')
  const [status, setStatus] = useState<string | null>(null)
  const [error, setError] = useState<string | null>(null)
  const [busy, setBusy] = useState(false)

  const submit = async (e: Event): Promise<void> => {
    e.preventDefault()
    setBusy(true)
    setError(null)
    setStatus('starting…')
    try {
      const res = await fetch('/api/models', {
        method: 'POST',
        headers: { ...headersFor('POST', true), accept: 'application/x-ndjson' },
        body: JSON.stringify({ source, ...(name !== '' ? { name } : {}), weights }),
        credentials: 'omit',
        cache: 'no-store'
      })
      if (!res.ok || res.body == null) {
        const text = await res.text()
        let body: unknown = text
        try { body = JSON.parse(text) } catch { /* not JSON */ }
        throw errorOf(res.status, body)
      }
      const reader = res.body.getReader()
      const decoder = new TextDecoder()
      let buf = ''
      for (;;) {
        const { value, done } = await reader.read()
        if (done) break
        buf += decoder.decode(value, { stream: true })
        let nl: number
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim()
          buf = buf.slice(nl + 1)
          if (line === '') continue
          const ev = JSON.parse(line) as AddModelEvent
          if (ev.type === 'progress') setStatus(progressText(ev.progress))
          else if (ev.type === 'error') throw new Error(ev.error.message)
          else {
            setStatus(`${ev.existed ? 'already added' : 'added'}: ${ev.component.uri}`)
            onAdded(ev.component)
            return
          }
        }
      }
      throw new Error('the agent closed the answer before the model was added')
    } catch (err) {
      setStatus(null)
      setError(messageOf(err))
    } finally { setBusy(false) }
  }

  return (
    <form class="card" onSubmit={e => { void submit(e) }} noValidate data-testid="add-model-form">
      <h2>Add a model</h2>
      <div class="grid">
        <Field label="Source" name="source" hint="a .gguf or ONNX export path on the agent's machine, hf://ORG/REPO, ollama://NAME:TAG or an https URL of a GGUF">
          <input value={source} onInput={e => { setSource((e.target as HTMLInputElement).value) }} data-testid="add-model-source" />
        </Field>
        <Field label="Name" name="name" hint="optional; from the source">
          <input value={name} onInput={e => { setName((e.target as HTMLInputElement).value) }} data-testid="add-model-name" />
        </Field>
        <Field label="Weights" name="weights">
          <select value={weights} onChange={e => { setWeights((e.target as HTMLSelectElement).value) }}>
            {['q8', 'int8', 'q4', 'f32'].map(w => <option key={w} value={w}>{w}</option>)}
          </select>
        </Field>
      </div>
      <button type="submit" disabled={!canWrite || busy || source === ''} data-testid="add-model-submit">{busy ? 'Adding…' : 'Add'}</button>
      {status != null && <p class="muted" role="status" data-testid="add-model-status">{status}</p>}
      {error != null && <p class="error" role="alert" data-testid="add-model-error">{error}</p>}
    </form>
  )
}
