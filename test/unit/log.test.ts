import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

test('a stalled stdout (a pipe nobody reads) never blocks the agent\'s logger', async () => {
  const child = spawn(process.execPath, [fileURLToPath(new URL('../fixtures/log-flood.ts', import.meta.url))], { stdio: ['ignore', 'pipe', 'pipe'] })
  child.stdout.pause() // never read: the pipe fills after 64 KiB
  let err = ''
  child.stderr.on('data', d => { err += String(d) })
  const code = await new Promise<number | null>((resolve, reject) => {
    const t = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`the flooding process hung (stderr: ${err})`)) }, 60_000)
    child.on('exit', c => { clearTimeout(t); resolve(c) })
  })
  assert.equal(code, 0)
  const report = JSON.parse(err.trim().split('\n').at(-1) ?? '{}')
  assert.equal(report.alive, true)
  assert.ok(report.dropped > 0, 'lines past the bound were dropped, not buffered without limit')
})
