/**
 * PeerMemory (agent/db/peer-memory.ts) over a real SQLite file: at start the peers heard from within a day go
 * back into the gossip table; a peer met for the first time is written at once; one that expired and comes
 * back is written again; stop writes every live peer a last time. The gossip here is a stand-in with the
 * three methods PeerMemory uses, so that the test makes peers live and expired at the moments it chooses
 * (the real CapacityGossip expires peers on its own clock, after missed heartbeats). PeerMemory with the real
 * CapacityGossip over real libp2p nodes is test/mesh.test.ts: a restarted agent finds the mesh from its
 * stored peers.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { openDatabase } from '../../agent/db/database.ts'
import { PeerStore } from '../../agent/db/peer-store.ts'
import { PeerMemory } from '../../agent/db/peer-memory.ts'
import type { GossipPeers } from '../../agent/db/peer-memory.ts'
import type { PeerView } from '../../mesh/capacity/gossip.ts'
import type { CapacityRecord } from '../../mesh/capacity/record.ts'
import { tempDir } from '../helpers/agents.ts'

const rec = (peerId: string, name: string): CapacityRecord => ({
  v: 1, peerId, name, cluster: 'c', vendor: '', addrs: [], epoch: 1, seq: 1, ts: 1, heartbeatMs: 1000,
  instances: [], vdags: [], links: [], providers: [],
  readings: { cpu: { count: 1, model: 'm', load1: 0, load5: 0, load15: 0, utilisation: 0 }, memory: { totalBytes: 1, freeBytes: 1, availableBytes: 1 }, gpus: [] }
}) as CapacityRecord

class StandInGossip implements GossipPeers {
  table = new Map<string, PeerView>()
  remembered: string[] = []
  private readonly listeners = new Set<(peer: string, view: PeerView) => void>()
  peers (): PeerView[] { return [...this.table.values()] }
  onChange (fn: (peer: string, view: PeerView) => void): () => void { this.listeners.add(fn); return () => this.listeners.delete(fn) }
  remember (entries: Array<{ record: CapacityRecord, lastSeen: number }>): void { this.remembered.push(...entries.map(e => e.record.name)) }
  set (name: string, status: PeerView['status'], lastSeen: number): void {
    const view = { record: rec(name, name), lastSeen, expiresAt: lastSeen + 1000, status } as PeerView
    this.table.set(name, view)
    for (const l of this.listeners) l(name, view)
  }
}

test('the mesh is remembered across restarts: loaded at start, new peers written at once, all live peers at stop', () => {
  const db = openDatabase(join(tempDir(), 'agent.db'))
  const now = Date.now()
  const store = new PeerStore(db)
  store.saveAll([{ record: rec('old', 'old'), lastSeen: now - 2 * 24 * 3600_000 }, { record: rec('recent', 'recent'), lastSeen: now - 3600_000 }])
  const warnings: string[] = []
  const memory = new PeerMemory(db, { warn: (_o, msg) => { warnings.push(msg) } })
  const gossip = new StandInGossip()
  assert.equal(memory.start(gossip, now), 1)
  assert.deepEqual(gossip.remembered, ['recent'], 'only peers heard from within a day come back')

  gossip.set('fresh', 'live', now + 10)
  assert.equal(store.load().find(p => p.record.name === 'fresh')?.lastSeen, now + 10, 'a new peer is written at once')
  gossip.set('fresh', 'live', now + 20)
  assert.equal(store.load().find(p => p.record.name === 'fresh')?.lastSeen, now + 10, 'not again on every heartbeat (the timer does that)')
  gossip.set('fresh', 'expired', now + 30)
  gossip.set('fresh', 'live', now + 40)
  assert.equal(store.load().find(p => p.record.name === 'fresh')?.lastSeen, now + 40, 'back from expiry: written at once again')

  gossip.set('other', 'expired', now + 50)
  gossip.table.set('fresh', { ...gossip.table.get('fresh')!, lastSeen: now + 60 })
  memory.stop()
  const stored = new Map(store.load().map(p => [p.record.name, p.lastSeen]))
  assert.equal(stored.get('fresh'), now + 60, 'stop writes the live peers')
  assert.equal(stored.has('other'), false, 'an expired peer is not written')
  gossip.set('late', 'live', now + 70)
  assert.equal(store.load().some(p => p.record.name === 'late'), false, 'nothing is written after stop')
  assert.deepEqual(warnings, [])
  db.close()
})

test('a failed write is logged, never thrown', () => {
  const db = openDatabase(join(tempDir(), 'agent.db'))
  const warnings: string[] = []
  const memory = new PeerMemory(db, { warn: (_o, msg) => { warnings.push(msg) } })
  const gossip = new StandInGossip()
  memory.start(gossip)
  db.close() // every write now fails
  assert.doesNotThrow(() => { gossip.set('p', 'live', 1) })
  assert.doesNotThrow(() => { memory.stop() })
  assert.deepEqual(warnings, ['could not store peer', 'could not persist peers'])
})
