import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { readFileSync, writeFileSync } from 'node:fs'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { PeerGate } from '../../mesh/gater.ts'
import { parseSwarmKey, readSwarmKeyFile, writeNewSwarmKey } from '../../mesh/swarm-key.ts'
import { InvalidSwarmKeyError } from '../../mesh/errors.ts'
import { checkBearer, hostAllowed, isStateChanging } from '../../agent/api/auth.ts'
import { UnauthorizedError } from '../../agent/errors.ts'
import { checkNode } from '../../agent/cli/require-node.mjs'
import { tempDir } from '../helpers/agents.ts'

test('the gate admits only listed peers, and bans expire', async () => {
  let now = 1000
  const friend = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
  const stranger = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
  const gate = new PeerGate({ allow: [friend.toString()], now: () => now })
  const g = gate.connectionGater()
  assert.equal(await g.denyInboundEncryptedConnection?.(friend, {} as never), false)
  assert.equal(await g.denyInboundEncryptedConnection?.(stranger, {} as never), true)
  assert.equal(await g.denyDialPeer?.(stranger), true)
  gate.ban(friend.toString(), 500)
  assert.equal(gate.permits(friend.toString()), false)
  now += 501
  assert.equal(gate.permits(friend.toString()), true)
  const open = new PeerGate({ allow: [] })
  assert.equal(open.permits(stranger.toString()), true, 'an empty allow-list admits everyone')
  assert.equal(open.allowList, null)
})

test('swarm keys: generated files parse; bad ones are refused with a reason', () => {
  const dir = tempDir()
  const path = join(dir, 'swarm.key')
  writeNewSwarmKey(path)
  const bytes = readSwarmKeyFile(path)
  assert.equal(bytes.length, 95)
  assert.deepEqual(parseSwarmKey(readFileSync(path, 'utf8')), bytes)
  assert.throws(() => writeNewSwarmKey(path), /EEXIST/, 'never overwrites a key')
  writeFileSync(join(dir, 'bad'), '/key/swarm/psk/1.0.0/\n/base16/\nnothex')
  assert.throws(() => readSwarmKeyFile(join(dir, 'bad')), InvalidSwarmKeyError)
  assert.throws(() => readSwarmKeyFile(join(dir, 'missing')), /cannot read/)
})

test('bearer tokens are checked; only GET/HEAD/OPTIONS are read-only', () => {
  assert.doesNotThrow(() => { checkBearer('Bearer secret-token', 'secret-token') })
  assert.throws(() => { checkBearer(undefined, 'secret-token') }, UnauthorizedError)
  assert.throws(() => { checkBearer('Bearer wrong', 'secret-token') }, /wrong bearer token/)
  assert.throws(() => { checkBearer('Basic c2VjcmV0', 'secret-token') }, UnauthorizedError)
  assert.deepEqual(['GET', 'HEAD', 'OPTIONS', 'POST', 'PUT', 'DELETE', 'PATCH'].map(isStateChanging), [false, false, false, true, true, true, true])
})

test('a loopback-bound API accepts only loopback Host names', () => {
  for (const h of ['127.0.0.1:7700', 'localhost:7700', '[::1]:7700', 'localhost']) assert.equal(hostAllowed(h, true), true, h)
  for (const h of ['evil.example', 'evil.example:7700', '10.0.0.2:7700', undefined]) assert.equal(hostAllowed(h, true), false, String(h))
  assert.equal(hostAllowed('node7.lab:7700', false), true)
})

test('the Node version guard refuses Node < 22.18 and explains how to run', () => {
  assert.match(checkNode({ node: '20.20.2' }) ?? '', /needs Node >= 22\.18.*npm start/s)
  assert.notEqual(checkNode({ node: '22.17.0' }), null)
  assert.equal(checkNode({ node: '22.18.0' }), null)
  assert.equal(checkNode({ node: '24.1.0' }), null)
})
