/**
 * An agent's content parts made from its pieces: the store in `DATA_DIR/content`, the fetcher (peers from
 * the capacity records, else the origin), who holds what, and the record published soon after the store
 * changes, so peers learn at once what this agent now holds.
 */
import { join } from 'node:path'
import type { PrivateKey } from '@libp2p/interface'
import type { MeshNode } from '../../mesh/node.ts'
import type { CapacityGossip } from '../../mesh/capacity/gossip.ts'
import type { Db } from '../db/database.ts'
import type { Logger } from '../log.ts'
import { SqliteContentStore } from './store.ts'
import { MeshContentFetcher } from './fetcher.ts'
import { GossipDirectory } from './directory.ts'
import { ModelFiles, originDownloader } from './files.ts'

export interface AgentContentInit {
  db: Db
  dataDir: string
  capBytes: number
  maxModelBytes: number
  privateKey: PrivateKey
  mesh: MeshNode
  /** a function: the gossip is made after the content parts (its record reads them) */
  gossip: () => CapacityGossip | undefined
  name: string
  heartbeatMs: number
  log: Logger
}

export function agentContent (init: AgentContentInit): ModelFiles {
  const self = init.mesh.peerId.toString()
  let publishTimer: NodeJS.Timeout | undefined
  const publishSoon = (): void => {
    if (publishTimer != null) return
    publishTimer = setTimeout(() => { publishTimer = undefined; void init.gossip()?.publishNow() }, 100)
    publishTimer.unref()
  }
  // the directory reads the gossip's peers when asked, by then the gossip exists
  const directory = new GossipDirectory({ peers: () => init.gossip()?.peers() ?? [] }, self)
  const store = new SqliteContentStore({
    db: init.db,
    dir: join(init.dataDir, 'content'),
    capBytes: init.capBytes,
    privateKey: init.privateKey,
    peerId: self,
    log: init.log.child({ mod: 'content' }),
    onChange: publishSoon
  })
  const origin = originDownloader({ cacheDir: join(init.dataDir, 'models'), maxBytes: init.maxModelBytes })
  const fetcher = new MeshContentFetcher({
    node: init.mesh,
    store,
    directory,
    log: init.log.child({ mod: 'fetch' }),
    origin,
    maxFileBytes: init.maxModelBytes,
    // a file added on a peer a moment ago is in its next record
    holderWaitMs: Math.max(5000, 3 * init.heartbeatMs)
  })
  return new ModelFiles({ store, fetcher, origin, directory, self: { peerId: self, name: init.name } })
}
