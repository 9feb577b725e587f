import { createRequire } from 'node:module'
import os from 'node:os'
import type { onnx as OnnxNs } from 'onnx-proto'

// onnx-proto is CommonJS with static protobufjs code; require() gives its real shape
const { onnx } = createRequire(import.meta.url)('onnx-proto') as typeof import('onnx-proto')
export { onnx }
export type ModelProto = OnnxNs.ModelProto
export type IModelProto = OnnxNs.IModelProto
export type INodeProto = OnnxNs.INodeProto
export type ITensorProto = OnnxNs.ITensorProto
export type IValueInfoProto = OnnxNs.IValueInfoProto
export type IGraphProto = OnnxNs.IGraphProto

export const DT = { FLOAT: 1, INT64: 7, BOOL: 9 } as const
export const IR_VERSION = 8
export const OPSET = 17

if (os.endianness() !== 'LE') throw new Error('ONNX raw tensor data is little-endian; this generator assumes a little-endian host')

type Attr = number | number[] | string | ITensorProto
const A = onnx.AttributeProto.AttributeType

function attribute (name: string, v: Attr): OnnxNs.IAttributeProto {
  if (typeof v === 'string') return { name, type: A.STRING, s: new TextEncoder().encode(v) }
  if (Array.isArray(v)) return { name, type: A.INTS, ints: v }
  if (typeof v === 'number') return Number.isInteger(v) && !Object.is(v, -0) ? { name, type: A.INT, i: v } : { name, type: A.FLOAT, f: v }
  return { name, type: A.TENSOR, t: v }
}

/** Float attribute even when the value is integral (e.g. epsilon 1). */
export class FloatAttr { readonly value: number; constructor (v: number) { this.value = v } }

export function node (op: string, inputs: string[], outputs: string[], name: string, attrs: Record<string, Attr | FloatAttr> = {}): INodeProto {
  return {
    opType: op,
    input: inputs,
    output: outputs,
    name,
    attribute: Object.entries(attrs).map(([k, v]) => v instanceof FloatAttr ? { name: k, type: A.FLOAT, f: v.value } : attribute(k, v))
  }
}

export function floatTensor (name: string, dims: number[], data: Float32Array): ITensorProto {
  return { name, dims, dataType: DT.FLOAT, rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) }
}

export function int64Tensor (name: string, dims: number[], values: number[]): ITensorProto {
  const data = BigInt64Array.from(values.map(v => BigInt(v)))
  return { name, dims, dataType: DT.INT64, rawData: new Uint8Array(data.buffer) }
}

export function valueInfo (name: string, elemType: number, shape: Array<number | string>): IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: shape.map(d => typeof d === 'number' ? { dimValue: d } : { dimParam: d }) }
      }
    }
  }
}

export function encodeModel (model: IModelProto): Uint8Array {
  return onnx.ModelProto.encode(onnx.ModelProto.fromObject(model)).finish()
}

export function decodeModel (bytes: Uint8Array): ModelProto {
  return onnx.ModelProto.decode(bytes)
}
