import type { MeshNode } from '../../mesh/node.ts'
import type { Penalties } from '../../mesh/penalties.ts'
import { TENSOR_MAX_STREAMS, TENSOR_PROTOCOL, TensorChannel, TensorFrameError, asFloat32, asInt32 } from '../../mesh/tensor.ts'
import type { MeshLogger } from '../../mesh/node.ts'
import { MAX_MASK_BASE64, OpenMetaSchema, openRoute } from './links.ts'
import type { LocalStages, StageLink } from './links.ts'

export interface TensorServiceInit {
  node: MeshNode
  local: LocalStages
  penalties: Penalties
  log: MeshLogger
  /** a single step may take at most this long */
  stepTimeoutMs?: number
}

/**
 * `signal`, also aborted after `ms` unless clear() is called first. Not AbortSignal.timeout: on Node 22,
 * AbortSignal.any over a timeout signal keeps both signals (and the abort reason, whose stack holds
 * the stream) alive until the timer fires, so every step kept its stream for 120 s after the end.
 */
function withTimeout (signal: AbortSignal, ms: number): { signal: AbortSignal, clear: () => void } {
  const timer = new AbortController()
  const t = setTimeout(() => { timer.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError')) }, ms)
  return { signal: AbortSignal.any([signal, timer.signal]), clear: () => { clearTimeout(t) } }
}

/**
 * Serves /blockmesh/tensor/1.0.0: an upstream (a vDAG driver or the previous
 * stage) opens a stream for one sequence, naming the stage block here and
 * the rest of the route; each step it sends tokens or activations, this
 * agent runs its stage, passes the activations on, and answers with the
 * sampled token. A malformed or oversized frame costs the peer a strike and
 * ends the stream; the agent keeps serving everyone else. When the stream
 * ends (or the client went away upstream), the sequence's caches are freed
 * here and downstream.
 */
export async function serveTensors (init: TensorServiceInit): Promise<void> {
  const { node, local, penalties, log } = init
  await node.libp2p.handle(TENSOR_PROTOCOL, async (stream, connection) => {
    const peer = connection.remotePeer.toString()
    if (node.gate.isBanned(peer)) {
      // a banned peer's connection may not have closed yet: serve it nothing
      stream.abort(new Error('banned'))
      return
    }
    const channel = new TensorChannel(stream)
    const abort = new AbortController()
    stream.addEventListener('close', () => { abort.abort() })
    let link: StageLink | null = null
    try {
      const opening = withTimeout(abort.signal, 15_000)
      const first = await channel.recv(opening.signal).finally(opening.clear)
      const meta = OpenMetaSchema.safeParse(first.header.meta)
      if (first.header.kind !== 'open' || first.header.seq == null || !meta.success) throw new TensorFrameError('expected an open message with block, route and sampling')
      const seq = first.header.seq
      let engine
      try {
        engine = local(meta.data.block)
      } catch (err) {
        await channel.send({ kind: 'refused', meta: { message: (err as Error).message } })
        await channel.close()
        return
      }
      try {
        link = await openRoute(node, local, [{ peer: node.peerId.toString(), block: meta.data.block }, ...meta.data.route], seq, { sampling: meta.data.sampling, returnLogits: meta.data.returnLogits }, abort.signal)
      } catch (err) {
        await channel.send({ kind: 'refused', meta: { message: `cannot reach the next stage: ${(err as Error).message}` } })
        await channel.close()
        return
      }
      await channel.send({ kind: 'opened', seq })
      const hidden = engine.info.hiddenSize
      while (!abort.signal.aborted) {
        let msg
        try {
          msg = await channel.recv(abort.signal)
        } catch (err) {
          if (err instanceof TensorFrameError && err.message === 'stream ended') break
          throw err
        }
        const h = msg.header
        const pastLen = h.meta?.pastLen
        if (h.kind !== 'step' || h.seq !== seq || h.step == null || typeof pastLen !== 'number' || !Number.isInteger(pastLen) || pastLen < 0 || msg.payload == null) {
          throw new TensorFrameError('expected a step message for this sequence with a tensor and pastLen')
        }
        const shape = h.shape ?? []
        const maskMeta = h.meta?.mask
        if (maskMeta !== undefined && (typeof maskMeta !== 'string' || maskMeta.length > MAX_MASK_BASE64)) throw new TensorFrameError('a step\'s mask is a base64 bitset')
        const mask = typeof maskMeta === 'string' ? new Uint8Array(Buffer.from(maskMeta, 'base64')) : undefined
        let input
        if (engine.info.first) {
          if (h.dtype !== 'int32' || shape.length !== 1 || shape[0] < 1) throw new TensorFrameError('the first stage takes int32 token ids of shape [S]')
          input = { step: h.step, pastLen, tokens: Array.from(asInt32(msg.payload)), seqLen: shape[0], mask }
        } else {
          if (h.dtype !== 'float32' || shape.length !== 3 || shape[0] !== 1 || shape[1] < 1 || shape[2] !== hidden) throw new TensorFrameError(`this stage takes float32 activations of shape [1, S, ${hidden}]`)
          input = { step: h.step, pastLen, hidden: Float32Array.from(asFloat32(msg.payload)), seqLen: shape[1], mask }
        }
        try {
          const stepping = withTimeout(abort.signal, init.stepTimeoutMs ?? 120_000)
          const out = await link.step(input, stepping.signal).finally(stepping.clear)
          const logits = out.logits
          const meta = out.logprob != null ? { token: out.token, logprob: out.logprob } : { token: out.token }
          await channel.send(logits != null
            ? { kind: 'result', seq, step: h.step, meta, dtype: 'float32', shape: [logits.length] }
            : { kind: 'result', seq, step: h.step, meta }, logits != null ? new Uint8Array(logits.buffer, logits.byteOffset, logits.byteLength) : undefined)
        } catch (err) {
          if (abort.signal.aborted) break
          await channel.send({ kind: 'error', seq, step: h.step, meta: { message: (err as Error).message.slice(0, 1000) } })
        }
      }
      await channel.close()
    } catch (err) {
      if (err instanceof TensorFrameError) {
        penalties.strike(peer, `tensor frame: ${err.message}`)
        log.warn({ peer, err: err.message }, 'bad tensor stream dropped')
      } else {
        log.warn({ peer, err: (err as Error).message }, 'tensor stream failed')
      }
      channel.abort((err as Error).message)
    } finally {
      link?.close()
    }
  }, {
    // one stream per sequence per hop, both ways (this agent also dials the next stage): see TENSOR_MAX_STREAMS.
    // libp2p takes a handled protocol's outbound limit from here, not from dialProtocol's options
    maxInboundStreams: TENSOR_MAX_STREAMS,
    maxOutboundStreams: TENSOR_MAX_STREAMS
  })
}
