/**
 * The one peer score (mesh/peer-score.ts, issue 14): offences on every protocol add up to one ban, weighted
 * (forged > malformed > oversized) and decaying; a ban goes through the gate, which disconnects the peer.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { z } from 'zod'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import type { Message } from '@libp2p/gossipsub'
import { lpStream } from '@libp2p/utils'
import { PeerGate } from '../../mesh/gater.ts'
import { BAN_THRESHOLD, OFFENCE_WEIGHTS, PeerScore } from '../../mesh/peer-score.ts'
import type { Offence } from '../../mesh/peer-score.ts'
import { Penalties } from '../../mesh/penalties.ts'
import { MeshNode } from '../../mesh/node.ts'
import { CapacityGossip } from '../../mesh/capacity/gossip.ts'
import { CAPACITY_TOPIC, encodeCapacityRecord } from '../../mesh/capacity/record.ts'
import { jsonRpcService } from '../../mesh/rpc.ts'

const MIN = 60_000
const OFFENCES: Offence[] = ['oversized', 'malformed', 'forged']

/** A score over a gate, both on one fake clock; `hungUp` lists the peers the gate disconnected. */
function scored (init: ConstructorParameters<typeof PeerScore>[1] = {}): { score: PeerScore, gate: PeerGate, hungUp: string[], clock: { now: number } } {
  const clock = { now: 1_000_000 }
  const hungUp: string[] = []
  const gate = new PeerGate({ now: () => clock.now, disconnect: (peer) => { hungUp.push(peer) } })
  const score = new PeerScore({ gate }, { now: () => clock.now, ...init })
  return { score, gate, hungUp, clock }
}

describe('peer score: weights, decay, ban', () => {
  test('two offences of any kinds never ban; a burst of three always does', () => {
    for (const a of OFFENCES) {
      for (const b of OFFENCES) {
        for (const c of OFFENCES) {
          const { score, gate, hungUp } = scored()
          assert.equal(score.strike('p', 'one', a), false)
          assert.equal(score.strike('p', 'two', b), false, `${a} + ${b} stays under the threshold`)
          assert.equal(gate.isBanned('p'), false)
          assert.equal(score.strike('p', 'three', c), true, `${a} + ${b} + ${c} bans`)
          assert.equal(gate.isBanned('p'), true)
          assert.deepEqual(hungUp, ['p'], 'the ban disconnected the peer through the gate')
          assert.equal(score.score('p'), 0, 'the score starts again after a ban')
        }
      }
    }
  })

  test('a forgery weighs most, an oversized frame least; scores decay with a 10-minute half-life', () => {
    assert.ok(OFFENCE_WEIGHTS.forged > OFFENCE_WEIGHTS.malformed && OFFENCE_WEIGHTS.malformed > OFFENCE_WEIGHTS.oversized)
    const { score, clock } = scored()
    score.strike('p', 'x', 'malformed')
    assert.equal(score.score('p'), OFFENCE_WEIGHTS.malformed)
    clock.now += 10 * MIN
    assert.ok(Math.abs(score.score('p') - OFFENCE_WEIGHTS.malformed / 2) < 1e-9, 'halved after one half-life')
    clock.now += 60 * MIN
    assert.ok(score.score('p') < 0.2, 'almost forgotten after an hour')
  })

  test('spread over 5 minutes, three forged frames ban and three oversized ones do not', () => {
    const spread = (offence: Offence): boolean => {
      const { score, gate, clock } = scored()
      for (let i = 0; i < 3; i++) {
        score.strike('p', offence, offence)
        clock.now += 2.5 * MIN
      }
      return gate.isBanned('p')
    }
    assert.equal(spread('forged'), true)
    assert.equal(spread('malformed'), true)
    assert.equal(spread('oversized'), false)
  })

  test('two old offences and a new one: no ban once the old ones decayed', () => {
    const { score, gate, clock } = scored()
    score.strike('p', 'a', 'malformed')
    score.strike('p', 'b', 'malformed')
    clock.now += 30 * MIN
    assert.equal(score.strike('p', 'c', 'malformed'), false)
    assert.equal(gate.isBanned('p'), false)
    assert.ok(score.score('p') < BAN_THRESHOLD)
  })

  test('the ban ends after banMs; listeners hear every offence and ban, and one that throws stops nothing', () => {
    const heard: string[] = []
    const { score, gate, clock } = scored({ banMs: 5 * MIN, onBan: (peer) => { heard.push(`init-ban ${peer}`) } })
    score.observe({ onStrike: () => { throw new Error('a broken metric') } })
    const stop = score.observe({ onStrike: (peer, _reason, offence, s) => { heard.push(`${peer} ${offence} ${s}`) }, onBan: (peer) => { heard.push(`ban ${peer}`) } })
    score.strike('q', 'r', 'forged')
    score.strike('q', 'r', 'forged')
    score.strike('q', 'r', 'oversized')
    assert.deepEqual(heard, ['q forged 12', 'q forged 24', 'q oversized 33', 'init-ban q', 'ban q'])
    clock.now += 5 * MIN
    assert.equal(gate.isBanned('q'), false, 'the ban expired')
    stop()
    score.strike('q', 'r', 'forged')
    assert.equal(heard.length, 5, 'a removed listener hears nothing more')
  })

  test('memory is bounded: beyond maxPeers the peers offended longest ago are forgotten', () => {
    const { score } = scored({ maxPeers: 100 })
    for (let i = 0; i < 1000; i++) score.strike(`p${i}`, 'x', 'oversized')
    assert.ok(score.size <= 100)
    assert.equal(score.score('p999'), OFFENCE_WEIGHTS.oversized, 'the latest is kept')
    assert.equal(score.score('p0'), 0, 'the oldest is forgotten')
  })

  test('Penalties is the same class (old callers); strike without an offence counts as malformed', () => {
    const gate = new PeerGate()
    const p = new Penalties({ gate })
    assert.ok(p instanceof PeerScore)
    p.strike('z', 'old caller')
    assert.equal(p.score('z'), OFFENCE_WEIGHTS.malformed)
  })
})

describe('one score across protocols, on real libp2p nodes', () => {
  let target: MeshNode, rogue: MeshNode
  let gossip: CapacityGossip
  const clock = { now: 5_000_000 }
  const PROTOCOL = '/test/score-rpc/1'

  before(async () => {
    // the target's score runs on a fake clock: nothing decays between the offences
    target = await MeshNode.create({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], score: { now: () => clock.now } })
    rogue = await MeshNode.create({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    await target.start()
    await rogue.start()
    gossip = new CapacityGossip(target, {
      identity: { name: 'target', cluster: 'test', vendor: '' },
      epoch: 1,
      heartbeatMs: 60_000,
      readings: () => ({ cpu: { count: 1, model: 'x', load1: 0, load5: 0, load15: 0, utilisation: 0 }, memory: { totalBytes: 1, freeBytes: 1, availableBytes: 1 }, gpus: [] })
    })
    await gossip.start()
    await jsonRpcService({ protocol: PROTOCOL, schema: z.object({ n: z.number() }).strict(), handler: async (req) => ({ n: req.n }) })({ registrar: target.libp2p, score: target.score }).start()
    await rogue.libp2p.dial(target.libp2p.getMultiaddrs()[0])
  })
  after(async () => {
    gossip.stop()
    await rogue.stop()
    await target.stop()
  })

  test('two bad gossip frames and one bad RPC request from the same peer: banned and disconnected', async () => {
    const peer = rogue.peerId.toString()
    // the dialler sees the connection a moment before the listener does
    for (let i = 0; i < 100 && !target.isConnected(peer); i++) await new Promise(resolve => setTimeout(resolve, 50))
    const validate = target.libp2p.services.pubsub.topicValidators.get(CAPACITY_TOPIC)
    assert.ok(validate != null)
    for (let i = 0; i < 2; i++) {
      const msg = { type: 'signed', from: rogue.peerId, topic: CAPACITY_TOPIC, data: new Uint8Array([1, 2, 3, i]), sequenceNumber: BigInt(i), signature: new Uint8Array(64), key: rogue.privateKey.publicKey } as unknown as Message
      assert.equal(await validate(rogue.peerId, msg), TopicValidatorResult.Reject)
    }
    assert.equal(target.score.score(peer), 2 * OFFENCE_WEIGHTS.malformed, 'gossip offences count in the node\'s score')
    assert.equal(target.gate.isBanned(peer), false)
    assert.ok(target.isConnected(peer))

    const disconnected = new Promise<void>(resolve => {
      rogue.libp2p.addEventListener('peer:disconnect', (e) => { if (e.detail.equals(target.peerId)) resolve() })
    })
    const stream = await rogue.libp2p.dialProtocol(target.peerId, PROTOCOL)
    const lp = lpStream(stream)
    await lp.write(new TextEncoder().encode('{"n": "not a number"}'))
    await disconnected
    assert.equal(target.gate.isBanned(peer), true, 'the third offence, on another protocol, banned the peer')
    assert.equal(target.score.score(peer), 0)
    await assert.rejects(rogue.libp2p.dial(target.libp2p.getMultiaddrs()[0], { signal: AbortSignal.timeout(5000) }).then(async (conn) => {
      // the gater may let the dial finish before it refuses the upgraded connection: it must not stay open
      await new Promise(resolve => setTimeout(resolve, 300))
      if (conn.status === 'open' && rogue.isConnected(target.peerId.toString())) return
      throw new Error('refused')
    }), 'a banned peer cannot reconnect')
  })

  test('a banned peer\'s own valid record, relayed by another peer, is ignored: not remembered, not dialled, the relay not struck', async () => {
    const peer = rogue.peerId.toString()
    assert.equal(target.gate.isBanned(peer), true, 'banned by the test above')
    const own = gossip.localRecord()
    assert.ok(own != null)
    const record = { ...own, peerId: peer, name: 'rogue', epoch: 1, seq: 1 }
    const data = await encodeCapacityRecord(record, rogue.privateKey)
    const relay = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
    const validate = target.libp2p.services.pubsub.topicValidators.get(CAPACITY_TOPIC)
    assert.ok(validate != null)
    const msg = { type: 'signed', from: rogue.peerId, topic: CAPACITY_TOPIC, data, sequenceNumber: 99n, signature: new Uint8Array(64), key: rogue.privateKey.publicKey } as unknown as Message
    assert.equal(await validate(relay, msg), TopicValidatorResult.Ignore)
    assert.equal(gossip.peers().some(p => p.record.peerId === peer), false)
    assert.equal(target.score.score(relay.toString()), 0)
  })
})

describe('peer score metrics', () => {
  test('strike kinds fold the numbers and hashes peers choose, and stop growing past 32 series', async () => {
    const { AgentMetrics, watchPeerScore } = await import('../../agent/metrics.ts')
    const metrics = new AgentMetrics(() => 0)
    const { score } = scored({ banThreshold: 1e9 })
    watchPeerScore(metrics, score)
    // the same kind with different numbers and hashes: one series
    score.strike('p', 'chunk 3 of 12 bytes from d41d8cd98f00b204e9800998ecf8427e: forged', 'forged')
    score.strike('p', 'chunk 77 of 4096 bytes from 0cc175b9c0f1b6a831c399e269772661: forged', 'forged')
    // a peer that makes up a new reason each time
    for (let i = 0; i < 100; i++) score.strike(`q${i}`, `made-up reason ${String.fromCharCode(97 + (i % 26))}${String.fromCharCode(97 + Math.floor(i / 26))}: x`, 'malformed')
    const series = (await metrics.peerStrikes.get()).values
    assert.ok(series.length <= 33, `${series.length} series`)
    assert.equal(series.find(v => v.labels.kind === 'chunk N of N bytes from H')?.value, 2)
    assert.equal(series.reduce((n, v) => n + v.value, 0), 102, 'every strike counted')
    assert.ok((series.find(v => v.labels.kind === 'other')?.value ?? 0) > 0)
  })
})
