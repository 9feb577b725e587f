// Runs a model split task as a Kubernetes Job (seed 002: the split runner executes a task "on the target
// cluster using a Kubernetes job"), through @kubernetes/client-node 2.x.
//
// start() creates the Job, then a PersistentVolumeClaim owned by that Job (ownerReferences → the Job's
// uid), so the claim goes with the Job (delete() or the TTL controller) by garbage collection. The Job is
// created first because its uid is known only then; a Job whose claim does not exist yet just keeps its
// pod pending until the claim appears, and if the claim cannot be created the Job is deleted again.
//
// follow() polls GET .../jobs/{name} every pollMs and maps the Job's status to a phase; delete() removes
// the Job (propagationPolicy Background, so its pods go too) and the claim, ignoring ones already gone.
//
// client-node 2.x notes (worked around below):
// - Errors are ApiException whose `message` is "HTTP-Code: 409\nMessage: Unknown API Status Code!\nBody:
//   …\nHeaders: …" and whose `body` is the raw response text; for 401 the generated code drops the body
//   entirely (message "Unauthorized", body undefined). apiError() parses the Status back out.
// - The object-style API (BatchV1Api, CoreV1Api) wraps the *Observable* API, so per-call middleware must
//   return client-node's own Observable (the package's exported `Middleware` type is the Promise kind,
//   which fails at run time there with "toPromise is not a function"). withSignal() builds an
//   ObservableMiddleware that puts the AbortSignal on the request, which client-node's fetch honours.
// - An http:// server is refused at request time unless the cluster sets insecure-skip-tls-verify;
//   loadKubeConfig() checks that up front so it is a bad_config, not a request failure.
// - KubeConfig.loadFromOptions() takes the client's internal shape (cluster.server at the top level), not a
//   kubeconfig file's shape, so a parsed kubeconfig object is loaded through loadFromString(JSON).
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { ApiException, BatchV1Api, CoreV1Api, KubeConfig, Observable } from '@kubernetes/client-node'
import type {
  ConfigurationOptions, ObservableMiddleware, RequestContext, ResponseContext, V1Job, V1PersistentVolumeClaim
} from '@kubernetes/client-node'
import { AgentError } from '../errors.ts'

/** What the task service asks for: one split task as one Job. */
export interface K8sJobRequest {
  /** The task's id, e.g. 'task-1a2b3c'; must be a valid label value (it is the blockmesh.dev/task label). */
  taskId: string
  /** The request's container_image. */
  image: string
  /** The request's storage_size, a Kubernetes quantity; default '1Gi'. */
  storageSize?: string
  /** Environment of the splitter container: TASK_ID, TASK_DATA, TASK_STATUS_UPDATE_URL, … */
  env: Record<string, string>
}

/** A Job's state as the runner reports it. */
export type K8sJobPhase = 'pending' | 'running' | 'succeeded' | 'failed'

/** How to reach the cluster and how to shape the Job. */
export interface K8sRunnerOptions {
  /** a kubeconfig: file path, YAML/JSON text, or an already parsed object (or a KubeConfig) */
  kubeconfig: string | object
  /** default: the kubeconfig context's namespace, else 'default' */
  namespace?: string
  /** status poll interval, default 2000 */
  pollMs?: number
  /** storage class of the claim; the cluster's default class when unset */
  storageClassName?: string
  /** ttlSecondsAfterFinished for the Job (default 3600) */
  ttlSeconds?: number
}

/** Why a runner call failed. */
export type KubernetesRunnerErrorReason = 'bad_config' | 'api_error' | 'create_failed'

/**
 * A runner failure. `bad_config`: the kubeconfig, options or request are unusable (nothing was sent);
 * `create_failed`: the API server refused the Job or claim (exists, invalid, namespace missing);
 * `api_error`: the API could not be used (unreachable, 401/403, 5xx) or a read/delete failed.
 * `httpStatus` and `k8sReason` carry the Kubernetes Status's code and reason when there was one.
 */
export class KubernetesRunnerError extends AgentError {
  readonly reason: KubernetesRunnerErrorReason
  readonly httpStatus?: number
  readonly k8sReason?: string
  constructor (reason: KubernetesRunnerErrorReason, message: string, opts: { httpStatus?: number, k8sReason?: string, cause?: unknown } = {}) {
    const status = reason === 'bad_config' ? 400 : (opts.httpStatus === 409 ? 409 : 502)
    super(message, `kubernetes_${reason}`, status, { reason, httpStatus: opts.httpStatus, k8sReason: opts.k8sReason },
      opts.cause === undefined ? undefined : { cause: opts.cause })
    this.name = 'KubernetesRunnerError'
    this.reason = reason
    this.httpStatus = opts.httpStatus
    this.k8sReason = opts.k8sReason
  }
}

/** Where the claim is mounted in the splitter container. */
export const SPLITS_MOUNT_PATH = '/mnt/splits'
/** Label marking objects this runner created. */
export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by'
/** Label carrying the task id. */
export const TASK_LABEL = 'blockmesh.dev/task'

const JOB_PREFIX = 'blockmesh-split-'
const QUANTITY = /^\d+(\.\d+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$/
const LABEL_VALUE = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/
const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/
const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/
/** Consecutive transient poll failures (network, 429, 5xx) follow() rides out before giving up. */
const MAX_POLL_FAILURES = 5

/**
 * The Job name for a task: 'blockmesh-split-<taskId>', lowercased, with '.' and '_' as '-'; names longer
 * than 63 characters (a DNS-1123 label, which the Job controller's job-name label needs) are cut and get
 * an 8-hex hash of the task id so they stay distinct.
 */
export function jobNameFor (taskId: string): string {
  const base = taskId.toLowerCase().replace(/[^a-z0-9-]/g, '-').replace(/-+/g, '-').replace(/^-|-$/g, '')
  if (base === '') throw new KubernetesRunnerError('bad_config', `task id ${JSON.stringify(taskId)} gives no usable Job name`)
  const full = JOB_PREFIX + base
  if (full.length <= 63) return full
  const hash = createHash('sha256').update(taskId).digest('hex').slice(0, 8)
  return `${(JOB_PREFIX + base).slice(0, 63 - 9).replace(/-+$/, '')}-${hash}`
}

/** The claim that goes with a Job. */
export function claimNameFor (jobName: string): string {
  return `${jobName}-splits`
}

/**
 * Maps a Job's status to a phase. Complete (or SuccessCriteriaMet) / Failed (or FailureTarget) conditions
 * that are "True" decide first, then the counters: succeeded > 0, failed > 0, active > 0, else pending.
 * The message comes from the deciding condition ("Reason: message").
 */
export function jobPhase (job: V1Job): { phase: K8sJobPhase, message?: string } {
  const st = job.status ?? {}
  const conds = (st.conditions ?? []).filter(c => c.status === 'True')
  const describe = (c: { reason?: string, message?: string } | undefined): string | undefined => {
    if (c == null) return undefined
    if (c.reason != null && c.message != null && c.message !== '') return `${c.reason}: ${c.message}`
    return c.message || c.reason || undefined
  }
  const complete = conds.find(c => c.type === 'Complete') ?? conds.find(c => c.type === 'SuccessCriteriaMet')
  const failed = conds.find(c => c.type === 'Failed') ?? conds.find(c => c.type === 'FailureTarget')
  if (complete != null) return { phase: 'succeeded', message: describe(complete) }
  if (failed != null) return { phase: 'failed', message: describe(failed) }
  if ((st.succeeded ?? 0) > 0) return { phase: 'succeeded' }
  if ((st.failed ?? 0) > 0) return { phase: 'failed', message: `${st.failed} pod(s) failed` }
  if ((st.active ?? 0) > 0) return { phase: 'running' }
  return { phase: 'pending' }
}

/** Loads a kubeconfig given as a KubeConfig, a parsed object, YAML/JSON text or a file path, and checks it. */
export function loadKubeConfig (input: string | object): KubeConfig {
  const kc = new KubeConfig()
  try {
    if (input instanceof KubeConfig) {
      kc.loadFromString(input.exportConfig())
    } else if (typeof input === 'object' && input !== null) {
      kc.loadFromString(JSON.stringify(input))
    } else if (typeof input === 'string') {
      const text = input.trim()
      if (text === '') throw new KubernetesRunnerError('bad_config', 'kubeconfig is empty')
      if (text.includes('\n') || text.startsWith('{')) {
        kc.loadFromString(text)
      } else {
        if (!existsSync(text)) throw new KubernetesRunnerError('bad_config', `kubeconfig file not found: ${text}`)
        kc.loadFromFile(text)
      }
    } else {
      throw new KubernetesRunnerError('bad_config', 'kubeconfig must be a file path, YAML/JSON text or an object')
    }
  } catch (err) {
    if (err instanceof KubernetesRunnerError) throw err
    throw new KubernetesRunnerError('bad_config', `cannot load kubeconfig: ${(err as Error).message}`, { cause: err })
  }
  if (kc.getClusters().length === 0) throw new KubernetesRunnerError('bad_config', 'kubeconfig has no clusters')
  if (!kc.getCurrentContext()) {
    const contexts = kc.getContexts()
    if (contexts.length !== 1) {
      throw new KubernetesRunnerError('bad_config', contexts.length === 0
        ? 'kubeconfig has no contexts'
        : 'kubeconfig has several contexts and no current-context')
    }
    kc.setCurrentContext(contexts[0].name)
  }
  const ctx = kc.getContextObject(kc.getCurrentContext())
  if (ctx == null) throw new KubernetesRunnerError('bad_config', `kubeconfig's current-context "${kc.getCurrentContext()}" is not among its contexts`)
  const cluster = kc.getCluster(ctx.cluster)
  if (cluster == null) throw new KubernetesRunnerError('bad_config', `kubeconfig context "${ctx.name}" names cluster "${ctx.cluster}", which it does not define`)
  if (ctx.user && kc.getUser(ctx.user) == null) throw new KubernetesRunnerError('bad_config', `kubeconfig context "${ctx.name}" names user "${ctx.user}", which it does not define`)
  let url: URL
  try { url = new URL(cluster.server) } catch {
    throw new KubernetesRunnerError('bad_config', `kubeconfig cluster "${cluster.name}" has an invalid server URL: ${cluster.server}`)
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new KubernetesRunnerError('bad_config', `kubeconfig cluster "${cluster.name}" server must be http(s): ${cluster.server}`)
  }
  if (url.protocol === 'http:' && !cluster.skipTLSVerify) {
    throw new KubernetesRunnerError('bad_config', `kubeconfig cluster "${cluster.name}" uses plain http; client-node allows that only with insecure-skip-tls-verify: true`)
  }
  return kc
}

/** Checks a job request before anything is sent; returns the storage size to use. */
function validateRequest (req: K8sJobRequest): string {
  if (typeof req !== 'object' || req === null) throw new KubernetesRunnerError('bad_config', 'job request must be an object')
  if (typeof req.taskId !== 'string' || !LABEL_VALUE.test(req.taskId)) {
    throw new KubernetesRunnerError('bad_config', `task id ${JSON.stringify(req.taskId)} is not a valid label value (1-63 of A-Z a-z 0-9 . _ -, alphanumeric at both ends)`)
  }
  if (typeof req.image !== 'string' || req.image.trim() === '' || /\s/.test(req.image)) {
    throw new KubernetesRunnerError('bad_config', `container image ${JSON.stringify(req.image)} is not a valid image reference`)
  }
  const storage = req.storageSize ?? '1Gi'
  if (typeof storage !== 'string' || !QUANTITY.test(storage) || !(parseFloat(storage) > 0)) {
    throw new KubernetesRunnerError('bad_config', `storage size ${JSON.stringify(storage)} is not a positive Kubernetes quantity (e.g. 1Gi, 500Mi, 2G)`)
  }
  if (typeof req.env !== 'object' || req.env === null) throw new KubernetesRunnerError('bad_config', 'env must be an object of strings')
  for (const [k, v] of Object.entries(req.env)) {
    if (!ENV_NAME.test(k)) throw new KubernetesRunnerError('bad_config', `environment variable name ${JSON.stringify(k)} is not valid`)
    if (typeof v !== 'string') throw new KubernetesRunnerError('bad_config', `environment variable ${k} must be a string`)
  }
  return storage
}

/** Parses the Kubernetes Status out of a client-node ApiException (its body is raw text, or absent for 401). */
function statusOf (err: ApiException<unknown>): { message?: string, reason?: string } {
  let body: unknown = err.body
  if (typeof body === 'string') {
    const text = body.trim()
    try { body = JSON.parse(text) } catch { return text === '' ? {} : { message: text.slice(0, 500) } }
  }
  if (typeof body === 'object' && body !== null) {
    const b = body as { message?: unknown, reason?: unknown }
    return {
      message: typeof b.message === 'string' ? b.message : undefined,
      reason: typeof b.reason === 'string' ? b.reason : undefined
    }
  }
  return {}
}

const HTTP_REASONS: Record<number, string> = {
  400: 'BadRequest', 401: 'Unauthorized', 403: 'Forbidden', 404: 'NotFound', 405: 'MethodNotAllowed',
  409: 'Conflict', 422: 'Invalid', 429: 'TooManyRequests', 500: 'InternalError', 503: 'ServiceUnavailable'
}

/** A client-node failure as a KubernetesRunnerError; `creating` makes refusals of the object create_failed. */
function apiError (err: unknown, what: string, creating: boolean): KubernetesRunnerError {
  if (err instanceof KubernetesRunnerError) return err
  if (err instanceof ApiException) {
    const code = err.code
    const st = statusOf(err)
    const reason = st.reason ?? HTTP_REASONS[code] ?? 'Error'
    const hint = code === 401 ? ' (the kubeconfig\'s credentials were refused)' : ''
    const detail = st.message != null && st.message !== reason ? `: ${st.message}` : ''
    const kind = creating && [400, 404, 409, 422].includes(code) ? 'create_failed' : 'api_error'
    return new KubernetesRunnerError(kind, `Kubernetes API: ${what} failed: HTTP ${code} ${reason}${detail}${hint}`,
      { httpStatus: code, k8sReason: reason, cause: err })
  }
  const e = err as { message?: string, cause?: { code?: string, message?: string } }
  const cause = e?.cause?.code ?? e?.cause?.message
  return new KubernetesRunnerError('api_error',
    `Kubernetes API: ${what} failed: ${e?.message ?? String(err)}${cause != null ? ` (${cause})` : ''}`, { cause: err })
}

/** True for failures worth another poll: unreachable server, 429, 5xx. */
function transient (err: KubernetesRunnerError): boolean {
  return err.httpStatus === undefined || err.httpStatus === 429 || err.httpStatus >= 500
}

function abortReason (signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError')
}

/** Runs split tasks as Kubernetes Jobs with a claim mounted at /mnt/splits. */
export class KubernetesJobRunner {
  /** The namespace Jobs and claims are created in. */
  readonly namespace: string
  readonly #batch: BatchV1Api
  readonly #core: CoreV1Api
  readonly #pollMs: number
  readonly #storageClassName?: string
  readonly #ttlSeconds: number

  /** Loads and checks the kubeconfig (throws KubernetesRunnerError bad_config); sends nothing. */
  constructor (opts: K8sRunnerOptions) {
    if (typeof opts !== 'object' || opts === null) throw new KubernetesRunnerError('bad_config', 'runner options must be an object')
    const kc = loadKubeConfig(opts.kubeconfig)
    const pollMs = opts.pollMs ?? 2000
    if (!Number.isFinite(pollMs) || pollMs <= 0) throw new KubernetesRunnerError('bad_config', `pollMs must be a positive number, got ${opts.pollMs}`)
    const ttl = opts.ttlSeconds ?? 3600
    if (!Number.isInteger(ttl) || ttl < 0) throw new KubernetesRunnerError('bad_config', `ttlSeconds must be a non-negative integer, got ${opts.ttlSeconds}`)
    const ns = opts.namespace ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? 'default'
    if (!DNS_LABEL.test(ns)) throw new KubernetesRunnerError('bad_config', `namespace ${JSON.stringify(ns)} is not a valid namespace name`)
    if (opts.storageClassName !== undefined && (typeof opts.storageClassName !== 'string' || opts.storageClassName === '')) {
      throw new KubernetesRunnerError('bad_config', 'storageClassName must be a non-empty string')
    }
    this.namespace = ns
    this.#pollMs = pollMs
    this.#ttlSeconds = ttl
    this.#storageClassName = opts.storageClassName
    this.#batch = kc.makeApiClient(BatchV1Api)
    this.#core = kc.makeApiClient(CoreV1Api)
  }

  /**
   * Creates the Job (image, env, claim at /mnt/splits, restartPolicy Never, backoffLimit 0, labels
   * app.kubernetes.io/managed-by=blockmesh and blockmesh.dev/task=<taskId>, ttlSecondsAfterFinished), then a
   * ReadWriteOnce PersistentVolumeClaim of storageSize owned by the Job. Returns the Job's name. If the
   * claim cannot be created, or the signal aborts after the Job exists, the Job is deleted again.
   */
  async start (req: K8sJobRequest, signal?: AbortSignal): Promise<{ jobName: string, namespace: string }> {
    const storage = validateRequest(req)
    const jobName = jobNameFor(req.taskId)
    const claimName = claimNameFor(jobName)
    const namespace = this.namespace
    const labels = { [MANAGED_BY_LABEL]: 'blockmesh', [TASK_LABEL]: req.taskId }
    signal?.throwIfAborted()

    const job: V1Job = {
      apiVersion: 'batch/v1',
      kind: 'Job',
      metadata: { name: jobName, namespace, labels },
      spec: {
        backoffLimit: 0,
        ttlSecondsAfterFinished: this.#ttlSeconds,
        template: {
          metadata: { labels },
          spec: {
            restartPolicy: 'Never',
            containers: [{
              name: 'splitter',
              image: req.image,
              env: Object.entries(req.env).map(([name, value]) => ({ name, value })),
              volumeMounts: [{ name: 'splits', mountPath: SPLITS_MOUNT_PATH }]
            }],
            volumes: [{ name: 'splits', persistentVolumeClaim: { claimName } }]
          }
        }
      }
    }
    let created: V1Job
    try {
      created = await this.#batch.createNamespacedJob({ namespace, body: job }, withSignal(signal))
    } catch (err) {
      if (signal?.aborted === true) throw abortReason(signal)
      throw apiError(err, `create job ${namespace}/${jobName}`, true)
    }
    const uid = created.metadata?.uid
    try {
      if (uid == null || uid === '') throw new KubernetesRunnerError('api_error', `Kubernetes API: create job ${namespace}/${jobName} returned no metadata.uid`)
      const claim: V1PersistentVolumeClaim = {
        apiVersion: 'v1',
        kind: 'PersistentVolumeClaim',
        metadata: {
          name: claimName,
          namespace,
          labels,
          ownerReferences: [{ apiVersion: 'batch/v1', kind: 'Job', name: jobName, uid }]
        },
        spec: {
          accessModes: ['ReadWriteOnce'],
          resources: { requests: { storage } },
          ...(this.#storageClassName !== undefined ? { storageClassName: this.#storageClassName } : {})
        }
      }
      signal?.throwIfAborted()
      try {
        await this.#core.createNamespacedPersistentVolumeClaim({ namespace, body: claim }, withSignal(signal))
      } catch (err) {
        if (signal?.aborted === true) throw abortReason(signal)
        throw apiError(err, `create persistentvolumeclaim ${namespace}/${claimName}`, true)
      }
    } catch (err) {
      // Best effort: the Job must not outlive a failed start. Its claim (if any) goes with it.
      await this.delete(jobName).catch(() => {})
      throw err
    }
    return { jobName, namespace }
  }

  /**
   * Polls the Job until it succeeds or fails, calling onPhase on every phase change (with a message from
   * the Job's conditions for a finished Job), and resolves with the final phase. Up to 5 consecutive
   * transient poll failures (unreachable, 429, 5xx) are ridden out; others reject with api_error (e.g. the
   * Job was deleted: 404). Aborting the signal stops polling, deletes the Job and its claim, and rejects
   * with the signal's reason.
   */
  async follow (jobName: string, onPhase: (p: K8sJobPhase, message?: string) => void, signal?: AbortSignal): Promise<'succeeded' | 'failed'> {
    const namespace = this.namespace
    let last: K8sJobPhase | undefined
    let failures = 0
    try {
      for (;;) {
        signal?.throwIfAborted()
        let job: V1Job | undefined
        try {
          job = await this.#batch.readNamespacedJob({ name: jobName, namespace }, withSignal(signal))
          failures = 0
        } catch (err) {
          signal?.throwIfAborted()
          const e = apiError(err, `read job ${namespace}/${jobName}`, false)
          if (!transient(e) || ++failures > MAX_POLL_FAILURES) throw e
        }
        if (job != null) {
          const { phase, message } = jobPhase(job)
          if (phase !== last) {
            last = phase
            onPhase(phase, message)
          }
          if (phase === 'succeeded' || phase === 'failed') return phase
        }
        signal?.throwIfAborted()
        await sleep(this.#pollMs, undefined, signal != null ? { signal } : undefined)
      }
    } catch (err) {
      if (signal?.aborted !== true) throw err
      try {
        await this.delete(jobName)
      } catch (deleteErr) {
        throw new KubernetesRunnerError('api_error',
          `follow of job ${namespace}/${jobName} was aborted, but deleting it failed: ${(deleteErr as Error).message}`, { cause: deleteErr })
      }
      throw abortReason(signal)
    }
  }

  /** Deletes the Job (propagationPolicy Background, so its pods go too) and its claim; ones already gone are fine. */
  async delete (jobName: string): Promise<void> {
    const namespace = this.namespace
    const claimName = claimNameFor(jobName)
    try {
      await this.#batch.deleteNamespacedJob({ name: jobName, namespace, propagationPolicy: 'Background' })
    } catch (err) {
      if (!(err instanceof ApiException && err.code === 404)) throw apiError(err, `delete job ${namespace}/${jobName}`, false)
    }
    try {
      await this.#core.deleteNamespacedPersistentVolumeClaim({ name: claimName, namespace })
    } catch (err) {
      if (!(err instanceof ApiException && err.code === 404)) throw apiError(err, `delete persistentvolumeclaim ${namespace}/${claimName}`, false)
    }
  }
}

/** Per-call options that put the AbortSignal on the request (client-node's fetch honours RequestContext signals). */
function withSignal (signal: AbortSignal | undefined): ConfigurationOptions | undefined {
  if (signal == null) return undefined
  const middleware: ObservableMiddleware = {
    pre: (ctx: RequestContext) => {
      ctx.setSignal(signal)
      return new Observable(Promise.resolve(ctx))
    },
    post: (res: ResponseContext) => new Observable(Promise.resolve(res))
  }
  return { middleware: [middleware], middlewareMergeStrategy: 'append' }
}
