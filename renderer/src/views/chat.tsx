import { useEffect, useRef, useState } from 'preact/hooks'
import { api, messageOf } from '../api.ts'
import { useStore } from '../store.ts'
import { auth } from '../auth.ts'
import { live } from '../live.ts'
import type { ModelCardsAnswer, ModelEntry } from '../types.ts'
import { streamChat } from '../chat-stream.ts'
import type { ChatMessage, StreamStats } from '../chat-stream.ts'
import { NeedsLogin } from '../components/login.tsx'
import { num } from '../format.ts'

/** A message in the conversation; an answer remembers the model that gave it. */
interface Turn extends ChatMessage { stats?: StreamStats, model?: string, /** cut short (error or Stop): shown, not sent back as history */ partial?: boolean }

export function ChatView () {
  const { token } = useStore(auth.state)
  const state = useStore(live.state)
  const [models, setModels] = useState<ModelEntry[]>([])
  const [model, setModel] = useState('')
  const [turns, setTurns] = useState<Turn[]>([])
  const [input, setInput] = useState('')
  const [maxTokens, setMaxTokens] = useState('64')
  const [temperature, setTemperature] = useState('0.7')
  const [error, setError] = useState<string | null>(null)
  const [busy, setBusy] = useState(false)
  const abort = useRef<AbortController | null>(null)
  const sending = useRef(false)
  const [listError, setListError] = useState<string | null>(null)

  useEffect(() => {
    let current = true // a newer fetch supersedes this one
    api<ModelCardsAnswer>('/v1/models').then(r => {
      if (!current) return
      setListError(null)
      setModels(r.data)
      setModel(m => m !== '' && r.data.some(x => x.id === m) ? m : r.data[0]?.id ?? '')
    }).catch(err => { if (current) setListError(`model list: ${messageOf(err)}`) })
    return () => { current = false }
  }, [state.peers.length, state.peers.reduce((n, p) => n + p.instances.length + p.vdags.length, 0)])
  useEffect(() => () => abort.current?.abort(), [])

  const vdagNames = new Set(state.peers.flatMap(p => p.vdags.map(v => v.name)))
  const send = async (e: Event): Promise<void> => {
    e.preventDefault()
    const text = input.trim()
    if (text === '' || model === '' || sending.current) return
    sending.current = true
    setError(null)
    setBusy(true)
    setInput('')
    // an answer cut short is not sent back, nor the question it answered
    const complete = turns.filter((t, i) => !t.partial && !(t.role === 'user' && turns[i + 1]?.partial === true))
    const history: ChatMessage[] = [...complete.map(({ role, content }) => ({ role, content })), { role: 'user', content: text }]
    const shown: Turn[] = [...turns, { role: 'user', content: text }]
    setTurns([...shown, { role: 'assistant', content: '', model }])
    abort.current = new AbortController()
    let answer = ''
    try {
      const t = Number(temperature)
      const stats = await streamChat(
        { model, messages: history, max_tokens: Number(maxTokens) || undefined, temperature: Number.isFinite(t) ? t : undefined },
        (piece, s) => {
          answer += piece
          setTurns([...shown, { role: 'assistant', content: answer, stats: s, model }])
        },
        abort.current.signal
      )
      setTurns([...shown, { role: 'assistant', content: answer, stats, model }])
    } catch (err) {
      if ((err as Error).name !== 'AbortError') setError(messageOf(err))
      setTurns([...shown, { role: 'assistant', content: answer, model, partial: true }])
    } finally { setBusy(false); abort.current = null; sending.current = false }
  }

  const last = [...turns].reverse().find(t => t.stats != null)?.stats
  return (
    <section class="chat card">
      <div class="row spread">
        <h2>Chat playground</h2>
        <div class="row">
          <label class="inline">Model
            <select value={model} onChange={e => { setModel((e.target as HTMLSelectElement).value) }} data-testid="chat-model">
              {models.length === 0 && <option value="">no model served yet</option>}
              {models.map(m => <option key={m.id} value={m.id}>{m.id}{vdagNames.has(m.id) ? ' (vDAG)' : ''}</option>)}
            </select>
          </label>
          <label class="inline">max tokens <input class="narrow" inputMode="numeric" value={maxTokens} onInput={e => { setMaxTokens((e.target as HTMLInputElement).value) }} /></label>
          <label class="inline">temperature <input class="narrow" inputMode="decimal" value={temperature} onInput={e => { setTemperature((e.target as HTMLInputElement).value) }} /></label>
          <button class="secondary" onClick={() => { setTurns([]) }} disabled={busy}>Clear</button>
        </div>
      </div>
      {token == null && <NeedsLogin what="chat (inference is a POST to /v1)" />}
      <div class="turns" data-testid="chat-turns" aria-live="polite" aria-busy={busy}>
        {turns.map((t, i) => (
          <div key={i} class={`turn ${t.role}`} data-testid={`chat-${t.role}`}>
            <span class="who">{t.role === 'user' ? 'you' : t.model ?? model}</span>
            <p>{t.content}{t.partial === true && <em class="muted"> (cut short)</em>}{busy && i === turns.length - 1 && <span class="cursor" aria-hidden="true">▍</span>}</p>
          </div>
        ))}
      </div>
      <p class="metrics" data-testid="chat-metrics">
        time to first token <strong data-testid="ttft">{last?.ttftMs == null ? '–' : `${Math.round(last.ttftMs)} ms`}</strong>
        {' · '}tokens <strong data-testid="chat-tokens">{last?.tokens ?? '–'}</strong>
        {' · '}in <strong data-testid="chat-chunks">{last?.chunks ?? '–'}</strong> stream events
        {' · '}<strong data-testid="chat-tps">{last?.tokensPerSecond == null ? '–' : num(last.tokensPerSecond)}</strong> tokens/s
      </p>
      {error != null && <p class="error" role="alert" data-testid="chat-error">{error}</p>}
      {listError != null && <p class="error" role="alert">{listError}</p>}
      <form class="row" onSubmit={e => { void send(e) }}>
        <input class="grow" placeholder="Say something…" value={input} onInput={e => { setInput((e.target as HTMLInputElement).value) }} disabled={token == null || busy} data-testid="chat-input" aria-label="message" />
        {busy
          ? <button type="button" class="secondary" onClick={() => abort.current?.abort()}>Stop</button>
          : <button type="submit" disabled={token == null || model === ''} data-testid="chat-send">Send</button>}
      </form>
    </section>
  )
}
