import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { builtinModules } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildDesktop } from '../../main/build.ts'

let out: string
let files: string[]
before(async () => {
  out = join(mkdtempSync(join(tmpdir(), 'bm-desktop-build-')), 'dist')
  files = (await buildDesktop(out)).files
})
after(() => { rmSync(join(out, '..'), { recursive: true, force: true }) })

const requires = (file: string): string[] => [...readFileSync(join(out, file), 'utf8').matchAll(/\brequire\("([^"]+)"\)/g)].map(m => m[1])

test('every output the app needs is written', () => {
  for (const file of ['main.cjs', 'preload.cjs', 'connect/index.html', 'connect/connect.js', 'connect/connect.css']) assert.ok(files.includes(file), file)
  for (const file of files) assert.ok(existsSync(join(out, file)), file)
})

test('the sandboxed preload is one file requiring only electron', () => {
  assert.deepEqual([...new Set(requires('preload.cjs'))], ['electron'])
  const code = readFileSync(join(out, 'preload.cjs'), 'utf8')
  assert.match(code, /exposeInMainWorld\("blockmesh"/)
  assert.doesNotMatch(code, /\bimport\s*\(|zod/)
})

test('the main bundle requires electron and Node built-ins only (the agent and its dependencies stay out)', () => {
  const builtins = new Set([...builtinModules, ...builtinModules.map(m => `node:${m}`)])
  const external = requires('main.cjs').filter(m => m !== 'electron' && !builtins.has(m))
  assert.deepEqual(external, [])
  const code = readFileSync(join(out, 'main.cjs'), 'utf8')
  for (const heavy of ['libp2p', 'fastify', 'better-sqlite3', 'onnxruntime', 'agent/daemon.ts']) assert.equal(code.includes(heavy), false, heavy)
  // a CommonJS bundle has no import.meta: paths are found from the bundle's own location
  assert.doesNotMatch(code, /import\.meta/)
})

test('the connect page script is a self-contained browser script', () => {
  const code = readFileSync(join(out, 'connect', 'connect.js'), 'utf8')
  assert.deepEqual(requires('connect/connect.js'), [])
  assert.doesNotMatch(code, /^\s*(import|export)\s/m)
  assert.match(readFileSync(join(out, 'connect', 'index.html'), 'utf8'), /<script src="connect\.js" defer><\/script>/)
})
