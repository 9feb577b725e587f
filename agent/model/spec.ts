import { z } from 'zod'

/** Byte-level vocabulary: 256 bytes, then the special tokens. */
export const BOS = 256
export const EOS = 257
export const PAD = 258
export const BYTE_VOCAB = 259

/**
 * The generated GPT-style decoder's hyper-parameters. Same spec (and same
 * generator version) → byte-identical ONNX file.
 */
export const ModelSpecSchema = z.object({
  layers: z.number().int().min(1).max(96),
  hidden: z.number().int().min(16).max(8192),
  heads: z.number().int().min(1).max(128),
  vocab: z.number().int().min(BYTE_VOCAB).max(262_144),
  seed: z.number().int().min(0).max(0xffffffff),
  maxPositions: z.number().int().min(16).max(65_536).default(2048)
}).refine(s => s.hidden % s.heads === 0, { message: 'hidden must be a multiple of heads', path: ['hidden'] })
export type ModelSpec = z.output<typeof ModelSpecSchema>

/** Named sizes: tiny for tests, demo for `npm start`, 100m for benchmarks. */
export const PRESETS: Record<string, Omit<ModelSpec, 'seed'>> = {
  tiny: { layers: 2, hidden: 64, heads: 4, vocab: BYTE_VOCAB, maxPositions: 256 },
  demo: { layers: 6, hidden: 256, heads: 8, vocab: BYTE_VOCAB, maxPositions: 1024 },
  '100m': { layers: 14, hidden: 768, heads: 12, vocab: BYTE_VOCAB, maxPositions: 2048 }
}

export function parameterCount (s: Pick<ModelSpec, 'layers' | 'hidden' | 'vocab' | 'maxPositions'>): number {
  const h = s.hidden
  const perLayer = 2 * 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + (h * 4 * h + 4 * h) + (4 * h * h + h)
  return s.vocab * h + s.maxPositions * h + s.layers * perLayer + 2 * h + h * s.vocab
}

export function headDim (s: Pick<ModelSpec, 'hidden' | 'heads'>): number {
  return s.hidden / s.heads
}
