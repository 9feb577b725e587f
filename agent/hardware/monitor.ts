import os from 'node:os'
import si from 'systeminformation'
import type { Readings, GpuReading } from '../../mesh/capacity/record.ts'
import { gpusFromControllers, simulatedReadings } from './gpus.ts'
import type { SimulatedGpu } from './gpus.ts'
import { queryNvidiaSmi } from './nvidia-smi.ts'
import type { NvidiaSmiGpu } from './nvidia-smi.ts'

const MiB = 1024 * 1024

/** Updates NVIDIA readings (matched by order among NVIDIA GPUs) with a fresh nvidia-smi query. */
export function applyNvidiaSmi (gpus: GpuReading[], fresh: NvidiaSmiGpu[]): GpuReading[] {
  const byIndex = [...fresh].sort((a, b) => a.index - b.index)
  let k = 0
  return gpus.map(g => {
    if (!/nvidia/i.test(`${g.vendor} ${g.model}`) || g.simulated) return g
    const f = byIndex[k++]
    if (f == null) return g
    return {
      ...g,
      memoryTotalBytes: f.memoryTotalMiB != null && f.memoryTotalMiB > 0 ? f.memoryTotalMiB * MiB : g.memoryTotalBytes,
      memoryFreeBytes: f.memoryFreeMiB != null ? f.memoryFreeMiB * MiB : null,
      utilisation: f.utilisation != null ? Math.min(100, Math.max(0, f.utilisation)) : null
    }
  })
}

export interface HardwareMonitorInit {
  /** How often readings are refreshed. */
  intervalMs: number
  simulatedGpus?: SimulatedGpu[]
  /** A reading source that takes longer than this keeps the previous value. */
  timeoutMs?: number
  /**
   * How often GPUs are enumerated with systeminformation (which spawns lspci, nvidia-smi,
   * clinfo, xrandr…). Between enumerations, NVIDIA memory and utilisation are refreshed every
   * interval with one narrow nvidia-smi query.
   */
  discoverEveryMs?: number
  onError?: (what: string, err: Error) => void
}

export interface CpuTimes { idle: number, total: number }

/** Sums os.cpus() times over every core (Node reads /proc/stat itself: no child process). */
export function cpuTimes (cpus = os.cpus()): CpuTimes {
  let idle = 0
  let total = 0
  for (const c of cpus) {
    idle += c.times.idle
    total += c.times.user + c.times.nice + c.times.sys + c.times.idle + c.times.irq
  }
  return { idle, total }
}

/** Busy % between two samples; null when no time passed. */
export function busyPercent (before: CpuTimes, after: CpuTimes): number | null {
  const total = after.total - before.total
  if (total <= 0) return null
  return Math.min(100, Math.max(0, 100 * (1 - (after.idle - before.idle) / total)))
}

async function withTimeout<T> (p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      p,
      new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`${what} timed out after ${ms} ms`)) }, ms) })
    ])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * Keeps the latest real hardware readings (systeminformation and os),
 * refreshed in the background so a heartbeat never waits on nvidia-smi.
 * Simulated GPUs, when declared, are appended and marked simulated.
 */
export class HardwareMonitor {
  private readonly init: Required<Omit<HardwareMonitorInit, 'onError' | 'simulatedGpus'>> & Pick<HardwareMonitorInit, 'onError'>
  private simulated: SimulatedGpu[]
  private realGpus: GpuReading[] = []
  private cpuUtil = 0
  private mem = { totalBytes: os.totalmem(), freeBytes: os.freemem(), availableBytes: os.freemem() }
  private timer: NodeJS.Timeout | undefined
  private running = false
  private discoveredAt = -Infinity
  private lastCpu = cpuTimes()

  constructor (init: HardwareMonitorInit) {
    this.init = { timeoutMs: 10_000, discoverEveryMs: 60_000, ...init }
    this.simulated = init.simulatedGpus ?? []
  }

  async start (): Promise<void> {
    this.running = true
    await this.refresh()
    this.schedule()
  }

  stop (): void {
    this.running = false
    clearTimeout(this.timer)
  }

  setSimulatedGpus (gpus: SimulatedGpu[]): void {
    this.simulated = gpus
  }

  simulatedGpus (): SimulatedGpu[] {
    return this.simulated
  }

  readings (): Readings {
    const cpus = os.cpus()
    const [load1, load5, load15] = os.loadavg()
    return {
      cpu: {
        count: os.availableParallelism(),
        model: (cpus[0]?.model ?? 'unknown').trim().slice(0, 128),
        load1, load5, load15,
        utilisation: this.cpuUtil
      },
      memory: { ...this.mem },
      gpus: [...this.realGpus, ...simulatedReadings(this.simulated, this.realGpus.length)]
    }
  }

  private schedule (): void {
    if (!this.running) return
    this.timer = setTimeout(() => {
      void this.refresh().finally(() => { this.schedule() })
    }, this.init.intervalMs)
    this.timer.unref()
  }

  private async refresh (): Promise<void> {
    const t = this.init.timeoutMs
    const discover = Date.now() - this.discoveredAt >= this.init.discoverEveryMs
    // CPU busy % from os.cpus() deltas: si.currentLoad() runs `cat /proc/stat | grep cpu` through
    // execSync on Linux, blocking the event loop on every call
    const cpu = cpuTimes()
    this.cpuUtil = busyPercent(this.lastCpu, cpu) ?? this.cpuUtil
    this.lastCpu = cpu
    const [mem, graphics] = await Promise.allSettled([
      withTimeout(si.mem(), t, 'memory'),
      discover ? withTimeout(si.graphics(), t, 'gpus') : Promise.resolve(null)
    ])
    if (mem.status === 'fulfilled') {
      this.mem = { totalBytes: mem.value.total, freeBytes: mem.value.free, availableBytes: mem.value.available }
    } else this.init.onError?.('memory', mem.reason as Error)
    if (discover) this.discoveredAt = Date.now() // a failed discovery waits its turn too: no spawn storm
    if (graphics.status === 'fulfilled' && graphics.value != null) {
      this.realGpus = gpusFromControllers(graphics.value.controllers)
    } else if (graphics.status === 'rejected') this.init.onError?.('gpus', graphics.reason as Error)
    // systeminformation's discovery may leave NVIDIA free memory and utilisation unset (seen on an H100):
    // the narrow query runs right after discovery as well as on every other refresh
    if (this.realGpus.some(g => /nvidia/i.test(`${g.vendor} ${g.model}`))) {
      const smi = await queryNvidiaSmi(t)
      if (smi != null) this.realGpus = applyNvidiaSmi(this.realGpus, smi)
    }
  }
}
