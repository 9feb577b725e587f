/** libp2p protocol that carries OpenAI requests to the agent running the chosen instance. */
export const INFER_PROTOCOL = '/blockmesh/infer/1.0.0'

/** Paths that may be tunnelled; anything else is refused. */
export const TUNNELLED_PATHS = new Set(['/v1/chat/completions', '/v1/completions'])

/** Set on requests that arrive through the tunnel: serve them here, never route them again. */
export const ROUTED_HEADER = 'x-blockmesh-routed'

/** Response header naming the instance that served the request (local or remote). */
export const INSTANCE_HEADER = 'x-blockmesh-instance'

/** Response header naming the peer whose instance answered (this agent's own for a local one). */
export const SERVED_BY_HEADER = 'x-blockmesh-served-by'
