import { test } from 'node:test'
import assert from 'node:assert/strict'
import { gpusFromControllers, parseSimulatedGpus, parseSize, simulatedReadings } from '../../agent/hardware/gpus.ts'
import { ValidationError } from '../../agent/errors.ts'

const MiB = 1024 * 1024

test('NVIDIA controllers as systeminformation reports them (via nvidia-smi) become GPU readings', () => {
  const gpus = gpusFromControllers([
    { vendor: 'NVIDIA', model: 'NVIDIA H100 80GB HBM3', vram: 81559, memoryTotal: 81559, memoryFree: 80000, utilizationGpu: 37 },
    { vendor: 'NVIDIA Corporation', model: 'GA102', vram: 24576, memoryTotal: null, memoryFree: null, utilizationGpu: null }
  ])
  assert.equal(gpus.length, 2)
  assert.deepEqual(gpus[0], {
    index: 0, vendor: 'NVIDIA', model: 'NVIDIA H100 80GB HBM3', memoryTotalBytes: 81559 * MiB, memoryFreeBytes: 80000 * MiB, utilisation: 37, simulated: false
  })
  // unknown values stay null: never invented
  assert.equal(gpus[1].memoryFreeBytes, null)
  assert.equal(gpus[1].utilisation, null)
  assert.equal(gpus[1].memoryTotalBytes, 24576 * MiB)
})

test('display-only and shared-memory adapters are not counted; a box without GPUs reports none', () => {
  assert.deepEqual(gpusFromControllers([]), [])
  assert.deepEqual(gpusFromControllers([
    { vendor: 'ASPEED Technology, Inc.', model: 'ASPEED Graphics Family', vram: 64 },
    { vendor: 'Red Hat, Inc.', model: 'QXL paravirtual graphic card', vram: 16 },
    { vendor: 'Intel Corporation', model: 'UHD Graphics 630', vram: 1536, vramDynamic: true },
    { vendor: 'NVIDIA', model: 'no memory reported', vram: 0 }
  ]), [])
  const amd = gpusFromControllers([{ vendor: 'Advanced Micro Devices, Inc. [AMD/ATI]', model: 'Radeon Instinct MI210', vram: 65536, vramDynamic: false }])
  assert.equal(amd.length, 1)
  assert.equal(amd[0].memoryFreeBytes, null)
})

test('sizes parse with binary and decimal units; bare numbers are GiB', () => {
  assert.equal(parseSize('80GiB'), 80 * 1024 ** 3)
  assert.equal(parseSize('48 GB'), 48e9)
  assert.equal(parseSize('512MiB'), 512 * MiB)
  assert.equal(parseSize('1.5'), 1.5 * 1024 ** 3)
  assert.throws(() => parseSize('lots'), /not a size/)
  assert.throws(() => parseSize('5 parsecs'), /unknown size unit/)
})

test('--simulate-gpus groups expand, default to NVIDIA and full free memory, and are marked simulated', () => {
  const gpus = parseSimulatedGpus('count=2,model=A100,memory=80GiB,free=60GiB,util=10; model=L4,memory=24GiB,vendor=Acme')
  assert.equal(gpus.length, 3)
  assert.equal(gpus[0].vendor, 'NVIDIA')
  assert.equal(gpus[2].vendor, 'Acme')
  const readings = simulatedReadings(gpus, 1)
  assert.deepEqual(readings.map(r => r.index), [1, 2, 3])
  assert.ok(readings.every(r => r.simulated))
  assert.equal(readings[2].memoryFreeBytes, 24 * 1024 ** 3)
  assert.deepEqual(parseSimulatedGpus('none'), [])
  assert.equal(parseSimulatedGpus('[{"memoryTotalBytes": 1000}]')[0].model, 'Simulated GPU')
})

test('bad --simulate-gpus values say what is wrong', () => {
  const cases: Array<[string, RegExp]> = [
    ['count=2', /memory=SIZE is required/],
    ['count=0,memory=1GiB', /count must be 1-64/],
    ['colour=red,memory=1GiB', /expected key=value/],
    ['memory=10GiB,free=20GiB', /free memory exceeds total memory/],
    ['memory=10GiB,util=150', /utilisation/],
    ['[{', /invalid JSON/]
  ]
  for (const [spec, re] of cases) {
    assert.throws(() => parseSimulatedGpus(spec), (err: Error) => err instanceof ValidationError && re.test(err.message), spec)
  }
})

test('nvidia-smi query output parses, including "[N/A]" values and names with commas', async () => {
  const { parseNvidiaSmi } = await import('../../agent/hardware/nvidia-smi.ts')
  const text = [
    '0, 00000000:18:00.0, NVIDIA H100 80GB HBM3, 81559, 80994, 0',
    '1, 00000000:3B:00.0, NVIDIA A100-SXM4-40GB, 40960, [N/A], [Not Supported]',
    'garbage line',
    '2, 00000000:86:00.0, Weird, Name, 24576, 1000, 97'
  ].join('\n')
  assert.deepEqual(parseNvidiaSmi(text), [
    { index: 0, busId: '00000000:18:00.0', name: 'NVIDIA H100 80GB HBM3', memoryTotalMiB: 81559, memoryFreeMiB: 80994, utilisation: 0 },
    { index: 1, busId: '00000000:3B:00.0', name: 'NVIDIA A100-SXM4-40GB', memoryTotalMiB: 40960, memoryFreeMiB: null, utilisation: null },
    { index: 2, busId: '00000000:86:00.0', name: 'Weird, Name', memoryTotalMiB: 24576, memoryFreeMiB: 1000, utilisation: 97 }
  ])
})

test('a fresh nvidia-smi reading updates NVIDIA GPUs only, in order', async () => {
  const { applyNvidiaSmi } = await import('../../agent/hardware/monitor.ts')
  const base = gpusFromControllers([
    { vendor: 'NVIDIA', model: 'H100', memoryTotal: 81559, memoryFree: 81000, utilizationGpu: 0 },
    { vendor: 'Advanced Micro Devices', model: 'MI210', vram: 65536 }
  ])
  const out = applyNvidiaSmi([...base, ...simulatedReadings(parseSimulatedGpus('memory=8GiB'), 2)],
    [{ index: 0, busId: 'x', name: 'H100', memoryTotalMiB: 81559, memoryFreeMiB: 1024, utilisation: 88 }])
  assert.equal(out[0].memoryFreeBytes, 1024 * MiB)
  assert.equal(out[0].utilisation, 88)
  assert.deepEqual(out[1], base[1])
  assert.equal(out[2].memoryFreeBytes, 8 * 1024 ** 3, 'simulated GPUs are left alone')
})

test('CPU busy % comes from per-core time deltas', async () => {
  const { cpuTimes, busyPercent } = await import('../../agent/hardware/monitor.ts')
  const core = (user: number, idle: number) => ({ model: 'x', speed: 1, times: { user, nice: 0, sys: 0, idle, irq: 0 } })
  const a = cpuTimes([core(100, 900), core(100, 900)])
  const b = cpuTimes([core(250, 950), core(200, 1000)]) // busy 250 of 400 ms
  assert.equal(busyPercent(a, b), 62.5)
  assert.equal(busyPercent(a, a), null)
  const live = cpuTimes()
  assert.ok(live.total > 0 && live.idle <= live.total)
})
