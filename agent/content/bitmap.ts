/**
 * Chunk bitmaps: one bit per chunk of a file, bit i of byte i>>3 is (i & 7), LSB first. The same layout in a
 * `have` answer (./protocol.ts), the store's table (./store.ts) and a transfer's bookkeeping (./swarm.ts).
 */

/** Whether bit `i` is set (bit i of byte i>>3 is (i & 7), LSB first). */
export function hasBit (bitmap: Uint8Array, i: number): boolean {
  return ((bitmap[i >> 3] ?? 0) & (1 << (i & 7))) !== 0
}

export function setBit (bitmap: Uint8Array, i: number): void {
  bitmap[i >> 3] |= 1 << (i & 7)
}

export function clearBit (bitmap: Uint8Array, i: number): void {
  bitmap[i >> 3] &= ~(1 << (i & 7))
}

/** Bytes of a bitmap of `chunks` bits. */
export function bitmapBytes (chunks: number): number {
  return Math.ceil(chunks / 8)
}

/** A bitmap with bits 0..chunks-1 set (the bits past the last chunk clear). */
export function fullBitmap (chunks: number): Uint8Array {
  const b = new Uint8Array(bitmapBytes(chunks)).fill(0xff)
  if (chunks % 8 !== 0) b[b.length - 1] = (1 << (chunks % 8)) - 1
  return b
}

/** Bits set. */
export function popcount (bitmap: Uint8Array): number {
  let n = 0
  for (let v of bitmap) {
    while (v !== 0) { v &= v - 1; n++ }
  }
  return n
}
