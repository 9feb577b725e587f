/**
 * Models travel peer to peer (issue 15: "time to deploy a model on 1, 2 and 4 new hosts with the file on one
 * peer: mesh fetch vs every host fetching from one HTTP server; per-host throughput over the mesh ÷ raw TCP
 * for the same bytes").
 *
 * The file: a generated model, the ~100M preset's shape with 4 layers instead of 14 (~30M parameters, ~116 MiB
 * of ONNX, cached in .blockmesh/bench-models like the other benchmarks' models). Every "box" is a process on
 * this machine, linked over loopback; what makes them boxes is that each one's uplink is capped at the same
 * rate R (UPLINK, 25 MiB/s), the issue's point being that the first box's uplink is the bottleneck when every
 * new host pulls from it. R and the file are this small so that the uplinks, not this machine's cores, bind:
 * a host's fetch costs ~12 CPU-ms per MiB (chunk SHA-256, writes, the whole file's MD5 and SHA-256, Noise)
 * and its source ~5, so on 2 cores four hosts at 100 MiB/s would measure the CPU, not the links (and the
 * HTTP runs at R take N·S/R: 4 hosts × 386 MiB at 25 MiB/s would be a minute a run). CPU seconds of every
 * process taking part are recorded too (/proc for the agents and servers, process.cpuUsage in the clients),
 * so a reader can see when the cores were the limit.
 *  - mesh: seed agent A holds the file (a component created on A, so the file joins A's content store);
 *    N = 1, 2, 4 host agents, each in a mount namespace of its own where A's data folder and the model
 *    folder are empty tmpfs mounts (AgentSpec.hide: they cannot read the file off the disk, only fetch it),
 *    all asked `POST /api/content/fetch {component}` at the same moment. A and the hosts run with
 *    `--content-upload-rate R` (one token bucket on all each agent uploads). Timed at the client: until every
 *    host has answered (the file complete in its store: every chunk SHA-256-checked, then the whole file's MD5
 *    and SHA-256), and until each did; the answers' `bySource` say how many bytes came from A and how many
 *    from the other hosts. Between runs the hosts delete the file and the benchmark waits until every host's
 *    directory lists A alone as a holder.
 *  - HTTP: one small Node HTTP server in a process of its own (this file, run as a child) serving the file
 *    with its upload capped at R by the same token bucket class the agents use (1 MiB slices, no Range);
 *    N downloader processes (this file as a child again) each fetch it at once with the agent's own origin
 *    downloader (`materializeModel`: download to a .part file, then the MD5 checked), into a fresh folder.
 *    Timed at the client from the moment all are told to start until each reports.
 *  - throughput: a second, separate mesh of two agents with no upload cap: one host fetching the file from
 *    the seed (timed as above), against raw TCP on loopback (a `net` socket from one child process to
 *    another, the same bytes read from the same file): once with the receiver discarding the bytes, once
 *    with the receiver doing the store's work (SHA-256 of each 1 MiB chunk, written at its offset in a file,
 *    then the whole file read back for MD5 and SHA-256). MiB/s each, and the ratios.
 * Rounds: 3 (1 with --quick), the paths interleaved in each round, medians reported. The whole run takes
 * about 3 minutes (1½ with --quick) on 2 cores.
 * Not measured here: the time to a ready block (fetch + load); the fetch is the part the mesh changes.
 *
 *   npm run bench -- --only content        (root, for the hosts' mount namespaces: canHide())
 */
import os from 'node:os'
import http from 'node:http'
import net from 'node:net'
import { execFileSync, spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { createReadStream, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { AgentProcess, canHide, stopAll, tempDir, until } from '../test/helpers/agents.ts'
import { componentSpec } from '../test/helpers/models.ts'
import { ensureGeneratedModel } from '../agent/model/cache.ts'
import { ModelSpecSchema, PRESETS, parameterCount } from '../agent/model/spec.ts'
import { materializeModel } from '../agent/model/source.ts'
import { TokenBucket } from '../agent/content/service.ts'
import { median } from './stats.ts'

const MiB = 1024 * 1024
/** Every box's uplink: the seed, the hosts and the HTTP server upload at most this many bytes per second. */
export const UPLINK = 25 * MiB
/** The hosts fetched to, per run. */
const SIZES = [1, 2, 4]
/** Slices the HTTP server and the raw TCP receiver work in (the store's chunk size for this file). */
const SLICE = MiB
const SELF = fileURLToPath(import.meta.url)

export interface ContentRow {
  hosts: number
  /** s until every host has the file, one figure per round */
  meshS: number[]
  httpS: number[]
  /** s until each host had it (sorted), per round */
  meshEach: number[][]
  httpEach: number[][]
  /** bytes the hosts received from the seed, and in all, per round */
  fromSeed: number[]
  total: number[]
  /** CPU s (user + system) of every process taking part: the seed and the hosts; the HTTP server and the downloaders */
  meshCpu: number[]
  httpCpu: number[]
}

export interface ContentThroughput {
  /** MiB/s per round */
  mesh: number[]
  tcp: number[]
  tcpStore: number[]
  /** CPU s of sender + receiver, per round */
  meshCpu: number[]
  tcpCpu: number[]
  tcpStoreCpu: number[]
}

export interface ContentResult {
  cores: number
  cpu: string
  date: string
  fileBytes: number
  model: string
  parameters: number
  uplink: number
  rounds: number
  /** how the hosts were kept from the seed's files ('hidden') or why they could not be */
  isolation: string
  rows: ContentRow[]
  throughput: ContentThroughput
  /** "peer misbehaved" lines in the agents' logs (a peer struck for an offence), and the first few */
  offences: number
  offenceSamples: string[]
  /** "peer banned" lines in the agents' logs */
  bans: number
  skipped?: string
}

// ---- the child processes: this file run as `node bench/content.ts <mode> ...`

/** CPU s (user + system) of this process since `c0`. */
function cpuSince (c0: NodeJS.CpuUsage): number {
  const c = process.cpuUsage(c0)
  return (c.user + c.system) / 1e6
}

function say (msg: Record<string, unknown>): void { process.stdout.write(JSON.stringify(msg) + '\n') }

/** Resolves when the parent writes `go` on stdin. */
async function go (): Promise<void> {
  const rl = createInterface({ input: process.stdin })
  for await (const line of rl) if (line.trim() === 'go') { rl.close(); return }
  throw new Error('stdin closed before go')
}

async function childMain (mode: string, args: string[]): Promise<void> {
  if (mode === 'http-server') {
    const [path, rate] = [args[0], Number(args[1])]
    const size = statSync(path).size
    const bucket = rate > 0 ? new TokenBucket(rate) : undefined
    const server = http.createServer((req, res) => {
      void (async () => {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(size) })
        const fh = await open(path)
        try {
          for (let off = 0; off < size && !res.destroyed; off += SLICE) {
            const b = Buffer.allocUnsafe(Math.min(SLICE, size - off))
            await fh.read(b, 0, b.length, off)
            await bucket?.take(b.length)
            if (!res.write(b)) await Promise.race([once(res, 'drain'), once(res, 'close')])
          }
          res.end()
        } finally { await fh.close() }
      })().catch(() => { res.destroy() })
    })
    server.listen(0, '127.0.0.1', () => { say({ ready: true, port: (server.address() as net.AddressInfo).port }) })
    return
  }
  if (mode === 'http-get') {
    const [url, md5, dir] = args
    say({ ready: true })
    await go()
    const c0 = process.cpuUsage()
    const m = await materializeModel({ url, md5 }, { cacheDir: dir, maxBytes: 2 ** 40, attempts: 1 })
    say({ done: true, cpu: cpuSince(c0), bytes: m.sizeBytes, md5: m.md5 })
    process.exit(0)
  }
  if (mode === 'tcp-send') {
    const path = args[0]
    const server = net.createServer(sock => { createReadStream(path, { highWaterMark: SLICE }).pipe(sock) })
    server.listen(0, '127.0.0.1', () => { say({ ready: true, port: (server.address() as net.AddressInfo).port }) })
    return
  }
  if (mode === 'tcp-recv') {
    const [port, work, dir] = [Number(args[0]), args[1], args[2]]
    say({ ready: true })
    await go()
    const c0 = process.cpuUsage()
    const file = join(dir, 'received')
    const fh = work === 'store' ? await open(file, 'w') : undefined
    let bytes = 0
    let pending: Buffer = Buffer.alloc(0)
    let offset = 0
    const writes: Array<Promise<unknown>> = []
    const flush = (chunk: Buffer): void => {
      createHash('sha256').update(chunk).digest('base64')
      writes.push(fh!.write(chunk, 0, chunk.length, offset))
      offset += chunk.length
    }
    const sock = net.connect(port, '127.0.0.1')
    for await (const data of sock) {
      const b = data as Buffer
      bytes += b.length
      if (fh == null) continue
      pending = pending.length === 0 ? b : Buffer.concat([pending, b])
      while (pending.length >= SLICE) {
        flush(pending.subarray(0, SLICE))
        pending = pending.subarray(SLICE)
      }
    }
    let digest: string | undefined
    if (fh != null) {
      if (pending.length > 0) flush(pending)
      await Promise.all(writes)
      await fh.close()
      const md5 = createHash('md5')
      const sha = createHash('sha256')
      for await (const c of createReadStream(file, { highWaterMark: SLICE })) { md5.update(c as Buffer); sha.update(c as Buffer) }
      digest = md5.digest('hex')
      sha.digest('hex')
    }
    say({ done: true, cpu: cpuSince(c0), bytes, md5: digest })
    process.exit(0)
  }
  throw new Error(`unknown child mode ${mode}`)
}

if (process.argv[1] != null && resolve(process.argv[1]) === SELF) {
  await childMain(process.argv[2], process.argv.slice(3))
}

// ---- the parent's side

/** A child process of this file, speaking JSON lines on stdout. */
class Child {
  readonly proc: ChildProcess
  private readonly lines: Array<Record<string, any>> = []
  private waiter: (() => void) | undefined
  private exited = false
  private stderr = ''

  constructor (mode: string, args: string[]) {
    this.proc = spawn(process.execPath, [SELF, mode, ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
    createInterface({ input: this.proc.stdout! }).on('line', line => {
      try { this.lines.push(JSON.parse(line)) } catch { return }
      this.waiter?.()
    })
    this.proc.stderr!.on('data', (d: Buffer) => { this.stderr = (this.stderr + d.toString()).slice(-2000) })
    this.proc.on('exit', () => { this.exited = true; this.waiter?.() })
  }

  /** The next message with `key` set; throws if the child exits first. */
  async next (key: string, timeoutMs = 120_000): Promise<Record<string, any>> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const i = this.lines.findIndex(l => l[key] != null)
      if (i >= 0) return this.lines.splice(i, 1)[0]
      if (this.exited) throw new Error(`child ${this.proc.spawnargs.slice(2, 3).join(' ')} exited: ${this.stderr.trim().slice(-500)}`)
      if (Date.now() > deadline) throw new Error(`child ${this.proc.spawnargs.slice(2, 3).join(' ')}: no ${key} within ${timeoutMs} ms`)
      await new Promise<void>(resolve => {
        this.waiter = resolve
        setTimeout(resolve, 1000).unref()
      })
      this.waiter = undefined
    }
  }

  go (): void { this.proc.stdin!.write('go\n') }

  async stop (): Promise<void> {
    if (this.exited) return
    const done = once(this.proc, 'exit')
    this.proc.kill('SIGTERM')
    await done
  }
}

/** Tells the children all to go at once; the s until each one reported done, and their CPU s in all. */
async function race (children: Child[], check: (msg: Record<string, any>) => void): Promise<{ each: number[], cpu: number }> {
  try {
    await Promise.all(children.map(async c => await c.next('ready')))
    const t0 = performance.now()
    for (const c of children) c.go()
    let cpu = 0
    const each = await Promise.all(children.map(async c => {
      const msg = await c.next('done', 600_000)
      const s = (performance.now() - t0) / 1000
      check(msg)
      cpu += Number(msg.cpu)
      return s
    }))
    return { each, cpu }
  } finally {
    await Promise.all(children.map(async c => { await c.stop() }))
  }
}

let ticks: number | undefined
/** CPU s (user + system) a live process has used so far (Linux /proc; NaN elsewhere). */
function cpuOf (pid: number | undefined): number {
  try {
    ticks ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
    return (Number(f[11]) + Number(f[12])) / ticks
  } catch { return NaN }
}
const cpuOfAll = (pids: Array<number | undefined>): number => pids.reduce<number>((a, p) => a + cpuOf(p), 0)

interface FetchAnswer { files: Array<{ file: { md5: string, state: string, size: number }, bySource: Record<string, number> }> }

export async function runContentBench (opts: { quick: boolean, log: (s: string) => void }): Promise<ContentResult> {
  const { log } = opts
  const rounds = opts.quick ? 1 : 3
  // parsed, so its keys are in the schema's order: ensureGeneratedModel compares the spec it is given with its
  // sidecar's as JSON, and `{ ...PRESETS[x], seed }` (seed last) never matches, so the model would be made again
  const spec = ModelSpecSchema.parse({ ...PRESETS['100m'], layers: 4, seed: 1 })
  const m = await ensureGeneratedModel(spec, '.blockmesh/bench-models', 'gpt-4x768', log)
  const cannot = canHide()
  const result: ContentResult = {
    cores: os.availableParallelism(),
    cpu: os.cpus()[0]?.model.trim() ?? 'unknown',
    date: new Date().toISOString().slice(0, 10),
    fileBytes: m.sizeBytes,
    model: 'the 100m preset\'s shape with 4 layers',
    parameters: parameterCount(spec),
    uplink: UPLINK,
    rounds,
    isolation: cannot === false ? 'hidden' : cannot,
    rows: SIZES.map(n => ({ hosts: n, meshS: [], httpS: [], meshEach: [], httpEach: [], fromSeed: [], total: [], meshCpu: [], httpCpu: [] })),
    throughput: { mesh: [], tcp: [], tcpStore: [], meshCpu: [], tcpCpu: [], tcpStoreCpu: [] },
    offences: 0,
    offenceSamples: [],
    bans: 0
  }
  /** Counts the offences the agents logged (before they stop: their folders go with them). */
  const offences = (list: AgentProcess[]): void => {
    for (const a of list) {
      for (const line of a.log().split('\n')) {
        if (line.includes('"msg":"peer banned"')) result.bans++
        if (!line.includes('"msg":"peer misbehaved"')) continue
        result.offences++
        try {
          const e = JSON.parse(line) as { reason?: string, offence?: string }
          if (result.offenceSamples.length < 3) result.offenceSamples.push(`${a.spec.name}: ${e.offence ?? '?'}, ${e.reason ?? '?'}`)
        } catch { /* not JSON */ }
      }
    }
  }
  const uri = `content-bench:${m.md5.slice(0, 8)}`
  const scratch = tempDir('bm-content-bench-')
  const rate = ['--content-upload-rate', `${UPLINK / MiB}MiB`]
  const hide = cannot === false
  // without hiding, only the MD5 is asked for: no origin, so the bytes can only come from peers
  const fetchBody = hide ? { component: uri } : { md5: m.md5 }
  if (!hide) log(`  content: hosts cannot be kept from the seed's files (${cannot}); fetching by MD5, which has no origin to read`)

  /** Every host in `hosts` fetches the file at once; s until each answered, and bytes by source. */
  const meshRun = async (hosts: AgentProcess[], seed: AgentProcess): Promise<{ each: number[], fromSeed: number, total: number, cpu: number }> => {
    const pids = [seed, ...hosts].map(a => a.child.pid)
    const c0 = cpuOfAll(pids)
    const t0 = performance.now()
    const answers = await Promise.all(hosts.map(async h => {
      const r = await h.api<FetchAnswer>('/api/content/fetch', { method: 'POST', body: fetchBody })
      const s = (performance.now() - t0) / 1000
      if (r.status !== 200) throw new Error(`${h.spec.name}: fetch answered ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`)
      const f = r.body.files.find(x => x.file.md5 === m.md5)
      if (f == null || f.file.state !== 'complete') throw new Error(`${h.spec.name}: the file is not complete after the fetch: ${JSON.stringify(r.body).slice(0, 300)}`)
      return { s, bySource: f.bySource }
    }))
    const cpu = cpuOfAll(pids) - c0
    let fromSeed = 0
    let total = 0
    for (const a of answers) {
      for (const [src, n] of Object.entries(a.bySource)) {
        total += n
        if (src === seed.peerId) fromSeed += n
      }
    }
    return { each: answers.map(a => a.s).sort((x, y) => x - y), fromSeed, total, cpu }
  }

  /** The hosts drop the file; resolves when every host's directory lists the seed alone as its holder. */
  const reset = async (hosts: AgentProcess[], seed: AgentProcess): Promise<void> => {
    for (const h of hosts) {
      const r = await h.api(`/api/content/${m.md5}`, { method: 'DELETE' })
      if (r.status !== 200 && r.status !== 404) throw new Error(`${h.spec.name}: delete answered ${r.status} ${JSON.stringify(r.body)}`)
    }
    await until(async () => {
      for (const h of hosts) {
        const model = ((await h.api('/api/models')).body.models as Array<{ uri: string, files: Array<{ md5: string, holders: Array<{ peerId: string, state: string }> }> }>).find(x => x.uri === uri)
        const holders = model?.files.find(f => f.md5 === m.md5)?.holders ?? []
        if (holders.length !== 1 || holders[0].peerId !== seed.peerId || holders[0].state !== 'complete') return false
      }
      return true
    }, 'every host to see the seed alone holding the file', 60_000, 100)
  }

  /** The seed's component, on every host in the mesh, and the file in the seed's store. */
  const share = async (seed: AgentProcess, hosts: AgentProcess[]): Promise<void> => {
    const c = await seed.api('/api/components', { method: 'POST', body: componentSpec(m, 'content-bench') })
    if (c.status !== 201 && c.status !== 409) throw new Error(`component: ${c.status} ${JSON.stringify(c.body)}`)
    await until(async () => ((await seed.api('/api/content')).body.files as Array<{ md5: string, state: string }>).some(f => f.md5 === m.md5 && f.state === 'complete'), 'the file in the seed\'s store', 120_000, 200)
    await reset(hosts, seed)
  }

  const agents: AgentProcess[] = []
  let server: Child | undefined
  try {
    // ---- mesh vs HTTP, every uplink at R
    const seed = await AgentProcess.start({ name: 'content-seed', cluster: 'seed', extra: rate })
    agents.push(seed)
    const hideDirs = hide ? [seed.dir, dirname(m.path)] : undefined
    const hosts = await Promise.all([1, 2, 3, 4].map(async i => await AgentProcess.start({ name: `content-host-${i}`, cluster: 'hosts', bootstrap: [seed.addr], extra: rate, ...(hideDirs != null ? { hide: hideDirs } : {}) })))
    agents.push(...hosts)
    await until(async () => (await Promise.all(agents.map(async a => (await a.peers()).length))).every(n => n === agents.length), 'the mesh to form', 60_000)
    await share(seed, hosts)
    server = new Child('http-server', [m.path, String(UPLINK)])
    const url = `http://127.0.0.1:${(await server.next('ready')).port as number}/${m.md5}.onnx`
    log(`  file ${(m.sizeBytes / MiB).toFixed(0)} MiB on the seed; ${hosts.length} hosts${hide ? ' (the seed\'s folders hidden from them)' : ''}; every uplink ${UPLINK / MiB} MiB/s; HTTP server at ${url}`)
    for (let r = 0; r < rounds; r++) {
      for (const row of result.rows) {
        const some = hosts.slice(0, row.hosts)
        const mesh = await meshRun(some, seed)
        row.meshEach.push(mesh.each)
        row.meshS.push(mesh.each.at(-1)!)
        row.fromSeed.push(mesh.fromSeed)
        row.total.push(mesh.total)
        row.meshCpu.push(mesh.cpu)
        await reset(some, seed)
        const dirs = some.map((_, i) => join(scratch, `http-${r}-${row.hosts}-${i}`))
        for (const d of dirs) mkdirSync(d)
        const downloaders = dirs.map(d => new Child('http-get', [url, m.md5, d]))
        const s0 = cpuOf(server.proc.pid)
        const { each, cpu } = await race(downloaders, msg => {
          if (msg.md5 !== m.md5 || msg.bytes !== m.sizeBytes) throw new Error(`an HTTP download got ${msg.bytes as number} bytes with MD5 ${msg.md5 as string}`)
        })
        row.httpCpu.push(cpu + cpuOf(server.proc.pid) - s0)
        for (const d of dirs) rmSync(d, { recursive: true, force: true })
        row.httpEach.push(each.sort((x, y) => x - y))
        row.httpS.push(each.at(-1)!)
        log(`  round ${r + 1}/${rounds}, ${row.hosts} host(s): mesh ${mesh.each.at(-1)!.toFixed(2)} s (${(100 * (1 - mesh.fromSeed / mesh.total)).toFixed(0)}% from other hosts, ${mesh.cpu.toFixed(1)} CPU s), HTTP ${each.at(-1)!.toFixed(2)} s (${row.httpCpu.at(-1)!.toFixed(1)} CPU s)`)
      }
    }
    await server.stop()
    server = undefined
    offences(agents)
    await stopAll(agents.splice(0))

    // ---- throughput: one host, no cap, vs raw TCP
    const tSeed = await AgentProcess.start({ name: 'content-t-seed', cluster: 'seed' })
    agents.push(tSeed)
    const tHost = await AgentProcess.start({ name: 'content-t-host', cluster: 'hosts', bootstrap: [tSeed.addr], ...(hide ? { hide: [tSeed.dir, dirname(m.path)] } : {}) })
    agents.push(tHost)
    await until(async () => (await tSeed.peers()).length === 2 && (await tHost.peers()).length === 2, 'the two agents to see each other', 60_000)
    await share(tSeed, [tHost])
    server = new Child('tcp-send', [m.path])
    const port = String((await server.next('ready')).port)
    const tp = result.throughput
    const mib = (s: number): number => m.sizeBytes / MiB / s
    const tcpRun = async (work: string): Promise<{ mibs: number, cpu: number }> => {
      const d = join(scratch, `tcp-${work}`)
      mkdirSync(d, { recursive: true })
      try {
        const receiver = new Child('tcp-recv', [port, work, d])
        const s0 = cpuOf(server?.proc.pid)
        const { each, cpu } = await race([receiver], msg => {
          if (msg.bytes !== m.sizeBytes || (work === 'store' && msg.md5 !== m.md5)) throw new Error(`raw TCP got ${msg.bytes as number} bytes, MD5 ${msg.md5 as string}`)
        })
        return { mibs: mib(each[0]), cpu: cpu + cpuOf(server?.proc.pid) - s0 }
      } finally { rmSync(d, { recursive: true, force: true }) }
    }
    for (let r = 0; r < rounds; r++) {
      const mesh = await meshRun([tHost], tSeed)
      tp.mesh.push(mib(mesh.each[0]))
      tp.meshCpu.push(mesh.cpu)
      await reset([tHost], tSeed)
      const tcp = await tcpRun('discard')
      tp.tcp.push(tcp.mibs)
      tp.tcpCpu.push(tcp.cpu)
      const tcpStore = await tcpRun('store')
      tp.tcpStore.push(tcpStore.mibs)
      tp.tcpStoreCpu.push(tcpStore.cpu)
      log(`  throughput round ${r + 1}/${rounds}: mesh ${tp.mesh.at(-1)!.toFixed(0)} MiB/s, raw TCP ${tp.tcp.at(-1)!.toFixed(0)} MiB/s, raw TCP + the store's work ${tp.tcpStore.at(-1)!.toFixed(0)} MiB/s (CPU s ${tp.meshCpu.at(-1)!.toFixed(1)} / ${tp.tcpCpu.at(-1)!.toFixed(1)} / ${tp.tcpStoreCpu.at(-1)!.toFixed(1)})`)
    }
    offences(agents)
    if (result.offences > 0) log(`  ${result.offences} offence(s) and ${result.bans} ban(s) logged by the agents, e.g. ${result.offenceSamples[0]}`)
    return result
  } finally {
    await server?.stop()
    await stopAll(agents)
    rmSync(scratch, { recursive: true, force: true })
  }
}

export function contentMarkdown (r: ContentResult): string {
  if (r.skipped != null) return `Not measured on this machine: ${r.skipped}.`
  const S = r.fileBytes / MiB
  const R = r.uplink / MiB
  const secs = (xs: number[]): string => xs.map(x => x.toFixed(1)).join(' / ')
  const rows = r.rows.map(row => {
    const mesh = median(row.meshS)
    const httpS = median(row.httpS)
    const mid = (each: number[][], all: number[]): number[] => each[all.indexOf(median(all))] ?? []
    const share = median(row.fromSeed.map((f, i) => row.total[i] > 0 ? 1 - f / row.total[i] : 0))
    return `| ${row.hosts} | ${mesh.toFixed(2)} | ${secs(mid(row.meshEach, row.meshS))} | ${httpS.toFixed(2)} | ${secs(mid(row.httpEach, row.httpS))} | **${(httpS / mesh).toFixed(2)}** | ` +
      `${(100 * share).toFixed(0)}% | ${(S / R - 1).toFixed(1)} / ${(row.hosts * S / R - 1).toFixed(1)} | ${median(row.meshCpu).toFixed(1)} / ${median(row.httpCpu).toFixed(1)} |`
  })
  const t = r.throughput
  const mesh = median(t.mesh)
  const tcp = median(t.tcp)
  const tcpStore = median(t.tcpStore)
  const perGiB = (cpu: number[]): string => (median(cpu) / (S / 1024)).toFixed(1)
  const isolation = r.isolation === 'hidden'
    ? 'each in a mount namespace of its own where the seed\'s data folder and the model folder are empty (tmpfs), so the file can only come over the mesh, are asked `POST /api/content/fetch {component}`'
    : `are asked \`POST /api/content/fetch {md5}\` (no origin, so the bytes can only come from peers; the seed's folders could not be hidden: ${r.isolation})`
  return [
    `${r.date}, ${r.cpu}, ${r.cores} cores. The file: a generated model (${r.model}, ${(r.parameters / 1e6).toFixed(0)}M parameters), ${S.toFixed(0)} MiB in chunks of 1 MiB. Every process is a "box" on this machine, linked over loopback; ` +
    `what makes them boxes is that each one's uplink is capped at the same **${R} MiB/s** (\`--content-upload-rate ${R}MiB\` on every agent: one token bucket on all it uploads; the HTTP server the same token bucket class, 1 s of burst banked in both). ` +
    `Mesh: a seed agent holds the file (a component created on it); N fresh host agents, ${isolation}, all at the same moment; time until every host answered (the file complete in its store: every chunk SHA-256-checked, the whole file's MD5 and SHA-256 checked). ` +
    'HTTP: one Node HTTP server process serving the file, N downloader processes fetching it at once with the agent\'s own origin downloader (`materializeModel`: to a .part file, then the MD5 checked). ' +
    `Medians of ${r.rounds} round(s), mesh and HTTP interleaved; "each host" is from the round with the median time. The floor is what the uplinks allow: over the mesh the seed must upload the file once (S/R), the HTTP server N times (N·S/R), less the second of burst the bucket starts with. ` +
    'CPU: user + system seconds of every process taking part (seed and hosts; server and downloaders). All the processes share this machine\'s cores, which real boxes would not: where the CPU seconds approach cores × wall time, the cores, not the uplinks, were the limit.',
    '',
    '| new hosts | mesh: all done (s) | mesh: each host (s) | HTTP: all done (s) | HTTP: each host (s) | HTTP ÷ mesh | bytes from other hosts, not the seed | floor mesh / HTTP (s) | CPU s mesh / HTTP |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
    '',
    `Per-host throughput, no cap: a second mesh of two agents, one host fetching the file from the seed (the same fetch, timed at the client), against a raw TCP socket from one process to another carrying the same ${S.toFixed(0)} MiB read from the same file: once with the receiver discarding the bytes, once with it doing the store's work (SHA-256 of each 1 MiB chunk, written at its offset, then the file read back for MD5 and SHA-256). Medians of ${r.rounds} round(s); CPU of sender and receiver together.`,
    '',
    '| path | MiB/s | mesh ÷ this | CPU s per GiB |',
    '| --- | ---: | ---: | ---: |',
    `| mesh fetch (/blockmesh/content/1.0.0: Noise + Yamux, 4 chunk requests in flight, the store's checks) | ${mesh.toFixed(0)} | 1 | ${perGiB(t.meshCpu)} |`,
    `| raw TCP, receiver discards | ${tcp.toFixed(0)} | **${(mesh / tcp).toFixed(2)}** | ${perGiB(t.tcpCpu)} |`,
    `| raw TCP, receiver does the store's work | ${tcpStore.toFixed(0)} | **${(mesh / tcpStore).toFixed(2)}** | ${perGiB(t.tcpStoreCpu)} |`,
    ...(r.offences > 0 ? ['', `The agents logged ${r.offences} offence(s) of a peer and ${r.bans} ban(s) during the run (honest peers only here), e.g.:`, '', ...r.offenceSamples.map(x => `- ${x}`)] : [])
  ].join('\n')
}
