import os from 'node:os'
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'

export const BENCHMARKS_FILE = new URL('../BENCHMARKS.md', import.meta.url)

export function machineLine (): string {
  let commit = 'unknown'
  // a copy of the tree measured on another machine names the commit it was copied from
  if (process.env.BLOCKMESH_BENCH_COMMIT != null) commit = process.env.BLOCKMESH_BENCH_COMMIT
  else try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim()
    // changes not committed yet (other than the files the benchmarks write) are part of what was measured
    const changed = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' }).split('\n')
      .map(l => l.slice(3).trim()).filter(f => f !== '' && f !== 'BENCHMARKS.md' && f !== 'README.md')
    if (changed.length > 0) commit += ` + local changes (${changed.join(', ')})`
  } catch { /* not a checkout */ }
  const cpu = os.cpus()[0]?.model.trim() ?? 'unknown CPU'
  return `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC · ${cpu}, ${os.availableParallelism()} cores, ` +
    `${Math.round(os.totalmem() / 1024 ** 3)} GiB RAM · ${os.type()} ${os.release()} · Node ${process.versions.node} · commit ${commit}`
}

const HEADER = `# Benchmarks

Written by \`npm run bench\` (each section by its own benchmark: \`npm run bench -- --only NAME\`).
Figures are measurements on the machine named in each section, not guarantees; comparisons are made side by side in one run.
`

/** Replaces (or appends) the section between <!-- bench:NAME --> markers, keeping the others. */
export function writeSection (name: string, title: string, body: string): void {
  const path = BENCHMARKS_FILE
  let text = existsSync(path) ? readFileSync(path, 'utf8') : HEADER
  const start = `<!-- bench:${name} -->`
  const end = `<!-- /bench:${name} -->`
  const section = `${start}\n## ${title}\n\n_Measured ${machineLine()}_\n\n${body}\n${end}`
  const re = new RegExp(`${start}[\\s\\S]*?${end}`)
  text = re.test(text) ? text.replace(re, section) : `${text.trimEnd()}\n\n${section}\n`
  writeFileSync(path, text.endsWith('\n') ? text : text + '\n')
}

const README_FILE = new URL('../README.md', import.meta.url)

/** Copies every benchmark section of BENCHMARKS.md into README.md's summary block, so the two agree. */
export function syncReadme (): void {
  if (!existsSync(BENCHMARKS_FILE) || !existsSync(README_FILE)) return
  const bench = readFileSync(BENCHMARKS_FILE, 'utf8')
  const sections = [...bench.matchAll(/<!-- bench:([\w-]+) -->\n([\s\S]*?)\n<!-- \/bench:\1 -->/g)]
    .map(m => m[2].replace(/^## /m, '### '))
  const readme = readFileSync(README_FILE, 'utf8')
  const block = `<!-- benchmarks-summary -->\n${sections.join('\n\n')}\n<!-- /benchmarks-summary -->`
  const next = readme.replace(/<!-- benchmarks-summary -->[\s\S]*?<!-- \/benchmarks-summary -->/, block)
  if (next !== readme) writeFileSync(README_FILE, next)
}
