/**
 * The built-in ONNX pipeline splitter (container_image "blockmesh/onnx-splitter"),
 * written on the splitter SDK. Run by the split runner with the seed's
 * environment; cuts the model into `world_size` stages, checks that the
 * stages chained reproduce the model's logits, registers each stage in the
 * model layers registry (MD5 as its key), uploads them to S3 when asked,
 * and reports a model plan.
 *
 * model_split_config (all optional):
 *   balance: "params" (default: equal stages) | "capacity"; capacity: [weights per stage]
 *   cost: "measured" (default: layers by the bytes a step reads, the embeddings and LM head timed against
 *     a layer on this machine, ./calibrate.ts) | "params" (bytes a step reads, for every part)
 *   vdag_name, context_length, verify_prompt, tolerance (default 1e-4)
 *   md5: expected MD5 of the source model
 *   tokenizer: the source component's tokenizer spec, given to the stage components and the vDAG
 *   block: extra block-spec fields for the stage blocks (policy, maxBatch, …)
 *   s3: { bucket, prefix?, endpoint?, region?, public_url_base? } (credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { isAbsolute, join } from 'node:path'
import { pathToFileURL, fileURLToPath } from 'node:url'
import { Context, FileDownloader, LayerHash, ModelLayerClient, RegistryError, S3Manager, executeModelSplitter } from './sdk/index.ts'
import type { StepResult } from './sdk/index.ts'
import { splitModel } from './onnx-split.ts'
import type { StepCosts } from './onnx-split.ts'
import { calibrate, inLayers } from './calibrate.ts'
import { verifySplit } from './verify.ts'
import { buildPlan } from './plan.ts'
import type { ModelPlan, PlanStage } from './plan.ts'
import { decodeModel } from '../model/onnx.ts'
import type { ModelProto } from '../model/onnx.ts'
import { ByteTokenizer } from '../model/tokenizer.ts'
import { BuiltinSplitConfigSchema } from './config.ts'
import type { BuiltinSplitConfig } from './config.ts'
import { formatIssues } from '../errors.ts'

interface Begun { sourcePath: string, md5: string }
/** How the cut was weighed (a split task's `result.balance`): by measured step time (the layer equivalents of the parts around the layers) or by bytes. */
export interface SplitBalance { cost: 'measured' | 'params', ranges: Array<[number, number]>, pre_layers?: number, post_layers?: number }
interface Split extends Begun { stages: PlanStage[], layers: number, contextLength: number, verification: Awaited<ReturnType<typeof verifySplit>>, balance: SplitBalance }

/** A split task's result as the built-in splitter writes it (GET /tasks/:id `result`; other splitters may write less). */
export interface SplitTaskResult {
  status: 'done'
  model_name: string
  world_size: number
  output_dir: string
  /** the plan, also as a file */
  artifact: string
  /** the largest difference between the chained stages' logits and the whole model's */
  max_abs_diff: number
  balance: SplitBalance
  plan: ModelPlan
}

export class OnnxPipelineSplitter {
  private readonly ctx: Context
  private readonly config: BuiltinSplitConfig
  /** why model_split_config was refused (config.ts), reported by begin */
  private readonly configError: string | null

  constructor (ctx: Context) {
    this.ctx = ctx
    const parsed = BuiltinSplitConfigSchema.safeParse(ctx.taskData.model_split_config ?? {})
    this.config = parsed.success ? parsed.data : {}
    this.configError = parsed.success ? null : formatIssues(parsed.error.issues).map(i => `model_split_config.${i.field}: ${i.message}`).join('; ')
  }

  async begin (): Promise<StepResult<Begun>> {
    if (this.configError != null) return [false, this.configError]
    const url = this.ctx.taskData.model_download_url
    mkdirSync(this.ctx.outputDir, { recursive: true })
    let sourcePath = url.startsWith('file://') ? fileURLToPath(url) : url
    if (!isAbsolute(sourcePath)) {
      sourcePath = join(this.ctx.outputDir, 'source.onnx')
      await this.ctx.progress(0.05, `downloading ${url}`)
      const d = new FileDownloader()
      if (!await d.download(url, sourcePath)) return [false, d.lastError ?? 'download failed']
    }
    const md5 = await new LayerHash().getHash(sourcePath)
    if (md5 == null) return [false, `cannot read the model at ${sourcePath}`]
    if (this.config.md5 != null && this.config.md5.toLowerCase() !== md5) return [false, `model MD5 is ${md5}, expected ${this.config.md5}`]
    return [true, { sourcePath, md5 }]
  }

  async main (extra: Begun): Promise<StepResult<Split>> {
    const world = this.ctx.taskData.world_size
    await this.ctx.progress(0.2, `splitting into ${world} stages`)
    const bytes = readFileSync(extra.sourcePath)
    const weights = this.config.balance === 'capacity' ? this.config.capacity : undefined
    const cost = this.config.cost ?? 'measured'
    let model: ModelProto
    try { model = decodeModel(bytes) } catch (err) { return [false, (err as Error).message] }
    const costs = cost === 'measured' && world > 1 ? await this.measuredCosts(model, world) : undefined
    let balance: SplitBalance
    let split
    try {
      split = splitModel(model, world, weights, costs)
      balance = costs != null ? { cost: 'measured', ranges: split.ranges, pre_layers: inLayers(costs, costs.pre), post_layers: inLayers(costs, costs.post) } : { cost: 'params', ranges: split.ranges }
    } catch (err) {
      return [false, (err as Error).message]
    }
    const stages: PlanStage[] = []
    for (const s of split.stages) {
      const path = join(this.ctx.outputDir, `${this.ctx.taskData.model_name}-stage-${s.index}-of-${world}.onnx`)
      writeFileSync(path, s.bytes)
      stages.push({ rank: s.index, layers: s.layers, model_layer_hash: s.md5, url: pathToFileURL(path).toString(), size_bytes: s.bytes.length, parameter_bytes: s.parameterBytes, inputs: s.inputs, outputs: s.outputs })
    }
    await this.ctx.progress(0.6, 'verifying: stages chained against the whole model')
    const prompt = new ByteTokenizer().encode(this.config.verify_prompt ?? 'The harbour town woke before the sun.', { bos: true })
    const verification = await verifySplit(bytes, split.stages.map(s => s.bytes), prompt, 4)
    const tolerance = this.config.tolerance ?? 1e-4
    if (!(verification.maxAbsDiff <= tolerance && verification.decodeMaxAbsDiff <= tolerance && verification.greedyEqual)) {
      return [false, `verification failed: max abs diff ${verification.maxAbsDiff} (decode ${verification.decodeMaxAbsDiff}) over tolerance ${tolerance}, greedy equal ${String(verification.greedyEqual)}`]
    }
    return [true, { ...extra, stages, layers: split.layers, contextLength: contextLengthOf(model, this.config.context_length), verification, balance }]
  }

  /**
   * The stages' costs timed on this machine (./calibrate.ts), for a stage's decode step of a micro-batch:
   * maxBatch rows shared by as many micro-batches as stages. Undefined (balanced by bytes) when the model
   * is too small to time or ONNX Runtime cannot run its probes (such a model fails verification anyway).
   */
  private async measuredCosts (model: ModelProto, world: number): Promise<StepCosts | undefined> {
    const maxBatch = Number(this.config.block?.maxBatch ?? 8)
    const batch = Math.max(1, Math.ceil((Number.isFinite(maxBatch) && maxBatch > 0 ? maxBatch : 8) / world))
    try {
      const c = await calibrate(model, { batch })
      if (c == null) return undefined
      await this.ctx.progress(0.3, `balanced by measured step time (batch ${c.batch}, ${c.past} cached positions): before the layers ${inLayers(c.costs, c.costs.pre)} layer(s), after them ${inLayers(c.costs, c.costs.post)} (by bytes ${inLayers(c.bytes, c.bytes.pre)} and ${inLayers(c.bytes, c.bytes.post)})`)
      return c.costs
    } catch (err) {
      await this.ctx.progress(0.3, `step times not measured (${(err as Error).message}): balanced by the bytes a step reads`)
      return undefined
    }
  }

  async finish (extra: Split): Promise<StepResult<Record<string, unknown>>> {
    const s3 = this.config.s3
    if (s3 != null) {
      await this.ctx.progress(0.8, `uploading ${extra.stages.length} stages to s3://${s3.bucket}`)
      const m = new S3Manager(process.env.AWS_ACCESS_KEY_ID ?? '', process.env.AWS_SECRET_ACCESS_KEY ?? '', s3.region ?? 'us-east-1', { endpoint: s3.endpoint })
      for (const st of extra.stages) {
        const key = `${s3.prefix ?? ''}${st.model_layer_hash}.onnx`
        if (!await m.uploadFile(fileURLToPath(st.url), s3.bucket, key)) return [false, m.lastError ?? 'upload failed']
        if (s3.public_url_base != null) st.url = `${s3.public_url_base.replace(/\/$/, '')}/${key}`
      }
    }
    const plan = buildPlan({
      modelName: this.ctx.taskData.model_name,
      sourceMd5: extra.md5,
      layers: extra.layers,
      stages: extra.stages,
      contextLength: extra.contextLength,
      vdagName: this.config.vdag_name,
      block: this.config.block,
      verification: extra.verification,
      tokenizer: this.config.tokenizer
    })
    await this.ctx.progress(0.9, 'registering model layers')
    const layers = new ModelLayerClient(this.ctx.modelLayersRegistryUrl, this.ctx.token)
    for (const st of extra.stages) {
      try {
        await layers.createModelLayer({
          model_layer_hash: st.model_layer_hash,
          model_asset_id: this.ctx.taskData.model_name,
          model_component_registry_uri: `${plan.components[st.rank].name as string}:${plan.components[st.rank].version as string}`,
          model_layer_public_url: st.url,
          model_layer_metadata: [{ layers: st.layers, size_bytes: st.size_bytes, parameter_bytes: st.parameter_bytes, source_md5: extra.md5 }],
          model_layer_rank: st.rank,
          model_world_size: extra.stages.length
        })
      } catch (err) {
        // the same stage registered before (same MD5): it is the same layer, reused
        if (!(err instanceof RegistryError && err.status === 409)) return [false, (err as Error).message]
      }
    }
    const artifact = join(this.ctx.outputDir, 'plan.json')
    writeFileSync(artifact, JSON.stringify(plan, null, 2) + '\n')
    const result: SplitTaskResult = {
      status: 'done',
      model_name: this.ctx.taskData.model_name,
      world_size: extra.stages.length,
      output_dir: this.ctx.outputDir,
      artifact,
      max_abs_diff: extra.verification.maxAbsDiff,
      balance: extra.balance,
      plan
    }
    return [true, { ...result }]
  }
}

/** The model's context: model_split_config.context_length, else the generator's metadata, else 2048. */
function contextLengthOf (model: ModelProto, configured: unknown): number {
  if (typeof configured === 'number' && configured > 0) return configured
  try {
    const spec = model.metadataProps?.find(p => p.key === 'blockmesh.spec')?.value
    if (spec != null) return (JSON.parse(spec) as { maxPositions: number }).maxPositions
  } catch { /* not a generated model */ }
  return 2048
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  process.exitCode = await executeModelSplitter(OnnxPipelineSplitter)
}
