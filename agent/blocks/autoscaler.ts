import type { Autoscaling } from '../scheduler/policy.ts'
import type { CapacityRecord, InstanceReport } from '../../mesh/capacity/record.ts'

/** A block's autoscaling metric now: per ready instance (queue depth, tokens/s) or per CPU of their nodes (load). */
export function autoscaleMetric (metric: Autoscaling['metric'], ready: Array<{ report: InstanceReport, record?: CapacityRecord }>): number | null {
  if (ready.length === 0) return null
  const values = ready.map(x => metric === 'queueDepth'
    ? x.report.queued
    : metric === 'tokensPerSecond'
      ? x.report.tokensPerSecond
      : (x.record?.readings.cpu.load1 ?? 0) / Math.max(1, x.record?.readings.cpu.count ?? 1))
  return values.reduce((a, v) => a + v, 0) / values.length
}

/**
 * The autoscaling decisions of the blocks one agent reconciles: it keeps each block's samples over the
 * window and answers the next target when the metric stayed past a threshold for the whole window and
 * the cooldown since the last change has passed. No I/O: the reconciler writes the target.
 */
export class Autoscaler {
  private readonly samples = new Map<string, Array<[number, number]>>()
  private readonly lastScale = new Map<string, number>()

  /** Records a sample; returns the new target, or null to stay. */
  decide (block: string, a: Autoscaling, value: number, target: number, bounds: { min: number, max: number }, heartbeatMs: number, now = Date.now()): number | null {
    const window = a.window * 1000
    const s = (this.samples.get(block) ?? []).filter(([t]) => t >= now - window - 2 * heartbeatMs)
    s.push([now, value])
    this.samples.set(block, s)
    const covered = s[0][0] <= now - window + heartbeatMs / 2
    const inWindow = s.filter(([t]) => t >= now - window - heartbeatMs / 2)
    const last = this.lastScale.get(block)
    if (!covered || (last != null && now - last < a.cooldown * 1000)) return null
    let next = target
    if (inWindow.every(([, v]) => v > a.scaleUpAbove) && target < bounds.max) next = target + 1
    else if (inWindow.every(([, v]) => v < a.scaleDownBelow) && target > bounds.min) next = target - 1
    if (next === target) return null
    this.lastScale.set(block, now)
    this.samples.set(block, [])
    return next
  }

  forget (block: string): void {
    this.samples.delete(block)
  }
}
