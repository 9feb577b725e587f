/**
 * The pipecores benchmark's pure parts: which CPUs two boxes get, and the table it writes (ratios of
 * medians). The benchmark itself runs agents and is run by `npm run bench -- --only pipecores`.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import os from 'node:os'
import { readFileSync } from 'node:fs'
import { pickCores, pipelineCoresMarkdown } from '../../bench/pipeline-cores.ts'
import type { PipelineCoresResult } from '../../bench/pipeline-cores.ts'

const siblings = (cpu: number): string => { try { return readFileSync(`/sys/devices/system/cpu/cpu${cpu}/topology/thread_siblings_list`, 'utf8').trim() } catch { return String(cpu) } }

test('boxes of several CPUs take consecutive ranges; a box of one CPU takes CPU 0 and a CPU of another physical core', () => {
  assert.deepEqual(pickCores(2), ['0-1', '2-3'])
  assert.deepEqual(pickCores(4), ['0-3', '4-7'])
  const [a, b] = pickCores(1)
  assert.equal(a, '0')
  if (os.availableParallelism() >= 2) {
    assert.notEqual(b, '0')
    // where every CPU shares CPU 0's core there is no better choice than CPU 1
    const other = Array.from({ length: os.availableParallelism() - 1 }, (_, i) => i + 1).some(c => siblings(c) !== siblings(0))
    if (other) assert.notEqual(siblings(Number(b)), siblings(0))
  }
})

test('the table gives each way its median and its ratio to the whole model\'s median', () => {
  const r: PipelineCoresResult = {
    cores: ['0', '1'],
    width: 1,
    cpus: 16,
    siblings: false,
    membwAlone: 20,
    membwTogether: [19, 21],
    whole1: [30, 40, 35],
    split1: [28, 30, 29],
    whole8: [100, 110, 90],
    split8: [130, 120, 125],
    replicas8: [150, 140, 160],
    ceiling8: { wholeMsPerToken: 8, stageMsPerToken: [5, 6], ratio: 8 / 6 },
    placement: ['box-a', 'box-b']
  }
  const md = pipelineCoresMarkdown(r)
  assert.match(md, /\| whole, box-a \| 35\.0 \| 1 \| 100\.0 \| 1 \| \|/)
  // 29 ÷ 35 and 125 ÷ 100; the ceiling from the busier stage (6 ms)
  assert.match(md, /\| 2 stages, box-a → box-b \| 29\.0 \| \*\*0\.83\*\* \| 125\.0 \| \*\*1\.25\*\* \| 1\.33 \(8\.0 ÷ 6\.0 ms\) \|/)
  assert.match(md, /\| 2 replicas, one per box \(requests to box-a\) \| \| \| 150\.0 \| \*\*1\.50\*\* \| \|/)
  assert.match(md, /1\.00× alone, on average/)
  // replicas that did not land one per box are not measured: no row, and the rounds say so
  const without = pipelineCoresMarkdown({ ...r, replicas8: [] })
  assert.doesNotMatch(without, /\| 2 replicas/)
  assert.match(without, /2 replicas not measured/)
  assert.match(pipelineCoresMarkdown({ ...r, skipped: 'no taskset' }), /^Not measured on this machine: no taskset\.$/)
})
