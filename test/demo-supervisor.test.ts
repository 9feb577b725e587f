import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { CliProcess, alive } from './helpers/cli.ts'
import { tempDir, until } from './helpers/agents.ts'
import { Demo, RESTART_POLICY, restartDelay } from '../agent/demo.ts'
import type { ReadyInfo } from '../agent/config.ts'

function ready (dir: string, name: string): ReadyInfo {
  return JSON.parse(readFileSync(join(dir, name, 'agent.json'), 'utf8')) as ReadyInfo
}

async function getJson (url: string): Promise<any> {
  const res = await fetch(url)
  assert.equal(res.status, 200, url)
  return await res.json()
}

/** Whether the agent at `api` sees `peerId` live and connected, from an epoch above `afterEpoch`. */
async function sees (api: string, peerId: string, afterEpoch = -1): Promise<boolean> {
  const { peers } = await getJson(`${api}/api/peers`) as { peers: Array<{ peerId: string, status: string, connected: boolean, epoch: number }> }
  return peers.some(p => p.peerId === peerId && p.status === 'live' && p.connected && p.epoch > afterEpoch)
}

test('restart back-off: 1 s doubling, capped at 30 s', () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 50].map(a => restartDelay(a)), [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000])
  assert.deepEqual(RESTART_POLICY, { baseMs: 1000, maxMs: 30_000, stableMs: 60_000, maxQuickCrashes: 8 })
  assert.equal(restartDelay(3, { baseMs: 100, maxMs: 250 }), 250)
})

describe('blockmesh demo supervisor', () => {
  test('an agent killed with SIGKILL is restarted on its data dir (same peer ID) and rejoins, the bootstrap agent too; a clean exit is not restarted; SIGTERM stops all without restarts', async () => {
    const dir = tempDir('bm-demo-sup-')
    const demo = new CliProcess(['demo', '--agents', '2', '--base-port', '0', '--data-dir', dir, '--heartbeat-ms', '1000', '--no-model'])
    try {
      await demo.line(/Ctrl-C stops every agent/)
      assert.ok(demo.lines.some(l => /^an agent that crashes is restarted .*back-off 1 s doubling to 30 s/.test(l)), demo.lines.join('\n'))
      const before = [ready(dir, 'agent-0'), ready(dir, 'agent-1')]
      await until(async () => await sees(before[0].apiUrl, before[1].peerId), 'agent-0 to see agent-1')
      const epoch1 = ((await getJson(`${before[1].apiUrl}/api/node`)) as { epoch: number }).epoch

      // agent-1 crashes: restarted after 1 s, same identity, back in the mesh
      process.kill(before[1].pid, 'SIGKILL')
      const crash = await demo.line(/^! agent-1 .*crashed/)
      assert.match(crash, new RegExp(`^! agent-1 \\(pid ${before[1].pid}\\) crashed \\(signal SIGKILL\\) after [\\d.]+ m?s; restarting it in 1 s \\(attempt 1 of 7\\); its log: .*agent-1/agent\\.log$`))
      const back = await demo.line(/^agent-1 restarted/, 60_000)
      const m = /^agent-1 restarted \(restart 1\): api (\S+) {2}peer (\S+) {2}pid (\d+)$/.exec(back)
      assert.ok(m != null, back)
      assert.equal(m[2], before[1].peerId, 'same identity')
      assert.notEqual(Number(m[3]), before[1].pid)
      const after1 = ready(dir, 'agent-1')
      assert.equal(after1.pid, Number(m[3]))
      const node = await getJson(`${m[1]}/api/node`) as { peerId: string, epoch: number }
      assert.equal(node.peerId, before[1].peerId, 'its API answers with the same peer ID')
      assert.ok(node.epoch > epoch1, 'same SQLite: the start counter went on')
      await until(async () => await sees(m[1], before[0].peerId), 'the restarted agent-1 to see agent-0')
      await until(async () => await sees(before[0].apiUrl, before[1].peerId, epoch1), 'agent-0 to see the new agent-1')

      // agent-0, the others' bootstrap peer, crashes: it comes back by dialling agent-1
      process.kill(before[0].pid, 'SIGKILL')
      const back0 = await demo.line(/^agent-0 restarted/, 60_000)
      assert.ok(demo.lines.some(l => l.startsWith(`! agent-0 (pid ${before[0].pid}) crashed (signal SIGKILL)`)), demo.lines.join('\n'))
      const api0 = (/api (\S+)/.exec(back0) as RegExpMatchArray)[1]
      assert.equal((/peer (\S+)/.exec(back0) as RegExpMatchArray)[1], before[0].peerId)
      await until(async () => await sees(api0, before[1].peerId), 'the restarted agent-0 to see agent-1')

      // a clean exit (SIGTERM to the agent alone) is not a crash
      const pid1 = ready(dir, 'agent-1').pid
      process.kill(pid1, 'SIGTERM')
      await demo.line(/^! agent-1 stopped \(exit code 0\); not restarting it/)

      const pid0 = ready(dir, 'agent-0').pid
      const lines = demo.lines.length
      demo.child.kill('SIGTERM')
      assert.equal(await demo.exit(), 0)
      await until(() => !alive(pid0) && !alive(pid1), 'every agent process to exit')
      assert.deepEqual(demo.lines.slice(lines).filter(l => /crashed|restart/.test(l)), [], 'no restart during a requested stop')
    } finally {
      if (demo.child.exitCode == null && demo.child.signalCode == null) demo.child.kill('SIGKILL')
    }
  })

  test('gives up after maxQuickCrashes quick crashes in a row, and says so', async () => {
    const dir = tempDir('bm-demo-sup-')
    const lines: string[] = []
    const demo = new Demo({ agents: 1, basePort: 0, dataDir: dir, heartbeatMs: 1000, clusters: ['demo'], out: l => { lines.push(l) }, restart: { baseMs: 100, maxMs: 200, maxQuickCrashes: 2 } })
    const line = async (re: RegExp, timeoutMs = 60_000): Promise<string> => await until(() => lines.find(l => re.test(l)), `a line matching ${re} (got: ${lines.join(' | ')})`, timeoutMs)
    try {
      await demo.start()
      const first = demo.agents[0].info as ReadyInfo
      process.kill(first.pid, 'SIGKILL')
      assert.match(await line(/crashed/), /^! agent-0 \(pid \d+\) crashed \(signal SIGKILL\) after .*; restarting it in 100 ms \(attempt 1 of 1\)/)
      await line(/^agent-0 restarted \(restart 1\)/)
      const second = demo.agents[0].info as ReadyInfo
      assert.equal(second.peerId, first.peerId)
      process.kill(second.pid, 'SIGKILL')
      assert.match(await line(/giving up/), /^! agent-0 \(pid \d+\) crashed \(signal SIGKILL\) after .*: 2 crashes in a row, each within 60 s of its start; giving up on it \(see its log: .*agent\.log\)$/)
      await new Promise(resolve => setTimeout(resolve, 500))
      assert.equal(demo.agents[0].restarts, 1, 'no more restarts')
      assert.ok(demo.agents[0].gaveUp)
    } finally {
      await demo.stop()
    }
  })
})
