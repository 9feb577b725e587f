import { useMemo, useState } from 'preact/hooks'
import { api, messageOf } from '../api.ts'
import { useStore } from '../store.ts'
import { live } from '../live.ts'
import { auth } from '../auth.ts'
import { usePoll } from '../poll.ts'
import { NeedsLogin } from '../components/login.tsx'
import { ago, bytes, shortId } from '../format.ts'
import { fileLabel, heldHere, holdersOf, percentOf, percentText, removeBlocker, shortMd5, sizeOf, transfersOf } from '../content-model.ts'
import type { ContentAnswer, ContentEntry, ContentFetchAnswer, ContentFetchFilesAnswer, HolderView, ModelSummary, ModelsAnswer, Peer } from '../types.ts'

/** A progress bar (a <progress> element: the CSP allows no inline style); indeterminate while the size is unknown. */
function Progress ({ percent, label }: { percent: number | null, label: string }) {
  return <progress class="transfer-bar" max={100} value={percent ?? undefined} aria-label={label} />
}

/** The mesh's transfers in progress, from every peer's capacity record (the live stream: no polling). */
function Transfers ({ peers, connected }: { peers: Peer[], connected: boolean }) {
  const transfers = useMemo(() => transfersOf(peers), [peers])
  return (
    <div class="card" data-testid="transfers">
      <h2>Transfers in progress</h2>
      {!connected && <p class="warn-banner">Live updates are off; reconnecting to the agent…</p>}
      {transfers.length === 0
        ? <p class="muted" data-testid="transfers-none">No model file is being fetched anywhere in the mesh.</p>
        : (
          <table>
            <thead><tr><th>host</th><th>file</th><th>received</th><th class="wide">progress</th></tr></thead>
            <tbody>
              {transfers.map(t => (
                <tr key={`${t.peerId}/${t.md5}`} data-testid="transfer" data-peer={t.peerId} data-md5={t.md5}>
                  <td>{t.host}{t.self && <span class="badge">this agent</span>}</td>
                  <td><span title={t.md5}>{fileLabel(t.md5, t.name)}</span>{t.name != null && <span class="muted mono"> {shortMd5(t.md5)}</span>}</td>
                  <td>{t.totalBytes > 0 ? `${bytes(t.receivedBytes)} of ${bytes(t.totalBytes)}` : <span class="muted">starting…</span>}</td>
                  <td><div class="progress-cell"><Progress percent={t.percent} label={`${fileLabel(t.md5, t.name)} on ${t.host}`} /><span data-testid="transfer-pct">{percentText(t.percent)}</span></div></td>
                </tr>
              ))}
            </tbody>
          </table>)}
    </div>
  )
}

function Holder ({ holder, self }: { holder: HolderView, self: string | null }) {
  const p = percentOf(holder.receivedBytes, holder.totalBytes)
  return (
    <span class="holder" data-testid="holder" data-peer={holder.peerId} data-state={holder.state} title={holder.peerId}>
      <span class={`pill ${holder.state}`}>{holder.name}{holder.peerId === self ? ' (here)' : ''}</span>
      {holder.state === 'partial' && (
        <>
          <Progress percent={p} label={`${holder.name} has ${percentText(p)}`} />
          <span class="muted">{percentText(p)}</span>
        </>)}
    </span>
  )
}

/** Where the bytes of a pull came from, by peer name ("origin" for the file's original source). */
function sourcesText (files: ContentFetchAnswer[], peers: Peer[]): string {
  const total: Record<string, number> = {}
  for (const f of files) for (const [src, n] of Object.entries(f.bySource)) total[src] = (total[src] ?? 0) + n
  const parts = Object.entries(total).filter(([, n]) => n > 0).map(([src, n]) => `${bytes(n)} from ${src === 'origin' ? 'the origin' : peers.find(p => p.peerId === src)?.name ?? shortId(src)}`)
  return parts.length === 0 ? 'already here' : parts.join(', ')
}

function ModelCard ({ model, peers, self, canWrite, onPulled }: { model: ModelSummary, peers: Peer[], self: string | null, canWrite: boolean, onPulled: () => void }) {
  const files = useMemo(() => (model.files ?? []).map(f => ({ ...f, holders: holdersOf(f.md5, peers, f.holders) })), [model, peers])
  const here = heldHere(files, self)
  const [busy, setBusy] = useState(false)
  const [result, setResult] = useState<string | null>(null)
  const [error, setError] = useState<string | null>(null)
  const pull = async (): Promise<void> => {
    setBusy(true)
    setError(null)
    setResult(null)
    try {
      const r = await api<ContentFetchFilesAnswer>('/api/content/fetch', { method: 'POST', body: { component: model.uri } })
      setResult(`${r.files.length} file${r.files.length === 1 ? '' : 's'} held here: ${sourcesText(r.files, peers)}`)
      onPulled()
    } catch (err) { setError(messageOf(err)) } finally { setBusy(false) }
  }
  const info = model.info
  return (
    <article class="model-card" data-testid="model" data-model={model.uri}>
      <div class="row spread">
        <div>
          <h3 class="model-uri mono">{model.uri}</h3>
          {info != null && <span class="muted">{info.architecture}, {(info.parameters / 1e6).toFixed(info.parameters < 1e7 ? 2 : 0)}M parameters, {info.quantization} · {info.format}</span>}
        </div>
        <button data-testid="pull-here" disabled={!canWrite || busy || here || files.length === 0}
          title={here ? 'every file of this model is complete on this agent' : 'fetch this model\'s files into this agent\'s store, from the peers that hold them'}
          onClick={() => { void pull() }}>
          {busy ? 'Pulling…' : here ? 'Held here' : 'Pull here'}
        </button>
      </div>
      {files.length === 0
        ? <p class="muted">No files this agent's content store knows of (the runtime fetches this model itself).</p>
        : (
          <table>
            <thead><tr><th>file</th><th>MD5</th><th>size</th><th class="wide">held by</th></tr></thead>
            <tbody>
              {files.map(f => (
                <tr key={f.md5} data-testid="model-file" data-md5={f.md5} data-role={f.role}>
                  <td>{f.role === 'model' ? 'model' : 'tokenizer bundle'}</td>
                  <td class="mono" title={f.md5}>{shortMd5(f.md5)}</td>
                  <td>{bytes(sizeOf(f, f.holders))}</td>
                  <td>
                    {f.holders.length === 0
                      ? <span class="muted" data-testid="no-holder">no agent holds it</span>
                      : <div class="holders">{f.holders.map(h => <Holder key={h.peerId} holder={h} self={self} />)}</div>}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>)}
      {busy && <p class="muted" role="status">Fetching into this agent's store; the transfers above show its progress.</p>}
      {result != null && <p class="ok" role="status" data-testid="pull-result">{result}</p>}
      {error != null && <p class="error" role="alert" data-testid="pull-error">{error}</p>}
    </article>
  )
}

function lastUsed (ms: number): string {
  return ms > 0 ? ago(new Date(ms).toISOString()) : '–'
}

function StoreRow ({ entry, canWrite, onChange }: { entry: ContentEntry, canWrite: boolean, onChange: () => void }) {
  const [error, setError] = useState<string | null>(null)
  const [busy, setBusy] = useState(false)
  const blocker = removeBlocker(entry)
  const p = percentOf(entry.have, entry.chunks)
  const remove = async (): Promise<void> => {
    if (!confirm(`Remove ${fileLabel(entry.md5, entry.name)} (${entry.md5}) from this agent's content store?`)) return
    setBusy(true)
    setError(null)
    try {
      await api(`/api/content/${encodeURIComponent(entry.md5)}`, { method: 'DELETE' })
      onChange()
    } catch (err) { setError(messageOf(err)) } finally { setBusy(false) }
  }
  return (
    <tr data-testid="store-file" data-md5={entry.md5} data-state={entry.state}>
      <td>{entry.name ?? <span class="muted">unnamed</span>}</td>
      <td class="mono" title={entry.md5}>{shortMd5(entry.md5)}</td>
      <td>{bytes(entry.size)}</td>
      <td>
        <span class={`pill ${entry.state}`}>{entry.state}</span>
        {entry.state === 'partial' && <div class="progress-cell"><Progress percent={p} label={`${fileLabel(entry.md5, entry.name)} held`} /><span class="muted">{entry.have}/{entry.chunks} chunks</span></div>}
      </td>
      <td>{entry.pinned ? <span title="added on this agent: never evicted, removed only by the operator">pinned</span> : <span class="muted">no</span>}</td>
      <td>{entry.inUse > 0 ? `${entry.inUse} block${entry.inUse === 1 ? '' : 's'}` : <span class="muted">no</span>}</td>
      <td>{lastUsed(entry.lastUsed)}</td>
      <td>
        <button class="danger" data-testid="store-remove" disabled={!canWrite || busy || blocker != null} title={blocker ?? 'remove the file from this agent'} onClick={() => { void remove() }}>Remove</button>
        {error != null && <p class="error" role="alert" data-testid="store-error">{error}</p>}
      </td>
    </tr>
  )
}

function Store ({ content, error, canWrite, onChange }: { content: ContentAnswer | null, error: string | null, canWrite: boolean, onChange: () => void }) {
  const usage = content?.usage
  const p = usage == null ? null : percentOf(usage.bytes, usage.capBytes)
  const files = content == null ? [] : [...content.files].sort((a, b) => b.lastUsed - a.lastUsed)
  return (
    <div class="card" data-testid="store">
      <h2>This agent's store</h2>
      {error != null && <p class="error" role="alert">Could not load: {error}</p>}
      {usage != null && (
        <div class="usage">
          <p data-testid="store-usage">{bytes(usage.bytes)} of {bytes(usage.capBytes)} used ({percentText(p)}) · {files.length} file{files.length === 1 ? '' : 's'}</p>
          <progress max={100} value={p ?? 0} class={p != null && p > 85 ? 'hot' : ''} aria-label="content store used" />
        </div>)}
      {content != null && files.length === 0 && <p class="muted">Empty.</p>}
      {files.length > 0 && (
        <table>
          <thead><tr><th>name</th><th>MD5</th><th>size</th><th>state</th><th>pinned</th><th>in use</th><th>last used</th><th>actions</th></tr></thead>
          <tbody>{files.map(e => <StoreRow key={e.md5} entry={e} canWrite={canWrite} onChange={onChange} />)}</tbody>
        </table>)}
    </div>
  )
}

/**
 * The mesh's model files: each model with its files and the agents that hold them (live, from the capacity
 * records), pulling a model's files to this agent ahead of a deployment; the transfers in progress on every
 * host; this agent's content store, with its cap.
 */
export function ModelsView () {
  const state = useStore(live.state)
  const { token } = useStore(auth.state)
  const canWrite = token != null
  const [models, setModels] = useState<ModelSummary[] | null>(null)
  const [content, setContent] = useState<ContentAnswer | null>(null)
  const modelsPoll = usePoll(async (signal) => { setModels((await api<ModelsAnswer>('/api/models', { signal })).models) }, 5000)
  const contentPoll = usePoll(async (signal) => { setContent(await api<ContentAnswer>('/api/content', { signal })) }, 3000)
  const reload = (): void => { modelsPoll.reload(); contentPoll.reload() }
  return (
    <section class="models">
      <Transfers peers={state.peers} connected={state.connected} />
      <div class="card" data-testid="models">
        <h2>Models</h2>
        {!canWrite && <NeedsLogin what="pull a model's files here" />}
        {modelsPoll.error != null && <p class="error" role="alert">Could not load: {modelsPoll.error}</p>}
        {models != null && models.length === 0 && <p class="muted">No models yet; add one in Deploy.</p>}
        {(models ?? []).map(m => <ModelCard key={m.uri} model={m} peers={state.peers} self={state.self} canWrite={canWrite} onPulled={reload} />)}
      </div>
      <Store content={content} error={contentPoll.error} canWrite={canWrite} onChange={reload} />
    </section>
  )
}
