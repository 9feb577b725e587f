/**
 * Who holds which model file, read from the mesh's capacity records: a live peer whose record lists an MD5
 * as held has the file complete; one that lists it among its transfers has part of it (and serves the
 * chunks it has). Nothing is asked of the peers: the records are already here.
 */
import type { CapacityGossip } from '../../mesh/capacity/gossip.ts'
import type { ContentDirectory } from './types.ts'

export interface HolderView {
  peerId: string
  name: string
  state: 'complete' | 'partial'
  receivedBytes: number | null
  totalBytes: number | null
}

export class GossipDirectory implements ContentDirectory {
  private readonly gossip: Pick<CapacityGossip, 'peers'>
  private readonly self: string

  constructor (gossip: Pick<CapacityGossip, 'peers'>, self: string) {
    this.gossip = gossip
    this.self = self
  }

  holders (md5: string): { complete: string[], partial: string[] } {
    const complete: string[] = []
    const partial: string[] = []
    for (const h of this.views(md5)) (h.state === 'complete' ? complete : partial).push(h.peerId)
    return { complete, partial }
  }

  /** The live peers (not this one) that hold `md5` or are fetching it, with their names and progress. */
  views (md5: string): HolderView[] {
    const out: HolderView[] = []
    for (const p of this.gossip.peers()) {
      const r = p.record
      if (p.status !== 'live' || r.peerId === this.self || r.content == null) continue
      if (r.content.held.includes(md5)) {
        out.push({ peerId: r.peerId, name: r.name, state: 'complete', receivedBytes: null, totalBytes: null })
        continue
      }
      const t = r.content.fetching.find(f => f.md5 === md5)
      if (t != null) out.push({ peerId: r.peerId, name: r.name, state: 'partial', receivedBytes: t.receivedBytes, totalBytes: t.totalBytes })
    }
    return out
  }
}
