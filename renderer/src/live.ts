import { Store } from './store.ts'
import type { EventsHello, EventsPeers, Peer, Sample } from './types.ts'

export interface LiveState {
  connected: boolean
  self: string | null
  heartbeatMs: number
  peers: Peer[]
  /** recent samples per peer ID, oldest first */
  history: Record<string, Sample[]>
  /** when the last update came (ms) */
  updatedAt: number
}

/** Samples kept per peer in the page (the agent keeps its own, sent on connect). */
const KEEP = 300

/**
 * The agent's live event stream (GET /api/events, Server-Sent Events): peers
 * with their capacity records every heartbeat, and per-peer samples for charts.
 * EventSource reconnects by itself; `connected` shows whether it is up.
 */
export class Live {
  readonly state = new Store<LiveState>({ connected: false, self: null, heartbeatMs: 1000, peers: [], history: {}, updatedAt: 0 })
  private source: EventSource | undefined
  private retry: ReturnType<typeof setTimeout> | undefined
  private backoffMs = 1000

  start (url = '/api/events'): void {
    if (this.source != null) return
    const es = new EventSource(url)
    this.source = es
    es.addEventListener('open', () => { this.backoffMs = 1000; this.state.update(s => ({ ...s, connected: true })) })
    es.addEventListener('error', () => {
      this.state.update(s => ({ ...s, connected: false }))
      // EventSource retries by itself after a dropped connection, but gives up for good after an
      // answer other than 200 (503 while the agent restarts or is full): then start over, backing off
      if (es.readyState === EventSource.CLOSED) {
        this.stop()
        this.retry = setTimeout(() => { this.start(url) }, this.backoffMs)
        this.backoffMs = Math.min(30_000, this.backoffMs * 2)
      }
    })
    es.addEventListener('hello', (e) => {
      const m = parse<EventsHello>(e)
      if (m == null) return
      this.state.set({ connected: true, self: m.self, heartbeatMs: m.heartbeatMs, peers: m.peers, history: m.history ?? {}, updatedAt: Date.now() })
    })
    es.addEventListener('peers', (e) => {
      const m = parse<EventsPeers>(e)
      if (m == null) return
      this.state.update(s => {
        const history = { ...s.history }
        for (const [peer, sample] of Object.entries(m.samples ?? {})) {
          const list = [...(history[peer] ?? []), sample]
          history[peer] = list.length > KEEP ? list.slice(list.length - KEEP) : list
        }
        return { connected: true, self: m.self, heartbeatMs: m.heartbeatMs, peers: m.peers, history, updatedAt: Date.now() }
      })
    })
  }

  stop (): void {
    clearTimeout(this.retry)
    this.source?.close()
    this.source = undefined
  }
}

function parse<T> (e: Event): T | undefined {
  try { return JSON.parse((e as MessageEvent<string>).data) as T } catch { return undefined }
}

export const live = new Live()
