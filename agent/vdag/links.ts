/** Names that moved to ./pipeline.ts (the ring pipeline replaced the per-sequence link chain); kept for importers not yet moved. */
export { LogprobSchema, SamplingSchema, MAX_MASK_BASE64 } from './pipeline.ts'
export type { LocalStages, RouteHop, StageLink, StageStepInput, StageStepResult } from './pipeline.ts'
