import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { CapacityObserver } from '../mesh/capacity/gossip.ts'
import type { ModelEngine, StepEvent } from './executor/engine.ts'
import type { StageEngine } from './executor/stage-engine.ts'

/** Tokens per block over a sliding window, for the tokens/s gauge. */
class TokenWindow {
  private readonly events: Array<[number, number]> = []
  private readonly windowMs: number
  constructor (windowMs: number) { this.windowMs = windowMs }
  add (tokens: number, now = Date.now()): void {
    this.events.push([now, tokens])
    this.trim(now)
  }
  rate (now = Date.now()): number {
    this.trim(now)
    return this.events.reduce((s, [, n]) => s + n, 0) / (this.windowMs / 1000)
  }
  private trim (now: number): void {
    while (this.events.length > 0 && this.events[0][0] < now - this.windowMs) this.events.shift()
  }
}

/** The agent's Prometheus metrics, in a registry of its own (one per agent). */
export class AgentMetrics {
  readonly registry = new Registry()
  readonly peersKnown: Gauge
  readonly gossipMessages: Counter<'direction'>
  readonly gossipRejected: Counter<'reason'>
  readonly gossipIgnored: Counter<'reason'>
  readonly peersBanned: Counter
  readonly peersExpired: Counter
  readonly heartbeatLag: Histogram
  readonly tokensGenerated: Counter<'block'>
  readonly timeToFirstToken: Histogram<'block'>
  readonly requestTokensPerSecond: Histogram<'block'>
  readonly modelSteps: Histogram<'block' | 'kind'>
  readonly batchSize: Histogram<'block'>
  readonly schedulingDecisions: Counter<'result'>
  readonly assignments: Counter<'result'>
  readonly instanceReplacements: Counter
  readonly autoscaleDecisions: Counter<'block' | 'direction'>
  readonly autoscaleMetric: Gauge<'block'>
  readonly routedRequests: Counter<'target'>
  readonly peerStrikes: Counter<'kind'>
  readonly requestMigrations: Counter<'kind' | 'result'>
  readonly stateChanges: Counter<'via'>
  readonly stateRejected: Counter<'reason'>
  readonly reconcilerClaims: Counter
  readonly httpRequests: Counter<'method' | 'route'>
  private readonly engines = new Map<string, ModelEngine>()
  private readonly windows = new Map<string, TokenWindow>()

  constructor (livePeers: () => number) {
    const registers = [this.registry]
    collectDefaultMetrics({ register: this.registry, prefix: 'blockmesh_' })
    this.peersKnown = new Gauge({
      name: 'blockmesh_peers_known', help: 'Peers with a live (unexpired) capacity record', registers,
      collect () { this.set(livePeers()) }
    })
    this.gossipMessages = new Counter({
      name: 'blockmesh_gossip_messages_total', help: 'Capacity records published (out) and accepted (in)', labelNames: ['direction'], registers
    })
    this.gossipRejected = new Counter({
      name: 'blockmesh_gossip_messages_rejected_total', help: 'Inbound capacity frames rejected, by reason', labelNames: ['reason'], registers
    })
    this.gossipIgnored = new Counter({
      name: 'blockmesh_gossip_messages_ignored_total', help: 'Inbound capacity records ignored (stale or our own)', labelNames: ['reason'], registers
    })
    this.peersBanned = new Counter({ name: 'blockmesh_peers_banned_total', help: 'Peers disconnected and banned for bad frames', registers })
    this.peersExpired = new Counter({ name: 'blockmesh_peers_expired_total', help: 'Peers expired after missed heartbeats', registers })
    const engines = this.engines
    const windows = this.windows
    this.tokensGenerated = new Counter({ name: 'blockmesh_tokens_generated_total', help: 'Tokens generated, by block', labelNames: ['block'], registers })
    this.timeToFirstToken = new Histogram({
      name: 'blockmesh_time_to_first_token_seconds', help: 'From request accepted to first token, by block', labelNames: ['block'], registers,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    })
    this.requestTokensPerSecond = new Histogram({
      name: 'blockmesh_request_tokens_per_second', help: 'Decode speed of each finished request (completion tokens after the first ÷ time)', labelNames: ['block'], registers,
      buckets: [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000]
    })
    this.modelSteps = new Histogram({
      name: 'blockmesh_model_step_seconds', help: 'Duration of one model run, by block and kind (prefill or batched decode)', labelNames: ['block', 'kind'], registers,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]
    })
    this.batchSize = new Histogram({ name: 'blockmesh_decode_batch_size', help: 'Sequences per decode step', labelNames: ['block'], registers, buckets: [1, 2, 4, 8, 16, 32, 64] })
    new Gauge({
      name: 'blockmesh_block_tokens_per_second', help: 'Tokens generated per second over the last 10 s, by block', labelNames: ['block'], registers,
      collect () { this.reset(); for (const [b, w] of windows) this.set({ block: b }, w.rate()) }
    })
    new Gauge({
      name: 'blockmesh_queue_depth', help: 'Requests waiting for their first token, by block', labelNames: ['block'], registers,
      collect () { this.reset(); for (const [b, e] of engines) this.set({ block: b }, e.waiting) }
    })
    new Gauge({
      name: 'blockmesh_active_sequences', help: 'Sequences being generated (holding a KV cache), by block', labelNames: ['block'], registers,
      collect () { this.reset(); for (const [b, e] of engines) this.set({ block: b }, e.active) }
    })
    this.schedulingDecisions = new Counter({ name: 'blockmesh_scheduling_decisions_total', help: 'Placement decisions, by result (placed or refused)', labelNames: ['result'], registers })
    this.assignments = new Counter({ name: 'blockmesh_assignments_total', help: 'Instance assignments sent to hosts, by answer (accepted or refused)', labelNames: ['result'], registers })
    this.instanceReplacements = new Counter({ name: 'blockmesh_instance_replacements_total', help: 'Instances replaced because their host vanished or they failed', registers })
    this.autoscaleDecisions = new Counter({ name: 'blockmesh_autoscale_decisions_total', help: 'Autoscaling changes of a block\'s instance count, by direction', labelNames: ['block', 'direction'], registers })
    this.autoscaleMetric = new Gauge({ name: 'blockmesh_autoscale_metric', help: 'The autoscaling metric of each owned block, last sample', labelNames: ['block'], registers })
    this.routedRequests = new Counter({ name: 'blockmesh_routed_requests_total', help: 'OpenAI requests by where they were served (local or remote)', labelNames: ['target'], registers })
    this.peerStrikes = new Counter({ name: 'blockmesh_peer_strikes_total', help: 'Offences by peers on the agent\'s protocols (malformed or oversized frames), by kind', labelNames: ['kind'], registers })
    this.stateChanges = new Counter({ name: 'blockmesh_state_changes_total', help: 'Desired-state changes applied here, by how they came (local write, gossip, anti-entropy sync)', labelNames: ['via'], registers })
    this.stateRejected = new Counter({ name: 'blockmesh_state_changes_rejected_total', help: 'Desired-state frames refused, by reason', labelNames: ['reason'], registers })
    this.httpRequests = new Counter({ name: 'blockmesh_http_requests_total', help: 'Requests to the HTTP API, by method and route pattern (none: no route matched)', labelNames: ['method', 'route'], registers })
    this.reconcilerClaims = new Counter({ name: 'blockmesh_reconciler_claims_total', help: 'Blocks this agent started reconciling (a new term: created here, or taken over)', registers })
    this.requestMigrations = new Counter({ name: 'blockmesh_request_migrations_total', help: 'Requests whose block instance (kind instance), vDAG stage (kind stage) or vDAG driver on a peer (kind driver) failed mid-generation: resumed elsewhere, or failed (over the limits, nothing to resume on); declined: the first stage host of a vDAG did not take the driving (refused, unreachable) and this agent drove the request', labelNames: ['kind', 'result'], registers })
    this.heartbeatLag = new Histogram({
      name: 'blockmesh_heartbeat_lag_seconds',
      help: 'How late each heartbeat fired against its schedule',
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers
    })
  }

  /** Tokens per second of a block over the last 10 s (0 when it runs no engine here). */
  blockRate (block: string): number {
    return this.windows.get(block)?.rate() ?? 0
  }

  /** Follows an engine's steps (tokens, batch sizes, step times) until it closes. */
  watchEngine (block: string, engine: ModelEngine): void {
    this.engines.set(block, engine)
    const window = new TokenWindow(10_000)
    this.windows.set(block, window)
    engine.on('step', (e: StepEvent) => {
      this.modelSteps.observe({ block, kind: e.kind }, e.ms / 1000)
      if (e.kind === 'decode') this.batchSize.observe({ block }, e.batch)
      if (e.tokens > 0) {
        this.tokensGenerated.inc({ block }, e.tokens)
        window.add(e.tokens)
      }
    })
    engine.once('crashed', () => { this.forgetEngine(block, engine) })
  }

  /** Follows a pipeline stage's runs (decode batch sizes, run times) until it closes. */
  watchStage (block: string, engine: StageEngine): void {
    engine.on('batch', (e: { size: number, ms: number, rows: number }) => {
      const kind = e.rows === 1 ? 'stage-decode' : 'stage-prefill'
      this.modelSteps.observe({ block, kind }, e.ms / 1000)
      if (kind === 'stage-decode') this.batchSize.observe({ block }, e.size)
    })
  }

  forgetEngine (block: string, engine: ModelEngine): void {
    if (this.engines.get(block) !== engine) return
    this.engines.delete(block)
    this.windows.delete(block)
  }

  gossipObserver (): CapacityObserver {
    return {
      published: () => { this.gossipMessages.inc({ direction: 'out' }) },
      accepted: () => { this.gossipMessages.inc({ direction: 'in' }) },
      rejected: (reason) => { this.gossipRejected.inc({ reason }) },
      ignored: (reason) => { this.gossipIgnored.inc({ reason }) },
      banned: () => { this.peersBanned.inc() },
      expired: () => { this.peersExpired.inc() },
      heartbeatLag: (ms) => { this.heartbeatLag.observe(ms / 1000) }
    }
  }
}

/**
 * Counts the offences and bans of the node's one peer score (mesh/peer-score.ts), whatever the protocol:
 * blockmesh_peer_strikes_total{kind} and blockmesh_peers_banned_total as before, plus
 * blockmesh_peer_offences_total{offence} (oversized, malformed, forged) and blockmesh_peers_scored (peers whose
 * score has not decayed away). Call once per agent (the metrics register in its registry); returns the
 * function that stops the counting.
 */
export function watchPeerScore (metrics: AgentMetrics, score: import('../mesh/peer-score.ts').PeerScore): () => void {
  const registers = [metrics.registry]
  const offences = new Counter({ name: 'blockmesh_peer_offences_total', help: 'Offences by peers on any protocol, by weight class (oversized, malformed, forged)', labelNames: ['offence'], registers })
  new Gauge({ name: 'blockmesh_peers_scored', help: 'Peers with a peer score above zero (an offence not yet decayed away)', registers, collect () { this.set(score.size) } })
  // the kind is the reason's lead (text our code writes, with numbers, hashes and names a peer chose in it):
  // numbers and hashes are folded, and past 32 kinds the rest count as `other`, so peers cannot grow the series
  const kinds = new Set<string>()
  const kindOf = (reason: string): string => {
    const k = reason.split(':')[0].replace(/[0-9a-f]{8,}/gi, 'H').replace(/\d+/g, 'N').slice(0, 40)
    if (kinds.has(k)) return k
    if (kinds.size >= 32) return 'other'
    kinds.add(k)
    return k
  }
  return score.observe({
    onStrike: (_peer, reason, offence) => {
      metrics.peerStrikes.inc({ kind: kindOf(reason) })
      offences.inc({ offence })
    },
    onBan: () => { metrics.peersBanned.inc() }
  })
}

/** The content store's gauges and the bytes moved for it (issue 15), read when scraped. */
export function watchContent (metrics: AgentMetrics, source: {
  usage: () => { bytes: number, capBytes: number }
  files: () => number
  received: () => { mesh: number, origin: number }
  served: () => number
}): void {
  const registers = [metrics.registry]
  new Gauge({ name: 'blockmesh_content_store_bytes', help: 'Bytes held in the content store (complete files and partial files at full size)', registers, collect () { this.set(source.usage().bytes) } })
  new Gauge({ name: 'blockmesh_content_store_cap_bytes', help: 'The content store\'s cap', registers, collect () { this.set(source.usage().capBytes) } })
  new Gauge({ name: 'blockmesh_content_files', help: 'Files in the content store', registers, collect () { this.set(source.files()) } })
  // counters that follow totals kept elsewhere: each scrape adds what grew since the last
  let last = { mesh: 0, origin: 0, served: 0 }
  new Counter({
    name: 'blockmesh_content_received_bytes_total',
    help: 'Model-file bytes fetched into the content store, by source (mesh: peers; origin: hub, HTTP, S3, a local path)',
    labelNames: ['source'],
    registers,
    collect () {
      const r = source.received()
      this.inc({ source: 'mesh' }, r.mesh - last.mesh)
      this.inc({ source: 'origin' }, r.origin - last.origin)
      last = { ...last, mesh: r.mesh, origin: r.origin }
    }
  })
  new Counter({
    name: 'blockmesh_content_served_bytes_total',
    help: 'Model-file bytes served to peers from the content store',
    registers,
    collect () { const s = source.served(); this.inc(s - last.served); last = { ...last, served: s } }
  })
}
