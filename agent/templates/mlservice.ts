/**
 * The seed's MLService (`apiVersion: ml.oneblock.ai/v1alpha1`, kind MLService) mapped onto Blockmesh, with a
 * per-field account of what is honoured and what is not. Blockmesh has no Kubernetes or Ray: it runs its
 * own engine on the mesh's peers, so everything that configures a RayCluster is ignored (and said so); the
 * replica counts of the first worker group are honoured as the block's instance bounds.
 */
import type { MLServiceManifest } from './schemas.ts'

export type FieldStatus = 'honoured' | 'recorded' | 'ignored' | 'unsupported'
export interface FieldNote { field: string, status: FieldStatus, note: string }

export interface MLServiceMapping {
  name: string
  namespace: string
  /** the template version reference as given (NAME-vN or NAME) */
  versionRef: string
  /** from the first worker group: block minInstances / maxInstances, when given */
  replicas?: number
  maxReplicas?: number
  explanation: FieldNote[]
}

const RAY = 'ignored: Blockmesh runs its own engine on the mesh\'s peers, not a Ray cluster'

/** Top-level and nested keys the seed defines, with what happens to each; anything else is reported as unsupported. */
function note (path: string): Omit<FieldNote, 'field'> | undefined {
  const exact: Record<string, Omit<FieldNote, 'field'>> = {
    apiVersion: { status: 'honoured', note: 'checked: ml.oneblock.ai/v1alpha1' },
    kind: { status: 'honoured', note: 'checked: MLService' },
    metadata: { status: 'honoured', note: '' },
    'metadata.name': { status: 'honoured', note: 'names the service, its block and the model name clients use on /v1' },
    'metadata.namespace': { status: 'recorded', note: 'recorded; Blockmesh has one namespace (the mesh)' },
    'metadata.labels': { status: 'recorded', note: 'recorded with the service' },
    'metadata.annotations': { status: 'recorded', note: 'recorded with the service' },
    spec: { status: 'honoured', note: '' },
    'spec.modelTemplateVersionRef': { status: 'honoured', note: '' },
    'spec.modelTemplateVersionRef.name': { status: 'honoured', note: 'the template version deployed (NAME-vN pins it; a bare template name takes its latest version)' },
    'spec.modelTemplateVersionRef.namespace': { status: 'recorded', note: 'recorded; templates have one namespace' },
    'spec.mlClusterRef': { status: 'ignored', note: '' },
    'spec.mlClusterRef.name': { status: 'ignored', note: 'no ML clusters: the mesh places the model by its memory estimate and the version\'s policy' },
    'spec.mlClusterRef.namespace': { status: 'ignored', note: 'no ML clusters' },
    'spec.mlClusterRef.rayClusterSpec': { status: 'ignored', note: '' },
    'spec.mlClusterRef.rayClusterSpec.version': { status: 'ignored', note: RAY },
    'spec.mlClusterRef.rayClusterSpec.image': { status: 'ignored', note: `${RAY} (no container image)` },
    'spec.mlClusterRef.rayClusterSpec.headGroupSpec': { status: 'ignored', note: `${RAY}: there is no head node (every agent serves every block)` },
    'spec.mlClusterRef.rayClusterSpec.workerGroupSpec': { status: 'honoured', note: '' }
  }
  if (exact[path] != null) return exact[path]
  const wg = /^spec\.mlClusterRef\.rayClusterSpec\.workerGroupSpec\[(\d+)\](?:\.(.+))?$/.exec(path)
  if (wg != null) {
    const first = wg[1] === '0'
    const field = wg[2]
    if (field == null) return { status: first ? 'honoured' : 'ignored', note: first ? '' : 'ignored: only the first worker group is read (one block per service)' }
    if (!first) return { status: 'ignored', note: 'ignored: only the first worker group is read' }
    const w: Record<string, Omit<FieldNote, 'field'>> = {
      name: { status: 'recorded', note: 'recorded' },
      replicas: { status: 'honoured', note: 'the block\'s minInstances (instances started), over the version\'s deploymentConfig.replicas' },
      minReplicas: { status: 'honoured', note: 'the block\'s minInstances when replicas is absent' },
      maxReplicas: { status: 'honoured', note: 'the block\'s maxInstances (autoscaling on queue depth up to it)' },
      acceleratorTypes: { status: 'ignored', note: 'ignored: GPUs are not matched by type; use the version\'s policy.node (gpus, minFreeGpuMemory)' },
      rayStartParams: { status: 'ignored', note: RAY },
      resources: { status: 'ignored', note: 'ignored: the mesh sizes the deployment from the model\'s memory estimate and each peer\'s free memory' },
      nodeSelector: { status: 'ignored', note: 'ignored: use the version\'s policy (cluster and node filters)' },
      volume: { status: 'ignored', note: 'ignored: logs stay with each agent; model files live in the agents\' content stores' }
    }
    return w[field]
  }
  return undefined
}

function walk (value: unknown, path: string, out: FieldNote[]): void {
  const n = note(path)
  if (n == null) {
    out.push({ field: path, status: 'unsupported', note: 'not a field Blockmesh knows: ignored' })
    return
  }
  const container = value != null && typeof value === 'object'
  // a leaf, or a container whose own note says it all (an ignored subtree is named once)
  if (!container || n.note !== '') {
    out.push({ field: path, status: n.status, note: n.note })
    return
  }
  if (Array.isArray(value)) value.forEach((v, i) => { walk(v, `${path}[${i}]`, out) })
  else for (const [k, v] of Object.entries(value as object)) walk(v, path === '' ? k : `${path}.${k}`, out)
}

export function mapMLService (m: MLServiceManifest): MLServiceMapping {
  const explanation: FieldNote[] = []
  for (const [k, v] of Object.entries(m)) walk(v, k, explanation)
  const wg = m.spec.mlClusterRef?.rayClusterSpec?.workerGroupSpec?.[0]
  const replicas = wg?.replicas ?? wg?.minReplicas
  return {
    name: m.metadata.name,
    namespace: m.metadata.namespace ?? 'default',
    versionRef: m.spec.modelTemplateVersionRef.name,
    ...(replicas != null && replicas > 0 ? { replicas } : {}),
    ...(wg?.maxReplicas != null ? { maxReplicas: wg.maxReplicas } : {}),
    explanation
  }
}
