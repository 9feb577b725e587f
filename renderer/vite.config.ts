import { defineConfig } from 'vite'
import { CSP } from '../agent/api/csp.ts'

// The dashboard: Preact components, bundled by Vite into renderer/dist, which
// every agent serves at `/` (and the desktop app loads from its agent).
// No inline scripts or styles in the output: the agent's CSP forbids them.
export default defineConfig({
  root: import.meta.dirname,
  base: '/',
  logLevel: 'warn',
  oxc: {
    jsx: { runtime: 'automatic', importSource: 'preact' }
  },
  // `npm run dev:renderer`: live-reloading UI against a running agent (BLOCKMESH_API, default the demo's first agent)
  server: {
    // the agent sends this CSP with every page (agent/api/csp.ts); the dev server sends the same
    headers: { 'content-security-policy': CSP },
    proxy: Object.fromEntries(['/api', '/v1', '/tasks', '/start_model_split_job', '/metrics'].map(p => [p, { target: process.env.BLOCKMESH_API ?? 'http://127.0.0.1:7700', changeOrigin: true }]))
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // the modulepreload polyfill would be an inline script in some setups; modern Chromium has no need of it
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 1024,
    reportCompressedSize: false
  }
})
