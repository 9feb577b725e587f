import { randomBytes } from 'node:crypto'
import { z } from 'zod'
import type { Db } from '../db/database.ts'
import { DocumentCollection } from './documents.ts'
import type { FindOptions } from './documents.ts'

/** Port of a Blockmesh agent's API (`--api-port` default): where a runner's `POST /start_model_split_job` is. */
export const DEFAULT_RUNNER_PORT = 7700

/** "host" as the authority of a URL: a bare IPv6 address gets its brackets. */
function authority (host: string): string {
  return !host.startsWith('[') && (host.match(/:/g) ?? []).length > 1 ? `[${host}]` : host
}

function validHost (host: string): boolean {
  if (/[\s/?#@\\]/.test(host)) return false
  try {
    const u = new URL(`http://${authority(host)}`)
    return u.hostname !== '' && u.pathname === '/'
  } catch {
    return false
  }
}

/** The URL a runner is reached at when none is given: `http://<host>:7700`, or `http://<host:port>`. */
export function defaultRunnerUrl (host: string): string {
  const a = authority(host)
  return /:\d+$/.test(a) ? `http://${a}` : `http://${a}:${DEFAULT_RUNNER_PORT}`
}

const HostSchema = z.string().trim().min(1).max(253)
  .refine(validHost, 'a host name or IP address, optionally with :port')

const UrlSchema = z.url({ protocol: /^https?$/, error: 'an http(s) URL' }).max(2048)

/**
 * A kubeconfig as a JSON object (seed 002 "Kubernetes config dict"). Only `clusters[].name` is
 * checked (it is what answers show); the rest is kept as given for the Job runner.
 */
export const KubeconfigSchema = z.object({
  clusters: z.array(z.object({ name: z.string().min(1).max(253) }).loose()).max(64).optional()
}).loose()
export type Kubeconfig = z.output<typeof KubeconfigSchema>

const MetadataSchema = z.record(z.string().min(1).max(128), z.unknown())
const TagsSchema = z.array(z.string().min(1).max(128)).max(64)

/** A split runner as stored (seed 002 "Split Runners Registry"), kubeconfig included. */
export const SplitRunnerSchema = z.object({
  split_runner_id: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,127}$/, 'lowercase letters, digits, ".", "_" and "-"'),
  split_runner_public_url: UrlSchema,
  split_runner_public_host: HostSchema,
  split_runner_metadata: MetadataSchema,
  split_runner_tags: TagsSchema,
  cluster_k8s_config: KubeconfigSchema.optional(),
  created_at: z.iso.datetime()
}).strict()
export type SplitRunner = z.output<typeof SplitRunnerSchema>

/** Body of `POST /split-runner` (seed 002), plus an optional explicit `split_runner_public_url`. */
export const CreateSplitRunnerSchema = z.object({
  /** the kubeconfig of the cluster this runner's split jobs go to; optional: Blockmesh agents are runners themselves */
  cluster_k8s_config: KubeconfigSchema.optional(),
  split_runner_public_host: HostSchema,
  /** default: {@link defaultRunnerUrl} of the host */
  split_runner_public_url: UrlSchema.optional(),
  split_runner_metadata: MetadataSchema.default({}),
  split_runner_tags: TagsSchema.default([])
}).strict()
export type CreateSplitRunner = z.output<typeof CreateSplitRunnerSchema>

/** What answers show in place of a stored kubeconfig: never its content, only that one is kept and its cluster names. */
export interface RedactedKubeconfig { redacted: true, clusters: string[] }

/** A split runner as the API returns it: the kubeconfig redacted (absent when none is stored). */
export type SplitRunnerView = Omit<SplitRunner, 'cluster_k8s_config'> & { cluster_k8s_config?: RedactedKubeconfig }

/** The public view of a stored runner: `cluster_k8s_config` becomes `{ redacted: true, clusters: [names] }`. */
export function splitRunnerView (doc: SplitRunner): SplitRunnerView {
  const { cluster_k8s_config: kube, ...rest } = doc
  if (kube == null) return rest
  const clusters = Array.isArray(kube.clusters) ? kube.clusters.map(c => c.name) : []
  return { ...rest, cluster_k8s_config: { redacted: true, clusters } }
}

/** A new runner id: `runner-` and 16 random hex digits. */
export function newRunnerId (): string {
  return `runner-${randomBytes(8).toString('hex')}`
}

/**
 * The split runners registry (seed 002), in SQLite table `split_runners`, queried and updated
 * with MongoDB-style documents.
 *
 * In Blockmesh every agent is a split runner server (its `POST /start_model_split_job`), so
 * registering a runner records where one is. Deploying a runner server into Kubernetes (the
 * seed's side effect of `POST /split-runner`) is not done, nor is removing it on delete: the
 * record is created and the kubeconfig kept, for the Job runner to use. The kubeconfig is
 * write-only: answers carry {@link RedactedKubeconfig}, filters see only that redacted form,
 * and updates may replace it (`$set`) or remove it (`$unset`) but not move or inspect it.
 */
export class SplitRunnerRegistry {
  readonly docs: DocumentCollection<SplitRunner>

  constructor (db: Db) {
    this.docs = new DocumentCollection<SplitRunner>({
      db,
      table: 'split_runners',
      keyColumn: 'id',
      keyField: 'split_runner_id',
      schema: SplitRunnerSchema,
      noun: 'split runner',
      immutable: ['created_at'],
      writeOnly: ['cluster_k8s_config'],
      view: splitRunnerView
    })
  }

  /** Registers a runner under a new id; returns it as stored (kubeconfig included: do not send it out). */
  create (input: CreateSplitRunner): SplitRunner {
    const doc: SplitRunner = {
      split_runner_id: newRunnerId(),
      split_runner_public_url: input.split_runner_public_url ?? defaultRunnerUrl(input.split_runner_public_host),
      split_runner_public_host: input.split_runner_public_host,
      split_runner_metadata: input.split_runner_metadata,
      split_runner_tags: input.split_runner_tags,
      ...(input.cluster_k8s_config != null ? { cluster_k8s_config: input.cluster_k8s_config } : {}),
      created_at: new Date().toISOString()
    }
    return this.docs.insert(doc)
  }

  /** One runner, kubeconfig redacted; unknown id: 404. */
  get (id: string): SplitRunnerView {
    return splitRunnerView(this.docs.get(id))
  }

  /** One runner as stored, kubeconfig included (for the Job runner, never for API answers). */
  getWithKubeconfig (id: string): SplitRunner {
    return this.docs.get(id)
  }

  /** Applies a MongoDB-style update document; returns the runner, kubeconfig redacted. */
  update (id: string, modifier: unknown): SplitRunnerView {
    return splitRunnerView(this.docs.update(id, modifier).doc)
  }

  /** Removes a runner's record; unknown id: 404. */
  delete (id: string): void {
    this.docs.delete(id)
  }

  /** Runners matching a MongoDB-style filter (matched against the redacted view), oldest first. */
  query (filter: unknown, opts: FindOptions = {}): SplitRunnerView[] {
    return this.docs.find(filter, opts).map(splitRunnerView)
  }
}
