import { PipelineFrameError } from '../../mesh/pipeline-frame.ts'
import type { PipelineFrame } from '../../mesh/pipeline-frame.ts'
import { PeerLinks } from '../../mesh/pipeline-link.ts'
import type { PeerLinkComponents, PeerLinkError } from '../../mesh/pipeline-link.ts'
import type { MeshLogger } from '../../mesh/node.ts'
import type { Offence } from '../../mesh/peer-score.ts'
import { MeshError } from '../../mesh/errors.ts'
import { EngineError } from '../executor/engine.ts'
import type { StageEngine } from '../executor/stage-engine.ts'
import type { StageSampling } from '../executor/stage-protocol.ts'
import { StagePeerLostError, StageFailedError, StepTimeoutError, dropFrame, errorFrame, messageOf, resultFrame, stepFrame } from './pipeline-protocol.ts'
import type { ErrorMsg, LocalStages, OpenMeta, ResultMsg, RouteHop, StageLink, StageStepResult, StepMsg } from './pipeline-protocol.ts'

export * from './pipeline-protocol.ts'

/** A sequence's state at a stage here. */
interface StageSeq {
  seq: string
  hop: number
  engine: StageEngine
  open: OpenMeta
  /** the peer that sends this stage its steps */
  from: string
  busy: boolean
  /** the next hop has been sent the sequence's open */
  forwarded: boolean
  lastStep: number
  touched: number
  dropped: boolean
}

/** A driver's step waiting for its answer. */
interface Waiting {
  step: number
  peers: Set<string>
  resolve: (r: StageStepResult) => void
  reject: (err: Error) => void
}

export interface PipelineServiceInit {
  local: LocalStages
  /** offences of peers (malformed frames, protocol violations): the agent's one peer score */
  offences: { strike: (peer: string, reason: string, offence?: Offence) => unknown }
  log: MeshLogger
  /** a driver's step with no answer within this fails (and the request migrates) */
  stepTimeoutMs?: number
  /** a stage forgets a sequence untouched this long (its driver vanished without a drop) */
  idleMs?: number
  /** sequences one upstream peer may hold open on this agent's stages */
  maxSequencesPerPeer?: number
}

export interface PipelineComponents extends PeerLinkComponents {
  /** this agent's peer id */
  self: string
  /** resolves when `peer` answers a libp2p ping (rejects otherwise) */
  ping: (peer: string, signal: AbortSignal) => Promise<unknown>
}

/** What a vDAG driver needs of the pipeline: open sequences from here, and tell live peers from dead ones. */
export interface PipelineClient {
  readonly self: string
  open: (route: RouteHop[], seq: string, opts: { sampling: StageSampling, returnLogits: boolean }) => StageLink
  /** whether `peer` answers a ping within `ms` */
  alive: (peer: string, ms: number, signal: AbortSignal) => Promise<boolean>
}

/**
 * Pipeline stages in a ring over /blockmesh/pipeline/1.0.0. A driver sends a sequence's step to the
 * first stage; each stage runs it and sends its activations straight on to the next stage; the last
 * stage sends the sampled token straight back to the driver. So a token crosses N links for N stages
 * (the nested call chain it replaces crossed 2(N−1) and held every stage's stream while later stages
 * worked). All sequences between two peers share one stream (mesh/pipeline-link.ts); a stage runs the
 * steps of different sequences as they come, batching those that wait together, and with k stages
 * takes at most 1/k of its sequences per batch so the groups keep every stage busy (micro-batches).
 *
 * A sequence's first step carries, for each stage, the block, the rest of the route, the driver (its
 * origin) and the sampling settings. Failures go to the driver as error frames; a peer that drops out
 * fails the steps that were waiting on it (the driver then migrates the sequence, see driver.ts) and
 * frees the sequences it fed. A malformed frame or a protocol violation costs the sender a strike.
 */
export class PipelineService implements PipelineClient {
  readonly self: string
  private readonly init: PipelineServiceInit
  private readonly components: PipelineComponents
  readonly links: PeerLinks
  private readonly seqs = new Map<string, StageSeq>()
  private readonly perPeer = new Map<string, number>()
  private readonly waiting = new Map<string, Waiting>()
  private nextGroup = 0
  private sweeper: NodeJS.Timeout | undefined

  constructor (components: PipelineComponents, init: PipelineServiceInit) {
    this.components = components
    this.init = init
    this.self = components.self
    this.links = new PeerLinks(components, {
      onFrame: (peer, frame) => { this.onFrame(peer, frame) },
      onInvalid: (peer, reason, offence) => { this.init.offences.strike(peer, reason, offence) },
      onSendFailed: (peer, _frames, err) => { this.unreachable(peer, err) },
      onPeerLost: (peer, err) => { this.peerLost(peer, err) },
      log: init.log
    })
  }

  async start (): Promise<void> {
    await this.links.start()
    const idle = this.init.idleMs ?? 10 * 60_000
    this.sweeper = setInterval(() => { this.sweep(idle) }, Math.min(60_000, idle))
    this.sweeper.unref()
  }

  async stop (): Promise<void> {
    clearInterval(this.sweeper)
    for (const w of this.waiting.values()) w.reject(new StagePeerLostError(this.self, 'the pipeline service stopped'))
    this.waiting.clear()
    for (const s of this.seqs.values()) this.forget(s, false)
    await this.links.stop()
  }

  /** Sequences held by stages here, and driver steps waiting. */
  stats (): { sequences: number, waiting: number } {
    return { sequences: this.seqs.size, waiting: this.waiting.size }
  }

  // ------------------------------------------------------------------ driver side

  async alive (peer: string, ms: number, signal: AbortSignal): Promise<boolean> {
    if (peer === this.self) return true
    try {
      await this.components.ping(peer, AbortSignal.any([signal, AbortSignal.timeout(ms)]))
      return true
    } catch {
      return false
    }
  }

  /** A sequence through `route`, driven from here. Nothing is sent until the first step (which opens every stage). */
  open (route: RouteHop[], seq: string, opts: { sampling: StageSampling, returnLogits: boolean }): StageLink {
    if (route.length === 0) throw new MeshError('empty route', 'ERR_EMPTY_ROUTE')
    let wire = 0
    let opened = false
    // the sequences this agent drives take the micro-batches of their pipeline in turn
    const group = route.length > 1 ? this.nextGroup++ % route.length : undefined
    let closed = false
    const peers = new Set(route.map(h => h.peer))
    const openFor = (hop: number): OpenMeta => ({ block: route[hop].block, route: route.slice(hop + 1), origin: this.self, sampling: opts.sampling, returnLogits: opts.returnLogits, stages: route.length })
    return {
      step: async (input, signal) => {
        if (closed) throw new MeshError('the sequence is closed', 'ERR_SEQUENCE_CLOSED')
        if (this.waiting.has(seq)) throw new MeshError(`sequence ${seq} already has a step under way`, 'ERR_STEP_BUSY')
        signal?.throwIfAborted()
        const step = wire++
        const msg: StepMsg = {
          seq,
          hop: 0,
          step,
          pastLen: input.pastLen,
          rows: input.seqLen,
          sample: input.sample !== false,
          ...(group != null ? { group } : {}),
          ...(input.tokens != null ? { tokens: input.tokens } : { hidden: input.hidden }),
          ...(input.mask != null ? { mask: input.mask } : {}),
          ...(opened ? {} : { open: openFor(0) })
        }
        opened = true
        return await new Promise<StageStepResult>((resolve, reject) => {
          const timeoutMs = this.init.stepTimeoutMs ?? 120_000
          const finish = (): void => {
            clearTimeout(timer)
            signal?.removeEventListener('abort', onAbort)
            if (this.waiting.get(seq) === entry) this.waiting.delete(seq)
          }
          const entry: Waiting = {
            step,
            peers,
            resolve: (r) => { finish(); resolve(r) },
            reject: (err) => { finish(); reject(err) }
          }
          const onAbort = (): void => { entry.reject(signal?.reason as Error) }
          const timer = setTimeout(() => { entry.reject(new StepTimeoutError(`no answer from the pipeline within ${Math.round(timeoutMs / 1000)} s`)) }, timeoutMs)
          signal?.addEventListener('abort', onAbort, { once: true })
          this.waiting.set(seq, entry)
          this.dispatchStep(route[0].peer, msg)
        })
      },
      close: () => {
        if (closed) return
        closed = true
        const w = this.waiting.get(seq)
        if (w != null) { this.waiting.delete(seq); w.reject(new MeshError('the sequence is closed', 'ERR_SEQUENCE_CLOSED')) }
        if (opened) this.dispatchDrop(route[0].peer, seq, 0)
      }
    }
  }

  private onResult (from: string, msg: ResultMsg): void {
    const w = this.waiting.get(msg.seq)
    // a late answer to a step that timed out or whose sequence moved on is ignored; only a peer of the route answers
    if (w == null || w.step !== msg.step || (from !== this.self && !w.peers.has(from))) return
    w.resolve(msg.logprob != null ? { token: msg.token, logits: msg.logits, logprob: msg.logprob } : { token: msg.token, logits: msg.logits })
  }

  private onError (from: string, msg: ErrorMsg): void {
    const w = this.waiting.get(msg.seq)
    if (w != null) {
      if (w.step === msg.step && (from === this.self || w.peers.has(from))) w.reject(new StageFailedError(msg.message, msg.code))
      return
    }
    // an error from a stage on a peer this agent fed (it did not know the sequence's driver): pass it on to the driver
    if (from === this.self) return
    for (const s of this.seqs.values()) {
      if (s.seq === msg.seq && s.open.route[0]?.peer === from) { this.sendError(s.open.origin, { ...msg, step: s.lastStep }); this.forget(s, false) }
    }
  }

  // ------------------------------------------------------------------ stage side

  /** Runs a step of a stage here; returns what the sender did wrong (a protocol violation), if anything. */
  private onStep (from: string, msg: StepMsg): string | null {
    const key = `${msg.seq}/${msg.hop}`
    let s = this.seqs.get(key)
    if (s == null) {
      if (msg.open == null) {
        // forgotten here (idle, or this agent restarted): whoever sent it passes the error on to the driver
        this.sendError(from, { seq: msg.seq, step: msg.step, message: `no sequence ${msg.seq} at hop ${msg.hop} here (forgotten or never opened)`, code: 'unknown_sequence' })
        return null
      }
      const open = msg.open
      let engine: StageEngine
      try {
        engine = this.init.local(open.block)
      } catch (err) {
        this.sendError(open.origin, { seq: msg.seq, step: msg.step, message: `stage ${open.block} is not served on ${this.self}: ${(err as Error).message}`, code: 'stage_unavailable' })
        return null
      }
      const held = this.perPeer.get(from) ?? 0
      if (held >= (this.init.maxSequencesPerPeer ?? 4096)) {
        this.sendError(open.origin, { seq: msg.seq, step: msg.step, message: `peer ${from} already holds ${held} sequences on this agent's stages`, code: 'too_many_sequences' })
        return null
      }
      this.perPeer.set(from, held + 1)
      s = { seq: msg.seq, hop: msg.hop, engine, open, from, busy: false, forwarded: false, lastStep: msg.step, touched: Date.now(), dropped: false }
      this.seqs.set(key, s)
    } else if (s.from !== from) {
      // only the peer that opened a sequence here feeds it (as only it may drop it)
      return `a step for sequence ${msg.seq} at hop ${msg.hop}, which another peer feeds`
    } else if (s.busy) {
      return `a second step for sequence ${msg.seq} while one is under way`
    }
    const info = s.engine.info
    const input = info.first
      ? (msg.tokens != null && msg.tokens.length === msg.rows && msg.rows > 0 ? { tokens: Array.from(msg.tokens) } : null)
      : (msg.hidden != null && msg.rows > 0 && msg.hidden.length === msg.rows * info.hiddenSize ? { hidden: msg.hidden, seqLen: msg.rows } : null)
    if (input == null) {
      const why = info.first ? 'the first stage takes int32 token ids, one per row' : `this stage takes float32 activations of ${info.hiddenSize} per row`
      this.sendError(s.open.origin, { seq: msg.seq, step: msg.step, message: `malformed step input: ${why}`, code: 'bad_step' })
      this.forget(s, true)
      return why
    }
    const stage = s
    stage.busy = true
    stage.touched = Date.now()
    stage.lastStep = msg.step
    stage.engine.step(msg.seq, input, msg.pastLen, {
      sampling: stage.open.sampling,
      returnLogits: stage.open.returnLogits,
      mask: msg.mask,
      sample: msg.sample,
      group: msg.group
    }).then(out => {
      stage.busy = false
      if (stage.dropped) return
      if ('token' in out) {
        this.sendResult(stage.open.origin, { seq: msg.seq, step: msg.step, token: out.token, logprob: out.logprob, logits: out.logits })
        return
      }
      const next = stage.open.route[0]
      if (next == null) { this.sendError(stage.open.origin, { seq: msg.seq, step: msg.step, message: 'this stage produces activations but the route has no next stage', code: 'bad_route' }); return }
      const forward: StepMsg = { seq: msg.seq, hop: msg.hop + 1, step: msg.step, pastLen: msg.pastLen, rows: out.seqLen, hidden: out.hidden, sample: msg.sample, ...(msg.group != null ? { group: msg.group } : {}), ...(msg.mask != null ? { mask: msg.mask } : {}) }
      if (!stage.forwarded) {
        forward.open = { ...stage.open, block: next.block, route: stage.open.route.slice(1) }
        stage.forwarded = true
      }
      this.dispatchStep(next.peer, forward)
    }, (err: Error) => {
      stage.busy = false
      if (stage.dropped) return
      this.sendError(stage.open.origin, { seq: msg.seq, step: msg.step, message: err.message.slice(0, 2000), code: err instanceof EngineError ? err.code : 'stage_failed' })
    })
    return null
  }

  private onDrop (seq: string, hop: number): void {
    const s = this.seqs.get(`${seq}/${hop}`)
    if (s != null) this.forget(s, true)
  }

  /** Frees a sequence here; `forward`: tell the next stage too (when it was ever sent the sequence). */
  private forget (s: StageSeq, forward: boolean): void {
    const key = `${s.seq}/${s.hop}`
    if (this.seqs.get(key) !== s) return
    this.seqs.delete(key)
    s.dropped = true
    const held = (this.perPeer.get(s.from) ?? 1) - 1
    if (held > 0) this.perPeer.set(s.from, held)
    else this.perPeer.delete(s.from)
    s.engine.drop(s.seq)
    const next = s.open.route[0]
    if (forward && s.forwarded && next != null) this.dispatchDrop(next.peer, s.seq, s.hop + 1)
  }

  private sweep (idleMs: number): void {
    const before = Date.now() - idleMs
    for (const s of [...this.seqs.values()]) if (!s.busy && s.touched < before) this.forget(s, true)
  }

  /**
   * Frames could not reach `peer` (a failed dial, a broken stream): steps this agent drives through it
   * fail, and so do sequences whose next stage it runs (at their driver). Sequences it feeds here stay:
   * it may still reach this agent.
   */
  private unreachable (peer: string, err: PeerLinkError): void {
    for (const w of [...this.waiting.values()]) {
      if (w.peers.has(peer)) w.reject(new StagePeerLostError(peer, `peer ${peer} of the route cannot be reached: ${err.message}`, { cause: err }))
    }
    for (const s of [...this.seqs.values()]) {
      if (s.open.route[0]?.peer === peer && s.open.origin !== peer) {
        this.sendError(s.open.origin, { seq: s.seq, step: s.lastStep, message: `the next stage's peer ${peer} cannot be reached: ${err.message}`, code: 'peer_lost' })
        this.forget(s, false)
      }
    }
  }

  /**
   * `peer` disconnected: as unreachable(), and the sequences it fed here (or drove) are freed, with
   * their later stages.
   */
  private peerLost (peer: string, err: PeerLinkError): void {
    for (const w of [...this.waiting.values()]) {
      if (w.peers.has(peer)) w.reject(new StagePeerLostError(peer, `peer ${peer} of the route is gone: ${err.message}`, { cause: err }))
    }
    for (const s of [...this.seqs.values()]) {
      if (s.from === peer || s.open.origin === peer) this.forget(s, true)
      else if (s.open.route[0]?.peer === peer) {
        this.sendError(s.open.origin, { seq: s.seq, step: s.lastStep, message: `the next stage's peer ${peer} is gone: ${err.message}`, code: 'peer_lost' })
        this.forget(s, false)
      }
    }
  }


  // ------------------------------------------------------------------ delivery

  private dispatchStep (peer: string, msg: StepMsg): void {
    if (peer === this.self) {
      const wrong = this.onStep(this.self, msg)
      if (wrong != null) this.init.log.warn({ seq: msg.seq, err: wrong }, 'pipeline step refused')
      return
    }
    this.send(peer, stepFrame(msg))
  }

  private sendResult (peer: string, msg: ResultMsg): void {
    if (peer === this.self) { this.onResult(this.self, msg); return }
    this.send(peer, resultFrame(msg))
  }

  private sendError (peer: string, msg: ErrorMsg): void {
    if (peer === this.self) { this.onError(this.self, msg); return }
    this.send(peer, errorFrame(msg))
  }

  private dispatchDrop (peer: string, seq: string, hop: number): void {
    if (peer === this.self) { this.onDrop(seq, hop); return }
    this.send(peer, dropFrame(seq, hop))
  }

  private send (peer: string, frame: PipelineFrame): void {
    this.links.send(peer, frame).catch((err: Error) => { this.init.log.warn({ peer, err: err.message }, 'pipeline frame not sent') })
  }

  /**
   * A frame from a peer, checked and turned into a message (pipeline-protocol.ts). Anything that breaks
   * the protocol throws PipelineFrameError: the link strikes the peer and drops the stream (PeerLinks.read).
   */
  private onFrame (peer: string, f: PipelineFrame): void {
    const m = messageOf(f)
    switch (m.kind) {
      case 'step': {
        const wrong = this.onStep(peer, m.msg)
        if (wrong != null) throw new PipelineFrameError(wrong)
        return
      }
      case 'result': this.onResult(peer, m.msg); return
      case 'error': this.onError(peer, m.msg); return
      case 'drop': {
        const s = this.seqs.get(`${m.seq}/${m.hop}`)
        // only the peer that feeds a sequence may drop it
        if (s != null && s.from === peer) this.onDrop(m.seq, m.hop)
      }
    }
  }
}

/** js-libp2p style factory: `pipelineService(init)(components)`. */
export function pipelineService (init: PipelineServiceInit): (components: PipelineComponents) => PipelineService {
  return (components) => new PipelineService(components, init)
}
