import { z } from 'zod'
import type { Db } from '../db/database.ts'
import { DocumentCollection } from './documents.ts'
import type { FindOptions } from './documents.ts'

/** An MD5 as 32 hex digits; stored lowercase. */
export const Md5Schema = z.string().regex(/^[a-fA-F0-9]{32}$/, 'an MD5: 32 hex digits').transform(s => s.toLowerCase())

/**
 * A model layer (seed 002 `ModelLayerObject`): one piece of a split model, keyed by the MD5 of
 * the serialized layer so that equal layers are found and shared across model instantiations.
 */
export const ModelLayerSchema = z.object({
  /** primary key: MD5 of the serialized layer */
  model_layer_hash: Md5Schema,
  /** the model asset the layer was cut from */
  model_asset_id: z.string().min(1).max(256),
  /** the component spec or metadata used for this layer */
  model_component_registry_uri: z.string().min(1).max(2048),
  /** where the layer artifact is hosted (HTTP, S3, …) */
  model_layer_public_url: z.url().max(4096),
  /** free-form metadata (shape, precision, config, …) */
  model_layer_metadata: z.array(z.record(z.string().min(1).max(128), z.unknown())).max(256).default([]),
  /** rank of the layer in the split model's pipeline */
  model_layer_rank: z.number().int().min(0).max(1_000_000),
  /** number of splits the layer belongs to */
  model_world_size: z.number().int().min(1).max(1_000_000)
}).strict().superRefine((l, ctx) => {
  if (l.model_layer_rank >= l.model_world_size) {
    ctx.addIssue({ code: 'custom', path: ['model_layer_rank'], message: `must be less than model_world_size (${l.model_world_size})` })
  }
})
export type ModelLayer = z.output<typeof ModelLayerSchema>
export type ModelLayerInput = z.input<typeof ModelLayerSchema>

/**
 * The model layers registry (seed 002), in SQLite table `model_layers`, queried and updated with
 * MongoDB-style documents. Hashes are matched case-insensitively (stored lowercase).
 */
export class ModelLayerRegistry {
  readonly docs: DocumentCollection<ModelLayer>

  constructor (db: Db) {
    this.docs = new DocumentCollection<ModelLayer>({
      db,
      table: 'model_layers',
      keyColumn: 'hash',
      keyField: 'model_layer_hash',
      schema: ModelLayerSchema,
      noun: 'model layer',
      normalizeKey: k => k.toLowerCase()
    })
  }

  /** Stores a new layer; a hash already registered is a 409. */
  create (layer: ModelLayer): ModelLayer {
    return this.docs.insert(layer)
  }

  /** One layer by hash; unknown: 404. */
  get (hash: string): ModelLayer {
    return this.docs.get(hash)
  }

  /** Applies a MongoDB-style update document; the hash cannot change. */
  update (hash: string, modifier: unknown): ModelLayer {
    return this.docs.update(hash, modifier).doc
  }

  /** Removes a layer; unknown hash: 404. */
  delete (hash: string): void {
    this.docs.delete(hash)
  }

  /** Layers matching a MongoDB-style filter, oldest first. */
  query (filter: unknown, opts: FindOptions = {}): ModelLayer[] {
    return this.docs.find(filter, opts)
  }
}
