import type { MessageStream } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'

/** Encrypted messages up to this size leave as one buffer (bigger ones as the encrypter made them). */
const MAX_COALESCE_BYTES = 256 * 1024

interface SendsData { sendData: (data: Uint8ArrayList) => { sentBytes: number, canSendMore: boolean } }

/**
 * A connection whose outgoing chunks leave as one buffer. Noise encrypts a Yamux frame into a list — the
 * 2-byte length, the ciphertext of the frame's header, of its data, the tag — and libp2p's TCP connection
 * writes every chunk of a list with its own socket.write: with TCP_NODELAY each is a syscall (and a packet
 * the other end reads on its own), four per pipeline step frame. Copying a few KiB into one buffer costs
 * far less than three syscalls (bench/activations.ts measures the hop). A connection that is not a
 * libp2p message stream with sendData is returned as it is.
 */
export function coalesceWrites<T extends MessageStream> (connection: T): T {
  const conn = connection as unknown as Partial<SendsData>
  if (typeof conn.sendData !== 'function') return connection
  const original = conn.sendData.bind(connection)
  conn.sendData = (data: Uint8ArrayList) => {
    if (!(data instanceof Uint8ArrayList) || data.byteLength > MAX_COALESCE_BYTES) return original(data)
    // (subarray() of a one-buffer list is that buffer, not a copy)
    return original(new Uint8ArrayList(data.subarray()))
  }
  return connection
}
