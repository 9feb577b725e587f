/**
 * model_split_config of the built-in ONNX splitter (container_image "blockmesh/onnx-splitter", program.ts):
 * checked when the job is started (POST /start_model_split_job answers 400 naming the field) and again by the
 * program itself (a task started another way). Unknown keys are refused, so a misspelt option is not ignored.
 * Other splitter programs read their own model_split_config.
 */
import { z } from 'zod'
import { TokenizerSchema } from '../registry/components.ts'

export const BuiltinSplitConfigSchema = z.object({
  /** the vDAG's name (default: MODEL-pipeline) */
  vdag_name: z.string().min(1).max(64).optional(),
  /** the model file's expected MD5 */
  md5: z.string().regex(/^[0-9a-fA-F]{32}$/, '32 hex digits').optional(),
  /** how stages share the layers: evenly by cost, or by the capacity weights */
  balance: z.enum(['params', 'capacity']).optional(),
  /** balance "capacity": one positive weight per stage */
  capacity: z.array(z.number().positive().finite()).min(1).max(64).optional(),
  /** what a layer costs: a timed decode step (default) or the bytes a step reads */
  cost: z.enum(['measured', 'params']).optional(),
  /** the prompt the split is verified on, against the whole model */
  verify_prompt: z.string().min(1).max(4096).optional(),
  /** the largest logit difference the verification accepts */
  tolerance: z.number().positive().max(1).optional(),
  /** positions per sequence of the vDAG (default: the model's own) */
  context_length: z.number().int().min(16).max(1_048_576).optional(),
  /** the source component's tokenizer, carried into the plan */
  tokenizer: TokenizerSchema.optional(),
  /** settings of the stage blocks (a block spec's fields; checked when the plan is deployed) */
  block: z.record(z.string().max(64), z.unknown()).optional(),
  /** upload the stage files to S3 (or an S3-compatible store) instead of serving them from this agent */
  s3: z.object({
    bucket: z.string().min(1).max(255),
    prefix: z.string().max(1024).optional(),
    endpoint: z.string().url().optional(),
    region: z.string().max(64).optional(),
    public_url_base: z.string().url().optional()
  }).strict().optional()
}).strict().refine(c => c.balance !== 'capacity' || c.capacity != null, { message: 'balance "capacity" needs capacity (one weight per stage)', path: ['capacity'] })

export type BuiltinSplitConfig = z.output<typeof BuiltinSplitConfigSchema>
