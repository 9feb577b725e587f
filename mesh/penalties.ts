/**
 * The old name of the peer score: `Penalties` is `PeerScore` (mesh/peer-score.ts), kept so callers written
 * against it (the tensor service, tests) keep compiling. `strike(peer, reason)` counts as a malformed frame.
 */
export { PeerScore as Penalties } from './peer-score.ts'
export type { PeerScoreInit as PenaltyInit } from './peer-score.ts'
