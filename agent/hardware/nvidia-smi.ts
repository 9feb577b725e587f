import { execFile } from 'node:child_process'

/** The one query run every heartbeat on NVIDIA boxes (systeminformation runs a wider one at discovery). */
export const NVIDIA_SMI_ARGS = ['--query-gpu=index,pci.bus_id,name,memory.total,memory.free,utilization.gpu', '--format=csv,noheader,nounits']

export interface NvidiaSmiGpu {
  index: number
  busId: string
  name: string
  memoryTotalMiB: number | null
  memoryFreeMiB: number | null
  utilisation: number | null
}

function num (s: string | undefined): number | null {
  const t = (s ?? '').trim()
  if (t === '' || /not supported|n\/a|unknown|\[/i.test(t)) return null
  const n = Number(t)
  return Number.isFinite(n) ? n : null
}

/** Parses `nvidia-smi --query-gpu=... --format=csv,noheader,nounits` output; malformed lines are skipped. */
export function parseNvidiaSmi (text: string): NvidiaSmiGpu[] {
  const out: NvidiaSmiGpu[] = []
  for (const line of text.split('\n')) {
    const cells = line.split(',').map(c => c.trim())
    if (cells.length < 6) continue
    const index = num(cells[0])
    if (index == null || !Number.isInteger(index)) continue
    out.push({
      index,
      busId: cells[1],
      // a model name may itself contain commas: everything between bus id and the last three numbers
      name: cells.slice(2, cells.length - 3).join(', '),
      memoryTotalMiB: num(cells.at(-3)),
      memoryFreeMiB: num(cells.at(-2)),
      utilisation: num(cells.at(-1))
    })
  }
  return out
}

/** Runs nvidia-smi; resolves null when it is missing or fails (the caller keeps its last readings). */
export async function queryNvidiaSmi (timeoutMs: number, binary = 'nvidia-smi'): Promise<NvidiaSmiGpu[] | null> {
  return await new Promise(resolve => {
    execFile(binary, NVIDIA_SMI_ARGS, { timeout: timeoutMs, maxBuffer: 1024 * 1024 }, (err, stdout) => {
      resolve(err != null ? null : parseNvidiaSmi(stdout))
    })
  })
}
