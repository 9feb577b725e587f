/**
 * Blockmesh splitter SDK: build a model-splitting program the split runner
 * can start (as a local process or a Kubernetes Job).
 *
 *   import { executeModelSplitter } from 'blockmesh/agent/splitter/sdk/index.ts'
 *   class MySplitter { constructor (ctx) { … } begin () { … } main (extra) { … } finish (extra) { … } }
 *   process.exitCode = await executeModelSplitter(MySplitter)
 */
export { Context, ContextError } from './context.ts'
export type { TaskData } from './context.ts'
export { executeModelSplitter } from './execute.ts'
export type { ModelSplitter, ModelSplitterClass, StepResult } from './execute.ts'
export { FileDownloader, LayerHash } from './utils.ts'
export { S3Manager } from './s3.ts'
export { Blocks, ModelLayerClient, RegistryError } from './clients.ts'
