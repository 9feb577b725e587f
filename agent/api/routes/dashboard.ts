import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { extname, join, relative, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'

/** Where `npm run build:renderer` (Vite) writes the dashboard. */
export const RENDERER_DIST = fileURLToPath(new URL('../../../renderer/dist/', import.meta.url))

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.json': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8'
}

/** Bounds on what is read into memory at start (a dashboard build is well under them). */
const MAX_FILES = 256
const MAX_TOTAL_BYTES = 32 * 1024 * 1024

interface Asset { body: Buffer, type: string, immutable: boolean }

/**
 * Reads the built dashboard into memory: a fixed set of files known at start,
 * so a request can only ever get one of them (no path handling per request).
 */
export function loadDashboard (dir: string = RENDERER_DIST): Map<string, Asset> {
  const assets = new Map<string, Asset>()
  if (!existsSync(join(dir, 'index.html'))) return assets
  let total = 0
  const walk = (d: string, depth: number): void => {
    if (depth > 4) return
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const path = join(d, entry.name)
      if (entry.isDirectory()) { walk(path, depth + 1); continue }
      const type = TYPES[extname(entry.name).toLowerCase()]
      if (!entry.isFile() || type == null) continue
      const body = readFileSync(path)
      total += body.length
      if (assets.size >= MAX_FILES || total > MAX_TOTAL_BYTES) throw new Error(`dashboard build in ${dir} is larger than ${MAX_FILES} files / ${MAX_TOTAL_BYTES} bytes`)
      const route = '/' + relative(dir, path).split(sep).join('/')
      // Vite names bundled assets by content hash: they never change under the same name
      assets.set(route, { body, type, immutable: route.startsWith('/assets/') })
    }
  }
  walk(dir, 0)
  const index = assets.get('/index.html')
  if (index != null) assets.set('/', index)
  return assets
}

const NOT_BUILT = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Blockmesh agent</title></head>
<body><h1>Blockmesh agent</h1><p>The dashboard is not built. In the repository run <code>npm run build:renderer</code>
(npm start and npm test build it), then reload. The HTTP API works without it: <a href="/api/health">/api/health</a>.</p></body></html>`

/** Serves the built dashboard (renderer/dist) at `/`; the CSP header comes from the API's onRequest hook. */
export function registerDashboardRoutes (app: FastifyInstance, dir?: string): void {
  const assets = loadDashboard(dir)
  if (assets.size === 0) {
    app.get('/', async (_req, reply) => reply.header('content-type', TYPES['.html']).header('cache-control', 'no-cache').send(NOT_BUILT))
    return
  }
  for (const [route, asset] of assets) {
    app.get(route, async (_req, reply) => {
      reply.header('content-type', asset.type)
        .header('cache-control', asset.immutable ? 'public, max-age=31536000, immutable' : 'no-cache')
      return asset.body
    })
  }
}
