/**
 * The replicated desired state without the network: real SQLite files, real Ed25519 keys, real Automerge
 * changes, exchanged by hand between replicas the way gossip and anti-entropy carry them.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import * as A from '@automerge/automerge'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import fc from 'fast-check'
import { openDatabase } from '../../agent/db/database.ts'
import { DesiredState } from '../../agent/state/replica.ts'
import { StateFrameError, actorFor, openChange, sealChange } from '../../agent/state/frame.ts'
import { tempDir } from '../helpers/agents.ts'
import { TooLargeError } from '../../agent/errors.ts'

async function replica (dir = tempDir('bm-state-'), key?: Awaited<ReturnType<typeof generateKeyPair>>, epoch = 1): Promise<{ state: DesiredState, dir: string, key: Awaited<ReturnType<typeof generateKeyPair>> }> {
  const k = key ?? await generateKeyPair('Ed25519')
  const db = openDatabase(join(dir, 'agent.db'))
  return { state: new DesiredState({ db, peerId: peerIdFromPrivateKey(k).toString(), epoch, privateKey: k }), dir, key: k }
}

/** Everything `to` lacks from `from`, in order, as anti-entropy sends it. */
async function sync (from: DesiredState, to: DesiredState): Promise<number> {
  let applied = 0
  for (const f of from.missingFor(to.vector(), 1 << 30, 1 << 20).frames) if (await to.receive(f) === 'applied') applied++
  return applied
}

test('a write is stored before it is acknowledged and survives a restart of the replica', async () => {
  const r = await replica()
  await r.state.put('components', 'tiny:1', { name: 'tiny', version: '1' })
  await r.state.put('blocks', 'b1', { spec: { id: 'b1' } })
  assert.equal(await r.state.remove('blocks', 'b1'), true)
  assert.equal(await r.state.remove('blocks', 'b1'), false, 'a second delete finds nothing')
  const again = await replica(r.dir, r.key, 2)
  assert.deepEqual(again.state.get('components', 'tiny:1')?.value, { name: 'tiny', version: '1' })
  assert.equal(again.state.get('blocks', 'b1'), undefined)
  assert.equal(again.state.digest(), r.state.digest(), 'the same changes, the same state')
})

test('concurrent writes on two sides converge to the same state, whichever order the changes arrive in', async () => {
  const [x, y] = await Promise.all([replica(), replica()])
  await x.state.put('blocks', 'shared', { from: 'x' })
  await sync(x.state, y.state)
  // a partition: both sides write, including to the same key, and one deletes what the other updates
  await x.state.put('blocks', 'only-x', { n: 1 })
  await y.state.put('blocks', 'only-y', { n: 2 })
  await x.state.put('vdags', 'same-key', { from: 'x' })
  await y.state.put('vdags', 'same-key', { from: 'y' })
  await x.state.remove('blocks', 'shared')
  await y.state.put('blocks', 'shared', { from: 'y, updated' })
  // heal
  await sync(x.state, y.state)
  await sync(y.state, x.state)
  assert.equal(x.state.digest(), y.state.digest())
  for (const s of [x.state, y.state]) {
    assert.deepEqual(s.get('blocks', 'only-x')?.value, { n: 1 }, 'no acknowledged create is lost')
    assert.deepEqual(s.get('blocks', 'only-y')?.value, { n: 2 })
    assert.deepEqual(s.get('blocks', 'shared')?.value, { from: 'y, updated' }, 'an update concurrent with a delete survives it')
  }
  assert.deepEqual(x.state.get('vdags', 'same-key')?.value, y.state.get('vdags', 'same-key')?.value, 'one deterministic winner for the same key')
})

test('property: any interleaving of writes on three replicas converges after anti-entropy', async () => {
  const rs = await Promise.all([replica(), replica(), replica()])
  await fc.assert(fc.asyncProperty(
    fc.array(fc.record({ who: fc.integer({ min: 0, max: 2 }), key: fc.constantFrom('a', 'b', 'c', 'd'), del: fc.boolean(), n: fc.integer() }), { minLength: 1, maxLength: 12 }),
    fc.array(fc.tuple(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 2 })), { maxLength: 6 }),
    async (writes, partialSyncs) => {
      for (const [i, w] of writes.entries()) {
        const s = rs[w.who].state
        if (w.del) await s.remove('blocks', w.key)
        else await s.put('blocks', w.key, { n: w.n })
        const p = partialSyncs[i]
        if (p != null && p[0] !== p[1]) await sync(rs[p[0]].state, rs[p[1]].state)
      }
      for (let round = 0; round < 2; round++) for (const a of rs) for (const b of rs) if (a !== b) await sync(a.state, b.state)
      const digests = new Set(rs.map(r => r.state.digest()))
      const views = new Set(rs.map(r => JSON.stringify(r.state.list('blocks').map(e => [e.id, e.value]))))
      return digests.size === 1 && views.size === 1
    }), { numRuns: 40, seed: 13 })
})

test('frames are checked: forged writer, foreign operations, tampering, missing dependencies', async () => {
  const x = await replica()
  const y = await replica()
  await x.state.put('blocks', 'first', { n: 1 })
  await x.state.put('blocks', 'second', { n: 2 })
  const frames = x.state.missingFor(new Map(), 1 << 30, 100).frames
  assert.equal(frames.length, 2)
  // the second change depends on the first: not applied, nothing kept
  assert.equal(await y.state.receive(frames[1]), 'missing-deps')
  assert.equal(y.state.changes(), 0)
  assert.equal(await y.state.receive(frames[0]), 'applied')
  assert.equal(await y.state.receive(frames[0]), 'known')
  assert.equal(await y.state.receive(frames[1]), 'applied')

  const reason = async (frame: Uint8Array): Promise<string> => {
    try { await openChange(frame); return 'accepted' } catch (err) { assert.ok(err instanceof StateFrameError); return err.reason }
  }
  // a change whose actor claims x's identity, signed by another key
  const mallory = await generateKeyPair('Ed25519')
  const forged = A.getLastLocalChange(A.change(A.init<any>({ actor: actorFor(peerIdFromPrivateKey(x.key).toString(), 9) }), d => { d['blocks/evil'] = new A.ImmutableString('{}') })) as Uint8Array
  assert.equal(await reason(await sealChange(forged, mallory)), 'actor-mismatch')
  // the right actor, but an operation outside the allowed shape (a nested map, a text object, a foreign key)
  const mActor = actorFor(peerIdFromPrivateKey(mallory).toString(), 1)
  for (const write of [(d: any) => { d.blocks = { x: 1 } }, (d: any) => { d['blocks/t'] = 'a text CRDT' }, (d: any) => { d['secrets/x'] = new A.ImmutableString('1') }]) {
    const c = A.getLastLocalChange(A.change(A.init<any>({ actor: mActor }), write)) as Uint8Array
    assert.equal(await reason(await sealChange(c, mallory)), 'bad-op')
  }
  // a flipped byte in a sealed frame, a truncated one, an oversized one
  const tampered = new Uint8Array(frames[0]); tampered[tampered.length - 3] ^= 0x40
  assert.notEqual(await reason(tampered), 'accepted')
  assert.notEqual(await reason(frames[0].subarray(0, 20)), 'accepted')
  assert.equal(await reason(new Uint8Array(600 * 1024)), 'oversized')
  assert.equal(y.state.get('blocks', 'evil'), undefined)
})

test('a value naming another agent as its writer is not seen; the signer\'s own values are, and a later honest write shows again', async () => {
  const x = await replica()
  const y = await replica()
  const xId = peerIdFromPrivateKey(x.key).toString()
  const yId = peerIdFromPrivateKey(y.key).toString()
  // mallory (y's key, y's actor: the frame itself is valid) writes a component that claims x wrote it
  await y.state.put('components', 'honest:1', { name: 'honest' })
  const forgedDoc = A.change(A.init<any>({ actor: actorFor(yId, 7) }), d => {
    d['components/evil:1'] = new A.ImmutableString(JSON.stringify({ value: { name: 'evil', init: { command: 'sh' } }, writer: xId, created: 1, at: 1 }))
  })
  const forged = await sealChange(A.getLastLocalChange(forgedDoc) as Uint8Array, y.key)
  assert.equal(await x.state.receive(forged), 'applied', 'the frame is well formed and signed by its actor')
  assert.equal(x.state.get('components', 'evil:1'), undefined, 'but its value lies about its writer')
  await sync(y.state, x.state)
  assert.equal(x.state.get('components', 'honest:1')?.writer, yId, 'a value naming its signer is seen, with the signer as writer')
  // x overwrites the key itself: its own write is seen, writer x
  await x.state.put('components', 'evil:1', { name: 'fixed' })
  assert.deepEqual(x.state.get('components', 'evil:1')?.value, { name: 'fixed' })
  assert.equal(x.state.get('components', 'evil:1')?.writer, xId)
})

test('an object past what peers accept is refused at the write (413), nothing is kept, and the replica goes on writing', async () => {
  const x = await replica()
  const y = await replica()
  const before = x.state.changes()
  await assert.rejects(x.state.put('templates', 'huge', { notes: 'é'.repeat(140 * 1024) }), (err: any) => err instanceof TooLargeError && err.status === 413)
  assert.equal(x.state.changes(), before)
  assert.equal(x.state.get('templates', 'huge'), undefined)
  await x.state.put('templates', 'small', { notes: 'é'.repeat(1000) })
  assert.equal(await sync(x.state, y.state), 1, 'what was kept reaches a peer, which accepts it')
  assert.deepEqual(y.state.get('templates', 'small')?.value, { notes: 'é'.repeat(1000) })
})
