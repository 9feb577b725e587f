/**
 * Writes small GGUF files for tests (format v3, little-endian): metadata of the common value types and
 * tensors given as raw bytes in any ggml type. Only for laying out fixtures; the product reads GGUF with
 * @huggingface/gguf.
 */
import { writeFileSync } from 'node:fs'

export type GgufMeta = string | number | boolean | { f32: number } | { u32: number } | string[] | number[] | { i32: number[] } | { f32s: number[] }
export interface GgufTensorIn { name: string, shape: number[], type: number, data: Uint8Array }

const T = { UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9 }

class Out {
  private readonly parts: Buffer[] = []
  length = 0
  push (b: Buffer): void { this.parts.push(b); this.length += b.length }
  u32 (v: number): void { const b = Buffer.alloc(4); b.writeUInt32LE(v); this.push(b) }
  i32 (v: number): void { const b = Buffer.alloc(4); b.writeInt32LE(v); this.push(b) }
  u64 (v: number): void { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); this.push(b) }
  f32 (v: number): void { const b = Buffer.alloc(4); b.writeFloatLE(v); this.push(b) }
  str (s: string): void { const b = Buffer.from(s, 'utf8'); this.u64(b.length); this.push(b) }
  bytes (): Buffer { return Buffer.concat(this.parts) }
}

function value (o: Out, v: GgufMeta): void {
  if (typeof v === 'string') { o.u32(T.STRING); o.str(v) } else if (typeof v === 'boolean') { o.u32(T.BOOL); o.push(Buffer.from([v ? 1 : 0])) } else if (typeof v === 'number') {
    if (Number.isInteger(v) && v >= 0) { o.u32(T.UINT32); o.u32(v) } else { o.u32(T.FLOAT32); o.f32(v) }
  } else if (Array.isArray(v)) {
    o.u32(T.ARRAY)
    if (v.every(x => typeof x === 'string')) { o.u32(T.STRING); o.u64(v.length); for (const x of v as string[]) o.str(x) } else { o.u32(T.INT32); o.u64(v.length); for (const x of v as number[]) o.i32(x) }
  } else if ('f32' in v) { o.u32(T.FLOAT32); o.f32(v.f32) } else if ('u32' in v) { o.u32(T.UINT32); o.u32(v.u32) } else if ('i32' in v) {
    o.u32(T.ARRAY); o.u32(T.INT32); o.u64(v.i32.length); for (const x of v.i32) o.i32(x)
  } else { o.u32(T.ARRAY); o.u32(T.FLOAT32); o.u64(v.f32s.length); for (const x of v.f32s) o.f32(x) }
}

export function writeGguf (path: string, meta: Record<string, GgufMeta>, tensors: GgufTensorIn[], magic = 'GGUF'): void {
  const o = new Out()
  o.push(Buffer.from(magic, 'latin1'))
  o.u32(3)
  o.u64(tensors.length)
  o.u64(Object.keys(meta).length)
  for (const [k, v] of Object.entries(meta)) { o.str(k); value(o, v) }
  let offset = 0
  const offsets: number[] = []
  for (const t of tensors) {
    o.str(t.name)
    o.u32(t.shape.length)
    for (const d of t.shape) o.u64(d)
    o.u32(t.type)
    o.u64(offset)
    offsets.push(offset)
    offset += Math.ceil(t.data.length / 32) * 32
  }
  const pad = (32 - (o.length % 32)) % 32
  o.push(Buffer.alloc(pad))
  for (const t of tensors) {
    o.push(Buffer.from(t.data))
    o.push(Buffer.alloc((32 - (t.data.length % 32)) % 32))
  }
  writeFileSync(path, o.bytes())
}
