/**
 * The tensor protocol's framing over a raw TCP socket, for the activation-stream benchmark's
 * baseline: each message is [u32 length][JSON header] then, when the header has a shape,
 * [u32 length][payload] — the same bytes TensorChannel writes (with 4-byte lengths instead of
 * varints), without Noise, Yamux or validation.
 */
import type net from 'node:net'

export function encodeTcpFrame (header: unknown, payload?: Uint8Array | null): Buffer {
  const h = Buffer.from(JSON.stringify(header))
  const parts = [u32(h.length), h]
  if (payload != null && payload.length > 0) parts.push(u32(payload.length), Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength))
  return Buffer.concat(parts)
}

function u32 (n: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(n)
  return b
}

/** Parses messages arriving on a socket. */
export class TcpFrames {
  private buf: Buffer = Buffer.alloc(0)
  private header: { shape?: number[], dtype?: string } | null = null
  private handler: (header: unknown, payload: Buffer | null) => void = () => {}

  constructor (sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d])
      this.drain()
    })
  }

  on (handler: (header: unknown, payload: Buffer | null) => void): void { this.handler = handler }

  private drain (): void {
    for (;;) {
      if (this.buf.length < 4) return
      const n = this.buf.readUInt32BE(0)
      if (this.buf.length < 4 + n) return
      const body = this.buf.subarray(4, 4 + n)
      this.buf = this.buf.subarray(4 + n)
      if (this.header == null) {
        const h = JSON.parse(body.toString()) as { shape?: number[], dtype?: string }
        if (h.shape != null && h.shape.reduce((a, b) => a * b, 1) > 0) { this.header = h; continue }
        this.handler(h, null)
      } else {
        const h = this.header
        this.header = null
        this.handler(h, body)
      }
    }
  }
}
