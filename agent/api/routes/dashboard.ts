import { readFileSync } from 'node:fs'
import type { FastifyInstance } from 'fastify'

/** Content-Security-Policy for every page the agent serves. */
export const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'"
].join('; ')

const ROOT = new URL('../../../renderer/status/', import.meta.url)
const FILES: Record<string, { file: string, type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/status.js': { file: 'status.js', type: 'text/javascript; charset=utf-8' },
  '/status.css': { file: 'status.css', type: 'text/css; charset=utf-8' }
}

/** Serves the status page from renderer/status (a fixed list of files, read once). */
export function registerDashboardRoutes (app: FastifyInstance): void {
  for (const [route, { file, type }] of Object.entries(FILES)) {
    const body = readFileSync(new URL(file, ROOT))
    app.get(route, async (_req, reply) => {
      reply.header('content-type', type).header('cache-control', 'no-cache')
      return body
    })
  }
}
