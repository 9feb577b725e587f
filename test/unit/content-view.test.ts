// The Models view's logic that does not need a browser: the transfers in progress across the mesh and the
// holders of a file, both read from the peers' capacity records (`content`), and how progress reads.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { fileLabel, heldHere, holdersOf, percentOf, percentText, removeBlocker, shortMd5, sizeOf, transfersOf } from '../../renderer/src/content-model.ts'
import type { HolderView, Peer } from '../../renderer/src/types.ts'

const M1 = 'a'.repeat(32)
const M2 = 'b'.repeat(32)
const M3 = 'c'.repeat(32)

function peer (id: string, name: string, over: Partial<Peer> = {}): Peer {
  return {
    peerId: id, name, cluster: 'x', vendor: '', addrs: [], epoch: 1, seq: 1, heartbeatMs: 1000,
    readings: { cpu: { count: 1, model: '', load1: 0, load5: 0, load15: 0, utilisation: 0 }, memory: { totalBytes: 1, freeBytes: 1, availableBytes: 1 }, gpus: [] },
    instances: [], vdags: [], links: [], self: false, status: 'live', connected: true, lastSeen: '', lastSeenAgoMs: 0, score: 0,
    ...over
  }
}

test('percentages: clamped, rounded down (never 100% before the last byte), a decimal under 10%, unknown as a dash', () => {
  assert.equal(percentOf(50, 200), 25)
  assert.equal(percentOf(300, 200), 100, 'clamped')
  assert.equal(percentOf(-5, 200), 0)
  assert.equal(percentOf(5, 0), null, 'a zero size is no percentage')
  assert.equal(percentOf(null, 100), null)
  assert.equal(percentOf(5, null), null)
  assert.equal(percentOf(Number.NaN, 100), null)
  assert.equal(percentText(99.97), '99%')
  assert.equal(percentText(100), '100%')
  assert.equal(percentText(0), '0%')
  assert.equal(percentText(3.456), '3.4%')
  assert.equal(percentText(42.9), '42%')
  assert.equal(percentText(null), '–')
  assert.equal(percentText(percentOf(1.5 * 2 ** 20, 128 * 2 ** 30)), '<0.1%', 'a little is not nothing')
  assert.equal(shortMd5(M1), 'aaaaaaaa')
  assert.equal(fileLabel(M1, 'tiny:1'), 'tiny:1')
  assert.equal(fileLabel(M1, null), 'aaaaaaaa')
  assert.equal(fileLabel(M1, ''), 'aaaaaaaa')
})

test('transfers across the mesh: every live peer\'s fetching list, this agent first, then by host and file; expired and older peers add nothing', () => {
  const peers = [
    peer('p-zed', 'zed', { content: { held: [], fetching: [{ md5: M2, name: 'tiny:1', receivedBytes: 512, totalBytes: 2048 }] } }),
    peer('p-amy', 'amy', { content: { held: [M1], fetching: [{ md5: M3, name: null, receivedBytes: 0, totalBytes: 0 }, { md5: M2, name: 'tiny:1', receivedBytes: 2047, totalBytes: 2048 }] } }),
    peer('p-me', 'me', { self: true, content: { held: [], fetching: [{ md5: M1, name: 'big:2', receivedBytes: 10, totalBytes: 1000 }] } }),
    peer('p-old', 'old'), // an agent older than the content store: no `content`
    peer('p-gone', 'gone', { status: 'expired', content: { held: [], fetching: [{ md5: M1, name: 'big:2', receivedBytes: 1, totalBytes: 1000 }] } })
  ]
  const t = transfersOf(peers)
  assert.deepEqual(t.map(x => [x.host, x.md5, x.percent]), [
    ['me', M1, 1],
    ['amy', M3, null],
    ['amy', M2, 100 * 2047 / 2048],
    ['zed', M2, 25]
  ])
  assert.equal(t[0].self, true)
  assert.equal(t[0].peerId, 'p-me')
  assert.equal(percentText(t[2].percent), '99%')
  assert.deepEqual(transfersOf([]), [])
  assert.deepEqual(transfersOf([peer('p', 'p', { content: { held: [M1], fetching: [] } })]), [], 'holding is not transferring')
})

test('holders of a file come from the live records (complete when held, partial with progress when fetching), this agent first; the API\'s list until peers arrive', () => {
  const peers = [
    peer('p-b', 'bob', { content: { held: [M1], fetching: [] } }),
    peer('p-a', 'ann', { content: { held: [], fetching: [{ md5: M1, name: null, receivedBytes: 300, totalBytes: 1200 }] } }),
    peer('p-me', 'me', { self: true, content: { held: [M2, M1], fetching: [] } }),
    peer('p-c', 'cat', { content: { held: [M2], fetching: [] } }),
    peer('p-x', 'exp', { status: 'expired', content: { held: [M1], fetching: [] } })
  ]
  const h = holdersOf(M1, peers)
  assert.deepEqual(h, [
    { peerId: 'p-me', name: 'me', state: 'complete', receivedBytes: null, totalBytes: null },
    { peerId: 'p-a', name: 'ann', state: 'partial', receivedBytes: 300, totalBytes: 1200 },
    { peerId: 'p-b', name: 'bob', state: 'complete', receivedBytes: null, totalBytes: null }
  ])
  assert.deepEqual(holdersOf(M3, peers), [], 'nobody holds it')
  const fromApi: HolderView[] = [{ peerId: 'p-b', name: 'bob', state: 'complete', receivedBytes: null, totalBytes: null }]
  assert.deepEqual(holdersOf(M1, [], fromApi), fromApi, 'no peers yet: the API\'s holders')
  assert.equal(heldHere([{ holders: h }], 'p-me'), true)
  assert.equal(heldHere([{ holders: h }, { holders: holdersOf(M3, peers) }], 'p-me'), false, 'one file not here')
  assert.equal(heldHere([{ holders: h }], 'p-a'), false, 'partial is not held')
  assert.equal(heldHere([], 'p-me'), false, 'no files: nothing to say it is held')
  assert.equal(heldHere([{ holders: h }], null), false)
})

test('a file\'s size: the API\'s, else what a peer fetching it reports', () => {
  const partial: HolderView = { peerId: 'p', name: 'p', state: 'partial', receivedBytes: 10, totalBytes: 4096 }
  const complete: HolderView = { peerId: 'q', name: 'q', state: 'complete', receivedBytes: null, totalBytes: null }
  assert.equal(sizeOf({ sizeBytes: 100 }, [partial]), 100)
  assert.equal(sizeOf({ sizeBytes: null }, [complete, partial]), 4096)
  assert.equal(sizeOf({ sizeBytes: null }, [complete]), null)
})

test('a file in use cannot be removed; one unused can', () => {
  assert.equal(removeBlocker({ inUse: 0 }), null)
  assert.equal(removeBlocker({ inUse: 1 }), 'in use by 1 block')
  assert.equal(removeBlocker({ inUse: 3 }), 'in use by 3 blocks')
})
