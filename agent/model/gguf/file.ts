/**
 * A GGUF file opened for reading: header, metadata and tensor table parsed with `@huggingface/gguf`
 * (which reads the header in bounded ranges), tensor data read on demand with positioned reads, one
 * tensor at a time — a multi-GB file is never read into one buffer.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs'
import { gguf } from '@huggingface/gguf'
import { AgentError } from '../../errors.ts'
import { quantInfo, tensorBytes, UnsupportedQuantError } from './quants.ts'

/** Why a GGUF file was refused. */
export type GgufReason = 'not_found' | 'bad_magic' | 'truncated' | 'corrupt' | 'unsupported_version' | 'unsupported_quant' | 'unsupported_architecture' | 'missing_metadata' | 'missing_tensor'

/** A model file that is not a GGUF this agent can use; `reason` says why. */
export class GgufError extends AgentError {
  readonly reason: GgufReason
  constructor (reason: GgufReason, message: string, details?: Record<string, unknown>, options?: ErrorOptions) {
    super(message, 'invalid_model', reason === 'not_found' ? 404 : 422, { reason, ...details }, options)
    this.name = 'GgufError'
    this.reason = reason
  }
}

export const GGUF_MAGIC = 0x46554747 // "GGUF" little-endian

/** Most metadata entries any real GGUF has (llama.cpp's own files have < 100; vocabularies are one entry each). */
const MAX_METADATA = 4096
const MAX_TENSORS = 65_536

export interface GgufTensor {
  name: string
  /** ggml order: shape[0] is the contiguous (innermost) dimension */
  shape: number[]
  type: number
  elements: number
  /** absolute byte offset in the file */
  offset: number
  bytes: number
}

export type GgufValue = string | number | bigint | boolean | GgufValue[]

export interface GgufFile {
  path: string
  version: number
  sizeBytes: number
  metadata: Record<string, GgufValue>
  tensors: Map<string, GgufTensor>
  /** the tensor's raw (still quantized) bytes */
  read: (name: string) => Uint8Array
  close: () => void
}

function checkMagic (fd: number, path: string): void {
  const head = Buffer.alloc(8)
  const n = readSync(fd, head, 0, 8, 0)
  if (n < 8) throw new GgufError('truncated', `${path} is ${n} bytes long: too short for a GGUF header`, { path })
  if (head.readUInt32LE(0) !== GGUF_MAGIC) {
    const seen = head.subarray(0, 4).toString('latin1').replace(/[^\x20-\x7e]/g, '.')
    throw new GgufError('bad_magic', `${path} is not a GGUF file: it starts with "${seen}", not "GGUF"`, { path })
  }
  const version = head.readUInt32LE(4)
  if (version !== 2 && version !== 3) throw new GgufError('unsupported_version', `${path} is GGUF version ${version}; versions 2 and 3 are supported`, { path, version })
}

/** Opens and checks a GGUF file: magic, version, every tensor's type known and its bytes inside the file. */
export async function openGguf (path: string): Promise<GgufFile> {
  let fd: number
  try {
    fd = openSync(path, 'r')
  } catch (err) {
    throw new GgufError('not_found', `model file ${path} cannot be opened: ${(err as Error).message}`, { path }, { cause: err })
  }
  try {
    const sizeBytes = fstatSync(fd).size
    checkMagic(fd, path)
    let parsed: Awaited<ReturnType<typeof gguf>>
    try {
      parsed = await gguf(path, { allowLocalFile: true })
    } catch (err) {
      // the parser ran past the end of the file or met an impossible value
      throw new GgufError(err instanceof RangeError ? 'truncated' : 'corrupt', `${path}: the GGUF header cannot be read: ${(err as Error).message}`, { path }, { cause: err })
    }
    const { metadata, tensorInfos, tensorDataOffset } = parsed
    if (Object.keys(metadata).length > MAX_METADATA) throw new GgufError('corrupt', `${path} has ${Object.keys(metadata).length} metadata entries (limit ${MAX_METADATA})`, { path })
    if (tensorInfos.length > MAX_TENSORS) throw new GgufError('corrupt', `${path} has ${tensorInfos.length} tensors (limit ${MAX_TENSORS})`, { path })
    const base = Number(tensorDataOffset)
    const tensors = new Map<string, GgufTensor>()
    for (const t of tensorInfos) {
      const shape = t.shape.map(Number)
      const elements = shape.reduce((a, b) => a * b, 1)
      let bytes: number
      try {
        quantInfo(t.dtype)
        bytes = tensorBytes(t.dtype, elements)
      } catch (err) {
        if (err instanceof UnsupportedQuantError) {
          throw new GgufError('unsupported_quant', `${path}: tensor ${t.name} is stored as ${err.message}`, { path, tensor: t.name, type: t.dtype }, { cause: err })
        }
        throw new GgufError('corrupt', `${path}: tensor ${t.name} has an impossible shape [${shape.join(', ')}]: ${(err as Error).message}`, { path, tensor: t.name }, { cause: err })
      }
      const offset = base + Number(t.offset)
      if (offset + bytes > sizeBytes) {
        throw new GgufError('truncated', `${path} is truncated: tensor ${t.name} ends at byte ${offset + bytes}, the file has ${sizeBytes}`, { path, tensor: t.name, sizeBytes })
      }
      tensors.set(t.name, { name: t.name, shape, type: t.dtype, elements, offset, bytes })
    }
    let open = true
    return {
      path,
      version: Number(metadata.version),
      sizeBytes,
      metadata: metadata as unknown as Record<string, GgufValue>,
      tensors,
      read (name) {
        if (!open) throw new Error(`${path} is closed`)
        const t = tensors.get(name)
        if (t == null) throw new GgufError('missing_tensor', `${path} has no tensor ${name}`, { path, tensor: name })
        const buf = new Uint8Array(t.bytes)
        let done = 0
        while (done < t.bytes) {
          const n = readSync(fd, buf, done, t.bytes - done, t.offset + done)
          if (n === 0) throw new GgufError('truncated', `${path} ended while reading tensor ${name}`, { path, tensor: name })
          done += n
        }
        return buf
      },
      close () {
        if (open) { open = false; closeSync(fd) }
      }
    }
  } catch (err) {
    closeSync(fd)
    throw err
  }
}
