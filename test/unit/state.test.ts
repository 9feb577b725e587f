import { test } from 'node:test'
import assert from 'node:assert/strict'
import { statSync, writeFileSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { openDatabase, migrate, schemaVersion, MetaStore } from '../../agent/db/database.ts'
import { MIGRATIONS } from '../../agent/db/migrations.ts'
import { PeerStore } from '../../agent/db/peer-store.ts'
import { loadOrCreateIdentity, loadOrCreateToken } from '../../agent/identity.ts'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { tempDir } from '../helpers/agents.ts'
import { ConfigError } from '../../agent/errors.ts'

test('the SQLite file is created in WAL mode with every migration applied once', () => {
  const path = join(tempDir(), 'agent.db')
  const db = openDatabase(path)
  assert.equal(db.pragma('journal_mode', { simple: true }), 'wal')
  assert.equal(schemaVersion(db), MIGRATIONS.at(-1)?.version)
  assert.deepEqual(migrate(db, MIGRATIONS), [], 'nothing re-applied')
  const next = migrate(db, [...MIGRATIONS, { version: 99, name: 'later', sql: 'CREATE TABLE later (x INTEGER) STRICT' }])
  assert.deepEqual(next, [99])
  db.close()
  const again = openDatabase(path, [...MIGRATIONS, { version: 99, name: 'later', sql: 'CREATE TABLE later (x INTEGER) STRICT' }])
  assert.equal(schemaVersion(again), 99)
  again.close()
})

test('a failing migration is rolled back whole', () => {
  const db = openDatabase(join(tempDir(), 'agent.db'))
  assert.throws(() => migrate(db, [{ version: 50, name: 'broken', sql: 'CREATE TABLE half (x INTEGER); THIS IS NOT SQL' }]))
  assert.equal(db.prepare("SELECT COUNT(*) FROM sqlite_master WHERE name = 'half'").pluck().get(), 0)
  assert.equal(schemaVersion(db), MIGRATIONS.at(-1)?.version)
  db.close()
})

test('the boot epoch counter persists across opens', () => {
  const path = join(tempDir(), 'agent.db')
  let db = openDatabase(path)
  assert.equal(new MetaStore(db).increment('boot_epoch'), 1)
  db.close()
  db = openDatabase(path)
  assert.equal(new MetaStore(db).increment('boot_epoch'), 2)
  db.close()
})

test('stored peers come back newest first; damaged rows are skipped, never fatal', () => {
  const db = openDatabase(join(tempDir(), 'agent.db'))
  const store = new PeerStore(db)
  const rec = (peerId: string, name: string) => ({
    v: 1 as const, peerId, name, cluster: 'c', vendor: '', addrs: [], epoch: 1, seq: 1, ts: 1, heartbeatMs: 1000,
    instances: [],
    vdags: [],
    links: [],
    providers: [],
    readings: { cpu: { count: 1, model: 'm', load1: 0, load5: 0, load15: 0, utilisation: 0 }, memory: { totalBytes: 1, freeBytes: 1, availableBytes: 1 }, gpus: [] }
  })
  store.saveAll([{ record: rec('p1', 'one'), lastSeen: 100 }, { record: rec('p2', 'two'), lastSeen: 200 }])
  store.saveAll([{ record: rec('p1', 'stale'), lastSeen: 50 }]) // older news does not overwrite newer
  db.prepare("INSERT INTO peers VALUES ('p3', 'x', 'c', '{broken', 300)").run()
  assert.deepEqual(store.load().map(p => p.record.name), ['two', 'one'])
  assert.deepEqual(store.load(150).map(p => p.record.name), ['two'])
  // many identities: only the most recently seen maxRows are kept
  const small = new PeerStore(db, 3)
  small.saveAll(Array.from({ length: 10 }, (_, i) => ({ record: rec(`q${i}`, `q${i}`), lastSeen: 1000 + i })))
  assert.deepEqual(small.load(0, 100).map(p => p.record.name), ['q9', 'q8', 'q7'])
  assert.equal(db.prepare('SELECT COUNT(*) FROM peers').pluck().get(), 3)
  db.close()
})

test('the identity key and API token are created once, 0600, and reused', async () => {
  const dir = tempDir()
  const k1 = await loadOrCreateIdentity(dir)
  const k2 = await loadOrCreateIdentity(dir)
  assert.equal(peerIdFromPrivateKey(k1).toString(), peerIdFromPrivateKey(k2).toString())
  assert.equal(statSync(join(dir, 'identity.key')).mode & 0o777, 0o600)
  const t1 = loadOrCreateToken(dir)
  assert.equal(loadOrCreateToken(dir), t1)
  assert.equal(statSync(join(dir, 'api-token')).mode & 0o777, 0o600)
  assert.ok(t1.length >= 32)
  writeFileSync(join(dir, 'api-token'), 'short\n')
  assert.throws(() => loadOrCreateToken(dir), ConfigError)
  writeFileSync(join(dir, 'identity.key'), 'garbage')
  await assert.rejects(loadOrCreateIdentity(dir), /unreadable/)
  assert.ok(readFileSync(join(dir, 'identity.key')).length > 0)
})
