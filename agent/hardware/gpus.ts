import { z } from 'zod'
import type { GpuReading } from '../../mesh/capacity/record.ts'
import { ValidationError, formatIssues } from '../errors.ts'

const MiB = 1024 * 1024

/** The fields of a systeminformation graphics controller this module reads. */
export interface SiController {
  vendor?: string
  model?: string
  vram?: number | null
  vramDynamic?: boolean
  memoryTotal?: number | null
  memoryFree?: number | null
  utilizationGpu?: number | null
}

/** Display-only adapters (BMC, virtual machine) are never compute GPUs. */
const DISPLAY_ONLY = /aspeed|matrox|cirrus|vmware|qxl|red hat|virtio|bochs|hyper-v|microsoft|parallels|virtualbox|innotek/i

/**
 * Turns systeminformation controllers into GPU readings. A controller counts
 * as a compute GPU when it is NVIDIA, or an AMD/Intel part with at least
 * 1 GiB of dedicated (not shared) memory. Values the driver does not report
 * stay null; nothing is invented.
 */
export function gpusFromControllers (controllers: SiController[]): GpuReading[] {
  const out: GpuReading[] = []
  for (const c of controllers) {
    const label = `${c.vendor ?? ''} ${c.model ?? ''}`
    if (DISPLAY_ONLY.test(label)) continue
    const totalMiB = positive(c.memoryTotal) ?? positive(c.vram)
    if (totalMiB == null) continue
    const nvidia = /nvidia/i.test(label)
    const dedicated = /amd|advanced micro|\bati\b|radeon|intel/i.test(label) && c.vramDynamic !== true && totalMiB >= 1024
    if (!nvidia && !dedicated) continue
    out.push({
      index: out.length,
      vendor: (c.vendor ?? '').trim() || (nvidia ? 'NVIDIA' : 'unknown'),
      model: (c.model ?? '').trim() || 'unknown',
      memoryTotalBytes: totalMiB * MiB,
      memoryFreeBytes: finite(c.memoryFree) != null ? Math.max(0, c.memoryFree as number) * MiB : null,
      utilisation: finite(c.utilizationGpu) != null ? clamp(c.utilizationGpu as number, 0, 100) : null,
      simulated: false
    })
  }
  return out
}

function finite (v: number | null | undefined): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null
}
function positive (v: number | null | undefined): number | null {
  const f = finite(v)
  return f != null && f > 0 ? f : null
}
function clamp (v: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, v))
}

const UNITS: Record<string, number> = {
  b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 1024, mib: MiB, gib: 1024 * MiB, tib: 1024 * 1024 * MiB
}

/** Parses "80GiB", "48 GB", "512MiB" or a bare number (GiB) into bytes. */
export function parseSize (text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text)
  if (m == null) throw new Error(`not a size: ${JSON.stringify(text)} (e.g. 80GiB, 48GB, 512MiB)`)
  const unit = m[2].toLowerCase() || 'gib'
  const mult = UNITS[unit]
  if (mult == null) throw new Error(`unknown size unit ${JSON.stringify(m[2])} (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)`)
  return Math.round(Number(m[1]) * mult)
}

export const SimulatedGpuSchema = z.object({
  vendor: z.string().min(1).max(64).default('NVIDIA'),
  model: z.string().min(1).max(128).default('Simulated GPU'),
  memoryTotalBytes: z.number().int().positive().max(2 ** 50),
  memoryFreeBytes: z.number().int().nonnegative().max(2 ** 50).optional(),
  utilisation: z.number().min(0).max(100).default(0)
}).refine(g => g.memoryFreeBytes == null || g.memoryFreeBytes <= g.memoryTotalBytes, {
  message: 'free memory exceeds total memory', path: ['memoryFreeBytes']
})
export type SimulatedGpu = z.infer<typeof SimulatedGpuSchema>
export const SimulatedGpuListSchema = z.array(SimulatedGpuSchema).max(64)

const GROUP_KEYS = new Set(['count', 'vendor', 'model', 'memory', 'free', 'util'])

/**
 * Parses a --simulate-gpus value: groups separated by ";", each a list of
 * key=value pairs: count, vendor, model, memory, free, util. Example:
 * "count=2,model=A100,memory=80GiB,free=60GiB,util=10;model=L4,memory=24GiB".
 * A JSON array of SimulatedGpu objects is accepted too.
 */
export function parseSimulatedGpus (spec: string): SimulatedGpu[] {
  const trimmed = spec.trim()
  if (trimmed === '' || trimmed === 'none') return []
  let raw: unknown[]
  if (trimmed.startsWith('[')) {
    try {
      raw = JSON.parse(trimmed)
    } catch (err) {
      throw new ValidationError(`--simulate-gpus: invalid JSON: ${(err as Error).message}`)
    }
  } else {
    raw = []
    for (const [gi, group] of trimmed.split(';').map(g => g.trim()).filter(Boolean).entries()) {
      const fields = new Map<string, string>()
      for (const pair of group.split(',')) {
        const eq = pair.indexOf('=')
        const key = pair.slice(0, eq).trim().toLowerCase()
        if (eq < 1 || !GROUP_KEYS.has(key)) {
          throw new ValidationError(`--simulate-gpus group ${gi + 1}: expected key=value with key in ${[...GROUP_KEYS].join(', ')}, got ${JSON.stringify(pair)}`)
        }
        fields.set(key, pair.slice(eq + 1).trim())
      }
      const count = Number(fields.get('count') ?? '1')
      if (!Number.isInteger(count) || count < 1 || count > 64) throw new ValidationError(`--simulate-gpus group ${gi + 1}: count must be 1-64`)
      if (!fields.has('memory')) throw new ValidationError(`--simulate-gpus group ${gi + 1}: memory=SIZE is required`)
      let gpu: Record<string, unknown>
      try {
        gpu = {
          vendor: fields.get('vendor'),
          model: fields.get('model'),
          memoryTotalBytes: parseSize(fields.get('memory') as string),
          memoryFreeBytes: fields.has('free') ? parseSize(fields.get('free') as string) : undefined,
          utilisation: fields.has('util') ? Number(fields.get('util')) : undefined
        }
      } catch (err) {
        throw new ValidationError(`--simulate-gpus group ${gi + 1}: ${(err as Error).message}`)
      }
      for (let i = 0; i < count; i++) raw.push(gpu)
    }
  }
  const parsed = SimulatedGpuListSchema.safeParse(raw)
  if (!parsed.success) {
    const issues = formatIssues(parsed.error.issues)
    throw new ValidationError(`--simulate-gpus: ${issues.map(i => `${i.field}: ${i.message}`).join('; ')}`, issues)
  }
  return parsed.data
}

export function simulatedReadings (gpus: SimulatedGpu[], firstIndex: number): GpuReading[] {
  return gpus.map((g, i) => ({
    index: firstIndex + i,
    vendor: g.vendor,
    model: g.model,
    memoryTotalBytes: g.memoryTotalBytes,
    memoryFreeBytes: g.memoryFreeBytes ?? g.memoryTotalBytes,
    utilisation: g.utilisation,
    simulated: true
  }))
}
