import type { StreamMuxer, StreamMuxerFactory } from '@libp2p/interface'

/** @chainsafe/libp2p-yamux's StreamState.Established (src/stream.ts). */
const ESTABLISHED = 3

/** Set on a stream whose window updates wait for half the window (tests check it took). */
export const HALF_WINDOW_UPDATES = Symbol.for('blockmesh.yamux.halfWindowUpdates')

interface YamuxStreamInternals {
  state: number
  recvWindow: number
  recvWindowCapacity: number
  sendWindowUpdate: () => void
  [HALF_WINDOW_UPDATES]?: true
}

function patchStream (stream: unknown): void {
  const s = stream as Partial<YamuxStreamInternals>
  const send = s.sendWindowUpdate
  if (typeof send !== 'function' || typeof s.recvWindow !== 'number' || typeof s.recvWindowCapacity !== 'number' || typeof s.state !== 'number') return
  s.sendWindowUpdate = function (this: YamuxStreamInternals) {
    // established, and at least half the window still free: no update yet (flags to send, a pause, a
    // window more than half used: as the library does)
    if (this.state === ESTABLISHED && this.recvWindowCapacity * 2 >= this.recvWindow) return
    send.call(this)
  }
  s[HALF_WINDOW_UPDATES] = true
}

/**
 * Yamux whose streams send a window update once half their receive window is used, as go-yamux and
 * rust-yamux do, instead of after every data frame (@chainsafe/libp2p-yamux 8): each such update is a
 * frame of its own — a Noise message, a socket write and a wake-up of the peer — so a pipeline decode step
 * cost its receiver an extra write (docs/decisions.md, "Where a pipeline hop's time goes"). The sender never
 * stalls for it: a frame is at most a quarter of the initial window, and the update leaves as soon as half
 * is used. Streams of a library version whose internals differ are left as they are (test/unit/yamux-window
 * checks that the change takes). `streamMuxers: [halfWindowUpdates(yamux())]`.
 */
export function halfWindowUpdates<C> (factory: (components: C) => StreamMuxerFactory): (components: C) => StreamMuxerFactory {
  return (components) => {
    const inner = factory(components)
    return {
      protocol: inner.protocol,
      createStreamMuxer: (maConn) => {
        const muxer = inner.createStreamMuxer(maConn) as StreamMuxer & { _newStream?: (...args: unknown[]) => unknown }
        const newStream = muxer._newStream
        if (typeof newStream === 'function') {
          muxer._newStream = function (this: unknown, ...args: unknown[]) {
            const stream = newStream.apply(this, args)
            patchStream(stream)
            return stream
          }
        }
        return muxer
      }
    }
  }
}
