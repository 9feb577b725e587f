/**
 * The blocks room of the replicated desired state (agent/blocks/store.ts) on a real SQLite-backed
 * replica: what peers write there is only seen when it is a whole, valid block, since the reconciler
 * publishes a block's target in its signed capacity record and places instances from its spec.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { openDatabase } from '../../agent/db/database.ts'
import { DesiredState } from '../../agent/state/replica.ts'
import { BlockStore, targetOf } from '../../agent/blocks/store.ts'
import { BlockSpecSchema } from '../../agent/registry/blocks.ts'
import { tempDir } from '../helpers/agents.ts'

test('a stored block with a target that is not a whole count, or without its creator, is not seen; valid ones are', async () => {
  const key = await generateKeyPair('Ed25519')
  const self = peerIdFromPrivateKey(key).toString()
  const state = new DesiredState({ db: openDatabase(join(tempDir('bm-blocks-'), 'agent.db')), peerId: self, epoch: 1, privateKey: key })
  const blocks = new BlockStore(state)
  const spec = (id: string): unknown => BlockSpecSchema.parse({ id, component: 'tiny:1', maxInstances: 3 })
  await blocks.add(spec('fine') as any, self)
  await state.put('blocks', 'scaled', { spec: spec('scaled'), target: 2, createdBy: self })
  // as a peer (or a newer, or a corrupt agent) might write them
  await state.put('blocks', 'nan', { spec: spec('nan'), target: 'x', createdBy: self })
  await state.put('blocks', 'half', { spec: spec('half'), target: 1.5, createdBy: self })
  await state.put('blocks', 'huge', { spec: spec('huge'), target: 2 ** 40, createdBy: self })
  await state.put('blocks', 'orphan', { spec: spec('orphan'), target: null })
  await state.put('blocks', 'bad-spec', { spec: { id: 'bad-spec' }, target: null, createdBy: self })
  assert.deepEqual(blocks.entries().map(e => e.id).sort(), ['fine', 'scaled'])
  for (const id of ['nan', 'half', 'huge', 'orphan', 'bad-spec']) assert.equal(blocks.entry(id), undefined, id)
  assert.equal(targetOf(blocks.entry('scaled')!.value), 2)
  assert.equal(targetOf(blocks.entry('fine')!.value), 1, 'minInstances before any target')
})
