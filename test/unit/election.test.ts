import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { PeerView } from '../../mesh/capacity/gossip.ts'
import { reconcilerOf, rendezvousWeight, seenTerms } from '../../agent/blocks/election.ts'
import { Autoscaler } from '../../agent/blocks/autoscaler.ts'

const view = (peerId: string, live: boolean, extra: Partial<PeerView['record']> = {}): PeerView => ({
  record: { peerId, instances: [], reconciles: [], ...extra } as unknown as PeerView['record'], lastSeen: 0, expiresAt: 0, status: live ? 'live' : 'expired'
})

test('every agent with the same view of who is live names the same reconciler; the creator while live', () => {
  const ids = ['p1', 'p2', 'p3', 'p4']
  for (const block of ['a', 'b', 'chat-7', 'tiny3-pipeline-s1']) {
    // each agent sees the others as peers: the answer must not depend on who asks
    const answers = ids.map(self => reconcilerOf(block, 'gone', self, ids.filter(x => x !== self).map(x => view(x, true))))
    assert.equal(new Set(answers).size, 1, `${block}: ${answers.join(', ')}`)
    assert.equal(reconcilerOf(block, 'p3', 'p1', ['p2', 'p3', 'p4'].map(x => view(x, true))), 'p3', 'the live creator reconciles')
    assert.notEqual(reconcilerOf(block, 'p3', 'p1', [view('p2', true), view('p3', false), view('p4', true)]), 'p3', 'an expired creator does not')
  }
  // rendezvous spreads blocks over agents
  const owners = new Set(Array.from({ length: 40 }, (_, i) => reconcilerOf(`block-${i}`, 'gone', 'p1', ['p2', 'p3', 'p4'].map(x => view(x, true)))))
  assert.ok(owners.size >= 3, `spread over ${owners.size} agents`)
})

test('a new term exceeds every term seen, expired peers\' included; only live claims make a reconciler step down', () => {
  const peers = [
    view('dead', false, { reconciles: [{ block: 'b', term: 7, target: 1, status: 'ready', error: null }] }),
    view('host', true, { instances: [{ block: 'b', term: 5 } as any] }),
    view('other', true, { reconciles: [{ block: 'b', term: 4, target: 1, status: 'ready', error: null }] })
  ]
  assert.deepEqual(seenTerms('b', 2, peers), { term: 7, claim: 4 })
  assert.deepEqual(seenTerms('b', 9, peers), { term: 9, claim: 4 }, 'this host\'s own fence counts')
  assert.deepEqual(seenTerms('x', 0, peers), { term: 0, claim: 0 })
})

test('a claim makes this reconciler step down only from the creator or an agent that outweighs it; any claim still raises the fence', () => {
  const claim = (peerId: string, term: number): PeerView => view(peerId, true, { reconciles: [{ block: 'b', term, target: 1, status: 'ready', error: null }] })
  // names on both sides of self's rendezvous weight for block b
  const names = Array.from({ length: 20 }, (_, i) => `peer-${i}`)
  const self = 'self'
  const lighter = names.find(n => rendezvousWeight('b', n) < rendezvousWeight('b', self)) as string
  const heavier = names.find(n => rendezvousWeight('b', n) > rendezvousWeight('b', self)) as string
  assert.ok(lighter != null && heavier != null)
  const who = { createdBy: 'creator', self }
  assert.deepEqual(seenTerms('b', 0, [claim(lighter, 1e9)], who), { term: 1e9, claim: 0 }, 'a lighter peer that no view would choose: no step-down, but its term is exceeded')
  assert.deepEqual(seenTerms('b', 0, [claim(heavier, 8)], who), { term: 8, claim: 8 })
  assert.deepEqual(seenTerms('b', 0, [claim('creator', 3)], who), { term: 3, claim: 3 })
  assert.deepEqual(seenTerms('b', 0, [claim(lighter, 5)]), { term: 5, claim: 5 }, 'without who, every live claim counts')
})

test('autoscaler: a change only when the whole window is past the threshold, then not again within the cooldown', () => {
  const a = new Autoscaler()
  const spec = { metric: 'queueDepth' as const, scaleUpAbove: 4, scaleDownBelow: 0.5, window: 10, cooldown: 30 }
  const hb = 1000
  let t = 0
  let decided: number | null = null
  for (; t <= 9000; t += 1000) decided = a.decide('b', spec, 9, 1, { min: 1, max: 3 }, hb, t)
  assert.equal(decided, null, 'the window is not covered yet')
  decided = a.decide('b', spec, 9, 1, { min: 1, max: 3 }, hb, 10_000)
  assert.equal(decided, 2, 'up once the window is covered')
  for (t = 11_000; t < 40_000; t += 1000) assert.equal(a.decide('b', spec, 9, 2, { min: 1, max: 3 }, hb, t), null, `cooldown at ${t}`)
  assert.equal(a.decide('b', spec, 9, 2, { min: 1, max: 3 }, hb, 40_000), 3)
  // a dip inside the window holds the decision
  const c = new Autoscaler()
  for (t = 0; t <= 12_000; t += 1000) assert.equal(c.decide('b', spec, t === 5000 ? 1 : 9, 1, { min: 1, max: 3 }, hb, t), null)
  // never past the bounds
  const d = new Autoscaler()
  for (t = 0; t <= 20_000; t += 1000) assert.equal(d.decide('b', spec, 9, 3, { min: 1, max: 3 }, hb, t), null)
})
