/**
 * Limits of request migration (issue 13), shared by the instance path (agent/serving/migrate.ts) and
 * the vDAG driver (agent/vdag/driver.ts): its own module so that the driver, which serving builds on,
 * does not import serving.
 */
export interface MigrationSettings {
  /** migrations of one generation, at most (0: none) */
  max: number
  /** a replay (prompt + tokens generated so far) is at most this many tokens */
  maxTokens: number
  /** how long to wait for another ready instance (or a stage's replacement) */
  waitMs: number
}

export const DEFAULT_MIGRATION_SETTINGS: MigrationSettings = { max: 3, maxTokens: 8192, waitMs: 60_000 }
