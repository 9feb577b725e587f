import { useEffect, useRef } from 'preact/hooks'
import uPlot from 'uplot'

export interface SparkProps {
  title: string
  /** x: seconds since epoch; y: values (null: a gap) */
  xs: number[]
  ys: Array<number | null>
  /** fixed y range (e.g. 0–100 for %); absent: from the data */
  range?: [number, number]
  unit?: string
  color?: string
}

/** A small time-series chart (uPlot on a canvas); redrawn with new data, not recreated. */
export function Spark ({ title, xs, ys, range, unit = '', color = '#3b82f6' }: SparkProps) {
  const el = useRef<HTMLDivElement>(null)
  const plot = useRef<uPlot | null>(null)
  useEffect(() => {
    if (el.current == null) return
    const opts: uPlot.Options = {
      width: 220,
      height: 64,
      cursor: { show: false },
      legend: { show: false },
      scales: { x: { time: true }, y: range != null ? { range } : { range: (_u, min, max) => [Math.min(0, min), Math.max(1, max * 1.1)] } },
      axes: [{ show: false }, { show: true, size: 34, font: '10px sans-serif', ticks: { show: false }, gap: 2, splits: u => { const [a, b] = u.scales.y.range == null ? [0, 1] : [u.scales.y.min ?? 0, u.scales.y.max ?? 1]; return [a, b] } }],
      series: [{}, { stroke: color, width: 1.5, fill: color + '22', spanGaps: false, points: { show: false } }]
    }
    plot.current = new uPlot(opts, [xs, ys], el.current)
    return () => { plot.current?.destroy(); plot.current = null }
  }, [])
  useEffect(() => { plot.current?.setData([xs, ys]) }, [xs, ys])
  const last = ys.length > 0 ? ys[ys.length - 1] : null
  return (
    <figure class="spark">
      <figcaption>{title} <strong>{last == null ? '–' : `${Math.round(last * 10) / 10}${unit}`}</strong></figcaption>
      <div ref={el} role="img" aria-label={`${title} over the last ${xs.length} samples`} />
    </figure>
  )
}
