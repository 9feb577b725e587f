/**
 * Router.resolve during a rollout's switch (agent/blocks/router.ts): a service's name goes to its current
 * unit, except while this agent has not yet seen a ready instance of it and the unit it was switched from
 * still serves (capacity records travel apart from the desired state; test/templates-rollout.test.ts is
 * the real thing across agents). The instances are given as this agent's own reports: the router reads
 * them as it reads a live host's.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Router } from '../../agent/blocks/router.ts'
import type { CapacityGossip } from '../../mesh/capacity/gossip.ts'
import type { InstanceHost } from '../../agent/blocks/host.ts'

function router (ready: string[], targets: Record<string, string>, previous: Record<string, string>): Router {
  const host = { reports: () => ready.map((block, i) => ({ block, instance: `${block}-${i}`, status: 'ready', active: 0, queued: 0, affinity: false, sessionTtl: 0 })) } as unknown as InstanceHost
  const gossip = { peers: () => [] } as unknown as CapacityGossip
  return new Router({ self: 'self', gossip, host, services: () => new Map(Object.entries(targets)), previousUnits: () => new Map(Object.entries(previous)) })
}

test('a switched service goes to its new unit once an instance of it is ready here', () => {
  assert.equal(router(['chat', 'chat-v2'], { chat: 'chat-v2' }, { chat: 'chat' }).resolve('chat'), 'chat-v2')
  assert.equal(router(['chat-v2'], { chat: 'chat-v2' }, { chat: 'chat' }).resolve('chat'), 'chat-v2')
})

test('until then, while the old unit still serves, to the old unit', () => {
  assert.equal(router(['chat'], { chat: 'chat-v2' }, { chat: 'chat' }).resolve('chat'), 'chat')
})

test('never to an old unit that no longer serves, nor once the rollout is over', () => {
  assert.equal(router([], { chat: 'chat-v2' }, { chat: 'chat' }).resolve('chat'), 'chat-v2')
  assert.equal(router(['chat'], { chat: 'chat-v2' }, {}).resolve('chat'), 'chat-v2')
  assert.equal(router(['other'], {}, {}).resolve('other'), 'other')
})
