import { test } from 'node:test'
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import {
  decodeCapacityRecord, encodeCapacityRecord, sealCapacityPayload, compareRecords, MAX_CAPACITY_FRAME_BYTES
} from '../../mesh/capacity/record.ts'
import type { CapacityRecord } from '../../mesh/capacity/record.ts'
import { CapacityFrameError } from '../../mesh/errors.ts'

const key = await generateKeyPair('Ed25519')
const me = peerIdFromPrivateKey(key).toString()

function record (over: Partial<CapacityRecord> = {}): CapacityRecord {
  return {
    v: 1, peerId: me, name: 'n', cluster: 'c', vendor: 'v', addrs: ['/ip4/127.0.0.1/tcp/1'], epoch: 3, seq: 7, ts: 1, heartbeatMs: 2000,
    instances: [],
    vdags: [],
    links: [],
    providers: [{ name: 'cpu', available: true }, { name: 'cuda', available: false, reason: 'libonnxruntime_providers_cuda.so not installed: run npx blockmesh gpu setup' }],
    readings: {
      cpu: { count: 8, model: 'cpu', load1: 1, load5: 2, load15: 3, utilisation: 50 },
      memory: { totalBytes: 100, freeBytes: 50, availableBytes: 60 },
      gpus: [{ index: 0, vendor: 'NVIDIA', model: 'H100', memoryTotalBytes: 80, memoryFreeBytes: null, utilisation: null, simulated: false }]
    },
    ...over
  }
}

async function reason (frame: Uint8Array): Promise<string> {
  try {
    await decodeCapacityRecord(frame)
    return 'accepted'
  } catch (err) {
    assert.ok(err instanceof CapacityFrameError)
    return err.reason
  }
}

test('a sealed record opens to the same record', async () => {
  const r = record()
  assert.deepEqual(await decodeCapacityRecord(await encodeCapacityRecord(r, key)), r)
})

test('every kind of bad frame is refused with its own reason', async () => {
  const enc = new TextEncoder()
  const other = await generateKeyPair('Ed25519')
  const tampered = await encodeCapacityRecord(record(), key)
  tampered[tampered.length - 1] ^= 1
  assert.equal(await reason(new Uint8Array(MAX_CAPACITY_FRAME_BYTES + 1)), 'oversized')
  assert.equal(await reason(crypto.getRandomValues(new Uint8Array(64))), 'bad-envelope')
  assert.equal(await reason(tampered), 'bad-signature')
  assert.equal(await reason(await sealCapacityPayload(enc.encode('{nope'), key)), 'bad-json')
  assert.equal(await reason(await sealCapacityPayload(enc.encode(JSON.stringify({ ...record(), heartbeatMs: 5 })), key)), 'bad-schema')
  assert.equal(await reason(await sealCapacityPayload(enc.encode(JSON.stringify(record({ name: '' }))), key)), 'bad-schema')
  // signed by another key than the peer it names
  assert.equal(await reason(await sealCapacityPayload(enc.encode(JSON.stringify(record())), other)), 'peer-mismatch')
})

test('a record too large to send is refused at the sender too', async () => {
  const big = record({ addrs: Array.from({ length: 16 }, () => 'x'.repeat(256)) })
  big.readings.gpus = Array.from({ length: 64 }, (_, i) => ({ ...big.readings.gpus[0], index: i, model: 'm'.repeat(128) }))
  big.providers = Array.from({ length: 8 }, (_, i) => ({ name: `p${i}`.padEnd(32, 'x'), available: false, reason: 'r'.repeat(200) }))
  const bytes = await encodeCapacityRecord(big, key) // still under the bound: the schema caps every list and string
  assert.ok(bytes.length <= MAX_CAPACITY_FRAME_BYTES)
  await assert.rejects(encodeCapacityRecord(record({ addrs: Array.from({ length: 17 }, () => 'a') }), key))
})

test('execution providers: bounded (8 entries, names 32, reasons 200 chars) and absent from older records', async () => {
  const enc = new TextEncoder()
  const { providers: _, ...older } = record()
  const opened = await decodeCapacityRecord(await sealCapacityPayload(enc.encode(JSON.stringify(older)), key))
  assert.deepEqual(opened.providers, [], 'an older agent\'s record parses, with no providers')
  const cpu = { name: 'cpu', available: true }
  assert.equal(await reason(await sealCapacityPayload(enc.encode(JSON.stringify(record({ providers: Array.from({ length: 9 }, () => cpu) }))), key)), 'bad-schema')
  assert.equal(await reason(await sealCapacityPayload(enc.encode(JSON.stringify(record({ providers: [{ name: 'cuda', available: false, reason: 'x'.repeat(201) }] }))), key)), 'bad-schema')
  assert.equal(await reason(await sealCapacityPayload(enc.encode(JSON.stringify(record({ providers: [{ name: 'cuda', available: 'no' as unknown as boolean }] }))), key)), 'bad-schema')
  await assert.rejects(encodeCapacityRecord(record({ providers: [{ name: 'c'.repeat(33), available: true }] }), key))
})

test('records order by epoch, then sequence number', () => {
  assert.ok(compareRecords({ epoch: 2, seq: 0 }, { epoch: 1, seq: 99 }) > 0)
  assert.ok(compareRecords({ epoch: 1, seq: 3 }, { epoch: 1, seq: 4 }) < 0)
  assert.equal(compareRecords({ epoch: 1, seq: 3 }, { epoch: 1, seq: 3 }), 0)
})
