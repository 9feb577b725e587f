/**
 * Bundles the desktop app: main/main.ts → dist/main.cjs, main/preload.ts →
 * dist/preload.cjs, and the connect page (connect.ts → connect.js, with its
 * HTML and CSS) → dist/connect/. Run: node main/build.ts [--out DIR].
 *
 * Each bundle's inputs are checked against what it may contain: the main
 * process must not pull in the agent (libp2p, fastify, SQLite, ONNX Runtime:
 * the agent runs as its own Node process), and a sandboxed preload can
 * require nothing but 'electron'.
 */
import { build as esbuild } from 'esbuild'
import type { Metafile } from 'esbuild'
import { copyFileSync, mkdirSync, rmSync } from 'node:fs'
import { builtinModules } from 'node:module'
import { join, relative, resolve, sep } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
export const DEFAULT_OUT = join(ROOT, 'main', 'dist')

/** A bundle took in a module it must not contain, or requires one it cannot have. */
export class BundleContentError extends Error {
  constructor (bundle: string, problems: string[]) {
    super(`${bundle}: ${problems.join('; ')}`)
    this.name = 'BundleContentError'
  }
}

/** Source files (relative to the repository, "/"-separated) each bundle may contain. */
const MAIN_INPUTS = [
  /^main\/(?!build\.ts$|connect\/)[^/]+\.ts$/,
  // constants and types only: the agent itself is a separate process
  /^agent\/config\.ts$/,
  // the ready-file wait shared with the demo and the tests (node:fs only)
  /^agent\/ready\.ts$/,
  /^agent\/api\/csp\.ts$/,
  /^agent\/cli\/require-node\.mjs$/,
  /^node_modules\/zod\//
]
const PRELOAD_INPUTS = [/^main\/preload\.ts$/, /^main\/ipc-channels\.ts$/]
const CONNECT_INPUTS = [/^main\/connect\/connect\.ts$/]

const NODE_BUILTINS = new Set([...builtinModules, ...builtinModules.map(m => `node:${m}`)])

function check (bundle: string, meta: Metafile, inputs: RegExp[], mayImport: (path: string) => boolean): void {
  const problems: string[] = []
  for (const path of Object.keys(meta.inputs)) {
    const rel = relative(ROOT, resolve(ROOT, path)).split(sep).join('/')
    if (!inputs.some(re => re.test(rel))) problems.push(`contains ${rel}`)
  }
  for (const output of Object.values(meta.outputs)) {
    for (const imp of output.imports) if (imp.external && !mayImport(imp.path)) problems.push(`requires ${imp.path}`)
  }
  if (problems.length > 0) throw new BundleContentError(bundle, problems)
}

export interface BuildResult {
  outDir: string
  files: string[]
}

export async function buildDesktop (outDir: string = DEFAULT_OUT): Promise<BuildResult> {
  rmSync(outDir, { recursive: true, force: true })
  mkdirSync(join(outDir, 'connect'), { recursive: true })
  const common = { absWorkingDir: ROOT, bundle: true, metafile: true, logLevel: 'warning', legalComments: 'none', sourcemap: 'linked' } as const

  const main = await esbuild({
    ...common,
    entryPoints: [join(ROOT, 'main', 'main.ts')],
    outfile: join(outDir, 'main.cjs'),
    platform: 'node',
    format: 'cjs',
    target: 'node22',
    external: ['electron'],
    // the sources find files relative to import.meta.url (as ES modules run from source do); in a CommonJS bundle that is the bundle's own URL
    define: { 'import.meta.url': '__bundle_url' },
    banner: { js: '"use strict";\nconst __bundle_url = require("node:url").pathToFileURL(__filename).href;' }
  })
  check('main.cjs', main.metafile, MAIN_INPUTS, path => path === 'electron' || NODE_BUILTINS.has(path))

  const preload = await esbuild({
    ...common,
    entryPoints: [join(ROOT, 'main', 'preload.ts')],
    outfile: join(outDir, 'preload.cjs'),
    platform: 'node',
    format: 'cjs',
    target: 'node22',
    external: ['electron']
  })
  check('preload.cjs', preload.metafile, PRELOAD_INPUTS, path => path === 'electron')

  const connect = await esbuild({
    ...common,
    entryPoints: [join(ROOT, 'main', 'connect', 'connect.ts')],
    outfile: join(outDir, 'connect', 'connect.js'),
    platform: 'browser',
    format: 'iife',
    // Electron 45 is Chromium 140
    target: 'chrome140'
  })
  check('connect.js', connect.metafile, CONNECT_INPUTS, () => false)
  for (const file of ['index.html', 'connect.css']) copyFileSync(join(ROOT, 'main', 'connect', file), join(outDir, 'connect', file))

  const files = ['main.cjs', 'main.cjs.map', 'preload.cjs', 'preload.cjs.map', 'connect/connect.js', 'connect/connect.js.map', 'connect/index.html', 'connect/connect.css']
  return { outDir, files }
}

if (process.argv[1] != null && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const i = process.argv.indexOf('--out')
  const out = i > 0 && process.argv[i + 1] != null ? resolve(process.argv[i + 1]) : DEFAULT_OUT
  buildDesktop(out).then(result => {
    process.stdout.write(`desktop app built in ${relative(process.cwd(), result.outDir) || '.'}: ${result.files.join(', ')}\n`)
  }, (err: unknown) => {
    process.stderr.write(`${(err as Error).message}\n`)
    process.exit(1)
  })
}
