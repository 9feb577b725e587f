import type { Logger } from 'pino'
import type { MeshNode } from '../../mesh/node.ts'
import type { CapacityGossip } from '../../mesh/capacity/gossip.ts'
import type { HardwareMonitor } from '../hardware/monitor.ts'
import type { AgentMetrics } from '../metrics.ts'
import type { BlockManager } from '../blocks/manager.ts'
import type { ComponentRegistry } from '../registry/components.ts'

/** What the HTTP routes may reach of the running agent. */
export interface ApiContext {
  name: string
  cluster: string
  vendor: string
  version: string
  token: string
  startedAt: number
  mesh: MeshNode
  gossip: CapacityGossip
  hardware: HardwareMonitor
  metrics: AgentMetrics
  components: ComponentRegistry
  blocks: BlockManager
  log: Logger
}
