/**
 * Folder-level import cycles among the agent, the mesh, the shared contracts and the dashboard.
 * Run: node scripts/import-cycles.ts   (exit 1 and a list when there is a cycle; test/unit/import-cycles.test.ts)
 *
 * Imports flow one way (renderer → HTTP API contracts → agent → mesh), and inside the agent each folder is a
 * room with one job. Two folders that import each other (directly or around a loop) are one room in two
 * places: neither can be read, tested or moved without the other. This finds such loops from the source
 * text alone: every `import … from '…'`, `export … from '…'` and `import '…'` with a relative specifier,
 * type-only imports included (a folder that needs another's types depends on it as much), each file mapped
 * to its folder. Files directly in a root (agent/daemon.ts, agent/errors.ts, mesh/node.ts…) are rooms of
 * their own: a composition root and shared leaves live there, and lumping them together would make every
 * folder that imports errors.ts part of a loop with the daemon. Files of one folder may import each other
 * freely, and so may a folder and its own subfolders (agent/api/server.ts and agent/api/routes/, agent/model/
 * and agent/model/gguf/): one room's inner structure. A parent folder's loose files are that folder's room,
 * so agent/model/import.ts importing agent/splitter/ while the splitter imports agent/model/onnx.ts is a cycle.
 *
 * A second rule: contracts/ (the API's answer types) is types only for the code that runs, so agent/ and
 * mesh/ import it with `import type` and nothing of it is needed at run time (the desktop app ships agent/
 * and mesh/ only).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

/** The folders scanned (relative to the repository, "/"-separated). */
export const ROOTS = ['agent', 'mesh', 'contracts', 'renderer/src']

const SOURCE = /\.(ts|tsx|mts)$/
const IMPORT = /(?:^|\n)\s*(import|export)\s+(type\s+)?(?:[^'";]*?\sfrom\s*)?['"]([^'"\n]+)['"]/g

export interface ImportEdge {
  /** importing file, relative to the repository */
  from: string
  /** imported file, relative to the repository (as resolved from the specifier) */
  to: string
  typeOnly: boolean
}

/** A cycle: the folders that import their way back to themselves, and one import for each step between two of them. */
export interface FolderCycle { folders: string[], imports: ImportEdge[] }

/** The relative imports in a file's text (what the IMPORT pattern sees; comments are not stripped, so a commented import counts). */
export function importsOf (file: string, text: string): ImportEdge[] {
  const out: ImportEdge[] = []
  for (const m of text.matchAll(IMPORT)) {
    const spec = m[3]
    if (!spec.startsWith('.')) continue
    const typeOnly = m[2] != null
    out.push({ from: file, to: relative(ROOT, resolve(ROOT, dirname(file), spec)).split(sep).join('/'), typeOnly })
  }
  return out
}

/** The room a file belongs to: its folder; or the file itself when it lies directly in a root. */
export function roomOf (file: string, roots: string[] = ROOTS): string | undefined {
  const root = roots.find(r => file.startsWith(r + '/'))
  if (root == null) return undefined
  const folder = dirname(file)
  return folder === root ? file : folder
}

/** A folder and its own subfolders are one room's inner structure: imports between them make no cycle. */
function nested (a: string, b: string): boolean {
  return a.startsWith(b + '/') || b.startsWith(a + '/')
}

/** Every source file under the roots (relative paths), with its text. */
export function readSources (repo: string = ROOT, roots: string[] = ROOTS): Map<string, string> {
  const files = new Map<string, string>()
  const walk = (dir: string): void => {
    for (const e of readdirSync(join(repo, dir), { withFileTypes: true })) {
      const path = `${dir}/${e.name}`
      if (e.isDirectory()) { if (e.name !== 'node_modules' && e.name !== 'dist') walk(path); continue }
      if (e.isFile() && SOURCE.test(e.name) && !e.name.endsWith('.d.ts')) files.set(path, readFileSync(join(repo, path), 'utf8'))
    }
  }
  for (const r of roots) if (existsSync(join(repo, r))) walk(r)
  return files
}

/** Folder cycles in the given sources: one per strongly connected set of two or more rooms. */
export function folderCycles (sources: Map<string, string>, roots: string[] = ROOTS): FolderCycle[] {
  // room graph, with one import kept per edge to name it in the report
  const edges = new Map<string, Map<string, ImportEdge>>()
  for (const [file, text] of sources) {
    const from = roomOf(file, roots)
    if (from == null) continue
    for (const imp of importsOf(file, text)) {
      const to = roomOf(imp.to, roots)
      if (to == null || to === from || nested(from, to)) continue
      let m = edges.get(from)
      if (m == null) { m = new Map(); edges.set(from, m) }
      if (!m.has(to)) m.set(to, imp)
    }
  }
  // files of one folder importing each other are one room's business, not a cycle between folders
  const oneFolder = (scc: string[]): boolean => scc.every(r => SOURCE.test(r) && dirname(r) === dirname(scc[0]))
  return stronglyConnected(edges).filter(c => c.length > 1 && !oneFolder(c)).map(scc => {
    const inside = new Set(scc)
    const imports: ImportEdge[] = []
    for (const a of [...scc].sort()) for (const [b, imp] of [...(edges.get(a) ?? new Map<string, ImportEdge>())].sort(([x], [y]) => x.localeCompare(y))) if (inside.has(b)) imports.push(imp)
    return { folders: scc.sort(), imports }
  })
}

/** Tarjan's strongly connected components over the room graph (iterative: no recursion depth limit). */
function stronglyConnected (edges: Map<string, Map<string, ImportEdge>>): string[][] {
  const nodes = new Set<string>([...edges.keys(), ...[...edges.values()].flatMap(m => [...m.keys()])])
  const index = new Map<string, number>()
  const low = new Map<string, number>()
  const onStack = new Set<string>()
  const stack: string[] = []
  const out: string[][] = []
  let next = 0
  for (const start of nodes) {
    if (index.has(start)) continue
    const work: Array<{ node: string, targets: string[], i: number }> = []
    const enter = (n: string): void => {
      index.set(n, next); low.set(n, next); next++
      stack.push(n); onStack.add(n)
      work.push({ node: n, targets: [...(edges.get(n)?.keys() ?? [])], i: 0 })
    }
    enter(start)
    while (work.length > 0) {
      const top = work[work.length - 1]
      if (top.i < top.targets.length) {
        const t = top.targets[top.i++]
        if (!index.has(t)) enter(t)
        else if (onStack.has(t)) low.set(top.node, Math.min(low.get(top.node) as number, index.get(t) as number))
        continue
      }
      work.pop()
      if (work.length > 0) { const parent = work[work.length - 1].node; low.set(parent, Math.min(low.get(parent) as number, low.get(top.node) as number)) }
      if (low.get(top.node) === index.get(top.node)) {
        const scc: string[] = []
        let n: string
        do { n = stack.pop() as string; onStack.delete(n); scc.push(n) } while (n !== top.node)
        out.push(scc)
      }
    }
  }
  return out
}

/** Imports of contracts/ from code that runs (agent/, mesh/) that are not `import type`. */
export function contractValueImports (sources: Map<string, string>): ImportEdge[] {
  const out: ImportEdge[] = []
  for (const [file, text] of sources) {
    if (!file.startsWith('agent/') && !file.startsWith('mesh/')) continue
    for (const imp of importsOf(file, text)) if (imp.to.startsWith('contracts/') && !imp.typeOnly) out.push(imp)
  }
  return out
}

export function describe (c: FolderCycle): string {
  return `${c.folders.join(' ↔ ')}\n${c.imports.map(i => `    ${i.from} → ${i.to}${i.typeOnly ? ' (type)' : ''}`).join('\n')}`
}

if (process.argv[1] != null && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const sources = readSources()
  const cycles = folderCycles(sources)
  const values = contractValueImports(sources)
  for (const c of cycles) process.stdout.write(`cycle: ${describe(c)}\n`)
  for (const v of values) process.stdout.write(`contracts imported as a value (use import type): ${v.from} → ${v.to}\n`)
  process.stdout.write(`${sources.size} files in ${ROOTS.join(', ')}: ${cycles.length} folder cycle(s), ${values.length} value import(s) of contracts/\n`)
  process.exitCode = cycles.length > 0 || values.length > 0 ? 1 : 0
}
