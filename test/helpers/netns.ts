/**
 * A network lab for chaos tests: each host is its own Linux network namespace with its own IPv4 address,
 * joined to a bridge in the root namespace by a veth pair. Links between hosts are cut at the bridge
 * (nftables, bridge family, forward hook), so partitions never touch the path between the test process
 * (root namespace, on the bridge) and any host: the test can always call every agent's HTTP API.
 * Latency, bandwidth limits and stalls come from Toxiproxy, run as a host of the lab.
 *
 *   const lab = NetLab.create(3)                       // hosts 0..2: ns, ip, spawn()
 *   lab.partition([[0], [1, 2]]); lab.heal(); lab.isolate(1)
 *   const tp = await lab.startToxiproxy()              // one more host, running toxiproxy-server
 *   await tp.createProxy('b', 20001, `${lab.host(1).ip}:4001`)
 *   await tp.addToxic('b', { type: 'latency', attributes: { latency: 200 } })
 *   lab.destroy()                                      // also runs on process exit
 *
 * Traffic stays on the lab's /24 (no host has a default route) and loopback. Needs root, iproute2 and
 * nft (scripts/install-chaos-tools.sh installs them and builds toxiproxy-server); tests skip with
 * NetLab.available() / Toxiproxy.available() as the reason when something is missing.
 */
import { execFileSync, spawn } from 'node:child_process'
import type { ChildProcess, SpawnOptions } from 'node:child_process'
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { homedir, tmpdir } from 'node:os'
import { join } from 'node:path'

/** The lab networks: 10.213.X.0/24, one X per lab alive on this machine (claimed by a lock file). */
const NET_PREFIX = '10.213'
const LOCK_DIR = existsSync('/run') ? '/run/blockmesh-netlab' : join(tmpdir(), 'blockmesh-netlab')
/** Host i has the address .(HOST_BASE + i); the bridge (the root namespace, the test process) has .1. */
const HOST_BASE = 10
const MAX_HOSTS = 240

export interface NetHost {
  readonly index: number
  /** The network namespace's name (for `ip netns exec`, or AgentSpec.netns). */
  readonly ns: string
  /** The host's IPv4 address on the lab network. */
  readonly ip: string
  /** The root-namespace end of the host's veth pair (a port of the lab bridge). */
  readonly port: string
  /** Spawns `cmd args` inside the host's namespace (through `ip netns exec`, which execs: the pid is the command's). */
  spawn: (cmd: string, args?: string[], opts?: SpawnOptions) => ChildProcess
  /** Runs `cmd args` inside the namespace and returns its stdout (throws on a non-zero exit). */
  exec: (cmd: string, args?: string[], timeoutMs?: number) => string
}

interface LockRecord { pid: number, x: number, namespaces: string[] }

function run (cmd: string, args: string[], input?: string, timeoutMs = 10_000): string {
  return execFileSync(cmd, args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], timeout: timeoutMs })
}

function errText (err: unknown): string {
  const e = err as { stderr?: string | Buffer, message?: string, code?: string }
  if (e.code === 'ENOENT') return 'not found'
  const stderr = e.stderr?.toString().trim()
  return stderr != null && stderr !== '' ? stderr : String(e.message ?? err)
}

function tryRun (cmd: string, args: string[], input?: string): void {
  try { run(cmd, args, input) } catch { /* best effort (cleanup) */ }
}

function alive (pid: number): boolean {
  try { process.kill(pid, 0); return true } catch (err) { return (err as NodeJS.ErrnoException).code === 'EPERM' }
}

function ipv4ToInt (ip: string): number {
  return ip.split('.').reduce((n, p) => n * 256 + Number(p), 0)
}

/** Whether 10.213.X.0/24 overlaps a route or address already in the root namespace (a real network). */
function subnetInUse (x: number, routes: string): boolean {
  const lo = ipv4ToInt(`${NET_PREFIX}.${x}.0`)
  const hi = lo + 255
  for (const m of routes.matchAll(/(\d+\.\d+\.\d+\.\d+)(?:\/(\d+))?/g)) {
    const len = m[2] != null ? Number(m[2]) : 32
    if (len === 0) continue
    const start = Math.floor(ipv4ToInt(m[1]) / 2 ** (32 - len)) * 2 ** (32 - len)
    const end = start + 2 ** (32 - len) - 1
    if (start <= hi && end >= lo) return true
  }
  return false
}

const labs = new Set<NetLab>()
let exitHook = false
let probed: string | null | undefined

export class NetLab {
  /** The lab's number: its network is 10.213.X.0/24, its names start with bmX. */
  readonly x: number
  readonly subnet: string
  /** The bridge's address in the root namespace: where the test process is on the lab network. */
  readonly gateway: string
  readonly bridge: string
  /** The nftables table (bridge family) that holds the partition rules. */
  readonly table: string
  readonly hosts: NetHost[] = []
  private readonly lockPath: string
  private readonly children = new Set<ChildProcess>()
  private groups: number[][] | null = null
  private destroyed = false
  private toxi: Toxiproxy | undefined

  /**
   * Null when labs can be made here, else the reason they cannot (for `test(..., { skip })`):
   * not root, no `ip`, no `nft`, or the kernel refuses a namespace, a veth pair or a bridge table.
   */
  static available (): string | null {
    if (probed !== undefined) return probed
    probed = probe()
    return probed
  }

  /** A lab with `n` hosts (more can be added with addHost). Throws when NetLab.available() is not null. */
  static create (n: number): NetLab {
    const why = NetLab.available()
    if (why != null) throw new Error(`NetLab: ${why}`)
    const lab = new NetLab(claimSubnet())
    try {
      for (let i = 0; i < n; i++) lab.addHost()
    } catch (err) {
      lab.destroy()
      throw err
    }
    return lab
  }

  private constructor (x: number) {
    this.x = x
    this.subnet = `${NET_PREFIX}.${x}.0/24`
    this.gateway = `${NET_PREFIX}.${x}.1`
    this.bridge = `bm${x}br`
    this.table = `bmlab${x}`
    this.lockPath = join(LOCK_DIR, `${x}.json`)
    labs.add(this)
    if (!exitHook) {
      exitHook = true
      process.on('exit', () => { for (const lab of labs) lab.destroy() })
    }
    try {
      run('ip', ['link', 'add', this.bridge, 'type', 'bridge'])
      run('ip', ['addr', 'add', `${this.gateway}/24`, 'dev', this.bridge])
      run('ip', ['link', 'set', this.bridge, 'up'])
      run('nft', ['-f', '-'], `table bridge ${this.table} {\n  chain forward { type filter hook forward priority 0; policy accept; }\n}\n`)
    } catch (err) {
      this.destroy()
      throw new Error(`NetLab: could not make the bridge ${this.bridge}: ${errText(err)}`)
    }
  }

  host (i: number): NetHost {
    const h = this.hosts[i]
    if (h == null) throw new RangeError(`NetLab: no host ${i} (the lab has ${this.hosts.length})`)
    return h
  }

  /** One more host: a namespace bmX-PID-I with loopback up and IP 10.213.X.(10+I) on the bridge. */
  addHost (): NetHost {
    if (this.destroyed) throw new Error('NetLab: destroyed')
    const index = this.hosts.length
    if (index >= MAX_HOSTS) throw new RangeError(`NetLab: at most ${MAX_HOSTS} hosts`)
    const ns = `bm${this.x}-${process.pid}-${index}`
    const ip = `${NET_PREFIX}.${this.x}.${HOST_BASE + index}`
    const port = `bm${this.x}h${index}`
    const children = this.children
    const host: NetHost = {
      index,
      ns,
      ip,
      port,
      spawn (cmd, args = [], opts = {}) {
        const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], opts)
        children.add(child)
        child.once('exit', () => children.delete(child))
        return child
      },
      exec (cmd, args = [], timeoutMs = 10_000) {
        return run('ip', ['netns', 'exec', ns, cmd, ...args], undefined, timeoutMs)
      }
    }
    this.hosts.push(host)
    this.record()
    try {
      run('ip', ['netns', 'add', ns])
      run('ip', ['-n', ns, 'link', 'set', 'lo', 'up'])
      run('ip', ['link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns])
      run('ip', ['link', 'set', port, 'master', this.bridge])
      run('ip', ['link', 'set', port, 'up'])
      run('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0'])
      run('ip', ['-n', ns, 'link', 'set', 'eth0', 'up'])
    } catch (err) {
      throw new Error(`NetLab: could not make host ${index} (${ns}): ${errText(err)}`)
    }
    // a partition in force covers new hosts as "listed nowhere" (they reach everyone)
    return host
  }

  /**
   * Cuts every link between hosts of different groups (in both directions, silently: frames are dropped
   * at the bridge, as a pulled cable would). Hosts in the same group, hosts listed in no group, and the
   * test process (root namespace) keep reaching everyone. Replaces the partition in force, atomically.
   */
  partition (groups: number[][]): void {
    const groupOf = new Map<number, number>()
    groups.forEach((g, gi) => {
      for (const i of g) {
        this.host(i)
        if (groupOf.has(i)) throw new Error(`NetLab: host ${i} is in two groups`)
        groupOf.set(i, gi)
      }
    })
    const rules: string[] = []
    for (const [a, ga] of groupOf) {
      for (const [b, gb] of groupOf) {
        if (ga !== gb) rules.push(`add rule bridge ${this.table} forward iifname "${this.host(a).port}" oifname "${this.host(b).port}" drop`)
      }
    }
    this.apply(rules)
    this.groups = groups.map(g => [...g])
  }

  /** Cuts host i off from every other host of the lab (the test process still reaches it). */
  isolate (i: number): void {
    this.host(i)
    this.partition([[i], this.hosts.map(h => h.index).filter(j => j !== i)])
  }

  /** Restores every link between hosts. */
  heal (): void {
    this.apply([])
    this.groups = null
  }

  /** The partition in force (as given to partition()), or null when every link is up. */
  get partitioned (): number[][] | null { return this.groups }

  /** Starts toxiproxy-server on a host of its own (added to this lab); one per lab. */
  async startToxiproxy (): Promise<Toxiproxy> {
    if (this.toxi != null) return this.toxi
    const why = Toxiproxy.available()
    if (why != null) throw new Error(`NetLab: ${why}`)
    this.toxi = await Toxiproxy.start(this.addHost())
    return this.toxi
  }

  /**
   * Removes everything the lab made, even after failures (also run on process exit): kills what still runs
   * in its namespaces, deletes its nftables table, veths, bridge and namespaces, and frees its subnet.
   */
  destroy (): void {
    if (this.destroyed) return
    this.destroyed = true
    labs.delete(this)
    for (const child of this.children) {
      try { child.kill('SIGKILL') } catch { /* gone */ }
    }
    teardown(this.x, this.hosts.map(h => h.ns))
    rmSync(this.lockPath, { force: true })
    if (process.env.BM_KEEP_TEST_DIRS !== '1') this.toxi?.removeLog()
  }

  private apply (rules: string[]): void {
    if (this.destroyed) throw new Error('NetLab: destroyed')
    run('nft', ['-f', '-'], [`flush chain bridge ${this.table} forward`, ...rules, ''].join('\n'))
  }

  private record (): void {
    const rec: LockRecord = { pid: process.pid, x: this.x, namespaces: this.hosts.map(h => h.ns) }
    writeFileSync(this.lockPath, JSON.stringify(rec))
  }
}

/** Removes lab X's resources; every name that starts with bmX belongs to whoever holds X's lock. */
function teardown (x: number, namespaces: string[]): void {
  let listed: string[] = []
  try { listed = run('ip', ['netns', 'list']).split('\n').map(l => l.split(' ')[0]).filter(n => n.startsWith(`bm${x}-`)) } catch { /* no ip */ }
  const all = [...new Set([...namespaces, ...listed])]
  for (const ns of all) {
    // processes left in the lab's namespaces (agents, toxiproxy-server) were started by the lab's owner
    let pids: number[] = []
    try { pids = run('ip', ['netns', 'pids', ns]).split(/\s+/).filter(Boolean).map(Number) } catch { /* ns gone */ }
    for (const pid of pids) {
      try { process.kill(pid, 'SIGKILL') } catch { /* gone */ }
    }
  }
  tryRun('nft', ['delete', 'table', 'bridge', `bmlab${x}`])
  let links: string[] = []
  try { links = run('ip', ['-o', 'link', 'show']).split('\n').map(l => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1] ?? '') } catch { /* no ip */ }
  for (const link of links) {
    if (new RegExp(`^bm${x}h\\d+$`).test(link)) tryRun('ip', ['link', 'del', link])
  }
  if (links.includes(`bm${x}br`)) tryRun('ip', ['link', 'del', `bm${x}br`])
  for (const ns of all) tryRun('ip', ['netns', 'del', ns])
}

/**
 * Takes X's lock over when its owner died without destroy() (one taker wins: the lock is moved aside
 * first); returns the dead lab's namespaces, or null when the lock is held, being written, or gone.
 */
function takeOver (path: string): string[] | null {
  let rec: LockRecord | undefined
  try { rec = JSON.parse(readFileSync(path, 'utf8')) as LockRecord } catch { return null }
  if (alive(rec.pid)) return null
  const aside = `${path}.stale-${process.pid}`
  try { renameSync(path, aside) } catch { return null }
  try {
    const moved = JSON.parse(readFileSync(aside, 'utf8')) as LockRecord
    if (alive(moved.pid)) { renameSync(aside, path); return null } // raced with a new owner: give it back
    rmSync(aside, { force: true })
    return moved.namespaces ?? []
  } catch { rmSync(aside, { force: true }); return [] }
}

/** Removes the labs of test processes that died without destroy() (SIGKILL, a test runner's timeout). */
function sweepStale (): void {
  for (const f of readdirSync(LOCK_DIR)) {
    const m = /^(\d+)\.json$/.exec(f)
    if (m == null) continue
    const stale = takeOver(join(LOCK_DIR, f))
    if (stale != null) teardown(Number(m[1]), stale)
  }
}

/** Claims a free X (10.213.X.0/24) with an exclusive lock file. */
function claimSubnet (): number {
  mkdirSync(LOCK_DIR, { recursive: true })
  sweepStale()
  const start = (process.pid * 7 + labs.size * 13) % 250
  for (let k = 0; k < 250; k++) {
    const x = 1 + (start + k) % 250
    const path = join(LOCK_DIR, `${x}.json`)
    try {
      const fd = openSync(path, 'wx')
      writeFileSync(fd, JSON.stringify({ pid: process.pid, x, namespaces: [] }))
      closeSync(fd)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue
      throw err
    }
    // X is ours now: any name bmX… is a leftover of a lab whose lock file was lost
    teardown(x, [])
    const routes = run('ip', ['-4', 'route', 'show', 'table', 'all']) + run('ip', ['-4', '-o', 'addr', 'show'])
    if (subnetInUse(x, routes)) {
      // a network of the machine's own: leave it alone
      rmSync(path, { force: true })
      continue
    }
    return x
  }
  throw new Error('NetLab: no free 10.213.X.0/24 network')
}

function probe (): string | null {
  if (process.platform !== 'linux') return `network namespaces are Linux-only (this is ${process.platform})`
  if (process.getuid?.() !== 0) return 'not root: network namespaces, veth pairs and nftables rules need root (CAP_NET_ADMIN)'
  try { run('ip', ['-V']) } catch (err) { return `iproute2's \`ip\` is not usable (${errText(err)}); scripts/install-chaos-tools.sh installs it` }
  try { run('nft', ['--version']) } catch (err) { return `\`nft\` (nftables, used to cut links) is not usable (${errText(err)}); scripts/install-chaos-tools.sh installs it` }
  const ns = `bmprobe-${process.pid}`
  const table = `bmprobe${process.pid}`
  try {
    try { run('ip', ['netns', 'add', ns]) } catch (err) { return `cannot create a network namespace: ${errText(err)}` }
    try { run('ip', ['-n', ns, 'link', 'add', 'p0', 'type', 'veth', 'peer', 'name', 'p1']) } catch (err) { return `cannot create a veth pair: ${errText(err)}` }
    try { run('ip', ['-n', ns, 'link', 'add', 'br0', 'type', 'bridge']) } catch (err) { return `cannot create a bridge: ${errText(err)}` }
    try {
      run('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], `table bridge ${table} {\n  chain forward { type filter hook forward priority 0; policy accept; }\n}\n`)
    } catch (err) { return `nftables cannot filter bridged traffic (bridge family): ${errText(err)}` }
    return null
  } finally {
    tryRun('ip', ['netns', 'del', ns])
  }
}

// ---- Toxiproxy -------------------------------------------------------------------------------------

export const TOXIPROXY_VERSION = '2.12.0'
const TOXIPROXY_API_PORT = 8474

export interface ToxicSpec {
  type: 'latency' | 'bandwidth' | 'timeout' | 'slow_close' | 'slicer' | 'limit_data' | 'reset_peer'
  /** Defaults to `${type}_${stream}`, Toxiproxy's own default. */
  name?: string
  /** downstream: upstream server → client (Toxiproxy's default); upstream: client → server. */
  stream?: 'upstream' | 'downstream'
  /** The probability (0..1) that a new connection gets this toxic. */
  toxicity?: number
  /** latency {latency, jitter} ms; bandwidth {rate} KB/s; timeout {timeout} ms (0: stall forever); … */
  attributes: Record<string, number>
}

export interface ProxyInfo { name: string, listen: string, upstream: string, enabled: boolean, toxics: Array<Record<string, unknown>> }

/** toxiproxy-server (Shopify's) running on a host of a NetLab, driven through its HTTP API. */
export class Toxiproxy {
  readonly host: NetHost
  readonly url: string
  readonly child: ChildProcess

  /** The toxiproxy-server binary: $BM_TOXIPROXY_SERVER, else the one scripts/install-chaos-tools.sh builds. */
  static binary (): string {
    return process.env.BM_TOXIPROXY_SERVER ?? join(process.env.BLOCKMESH_CACHE ?? join(homedir(), '.cache', 'blockmesh'), 'bin', 'toxiproxy-server')
  }

  /** Null when toxiproxy-server is there, else why not. */
  static available (): string | null {
    const bin = Toxiproxy.binary()
    if (!existsSync(bin)) return `toxiproxy-server is not at ${bin} (scripts/install-chaos-tools.sh builds it with go)`
    try { run(bin, ['-version']) } catch (err) { return `${bin} does not run: ${errText(err)}` }
    return null
  }

  static async start (host: NetHost): Promise<Toxiproxy> {
    const log = openSync(join(tmpdir(), `toxiproxy-${host.ns}.log`), 'w')
    const child = host.spawn(Toxiproxy.binary(), ['-host', host.ip, '-port', String(TOXIPROXY_API_PORT), '-proxy-metrics'], { stdio: ['ignore', log, log] })
    closeSync(log)
    const tp = new Toxiproxy(host, child)
    const deadline = Date.now() + 15_000
    for (;;) {
      if (child.exitCode != null || child.signalCode != null) throw new Error(`toxiproxy-server exited (${child.exitCode ?? child.signalCode}): ${tp.log()}`)
      try {
        if ((await fetch(`${tp.url}/version`)).ok) return tp
      } catch { /* not listening yet */ }
      if (Date.now() > deadline) throw new Error(`toxiproxy-server did not answer on ${tp.url}: ${tp.log()}`)
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  }

  private constructor (host: NetHost, child: ChildProcess) {
    this.host = host
    this.child = child
    this.url = `http://${host.ip}:${TOXIPROXY_API_PORT}`
  }

  /** toxiproxy-server's log (JSON lines): one per connection, toxic and API call. */
  log (): string {
    try { return readFileSync(this.logPath, 'utf8') } catch { return '' }
  }

  removeLog (): void { rmSync(this.logPath, { force: true }) }

  private get logPath (): string { return join(tmpdir(), `toxiproxy-${this.host.ns}.log`) }

  private async call<T> (method: string, path: string, body?: unknown): Promise<T> {
    const res = await fetch(this.url + path, {
      method,
      headers: body !== undefined ? { 'content-type': 'application/json' } : {},
      body: body !== undefined ? JSON.stringify(body) : undefined
    })
    const text = await res.text()
    if (!res.ok) throw new Error(`toxiproxy ${method} ${path}: ${res.status} ${text}`)
    return (text === '' ? undefined : JSON.parse(text)) as T
  }

  /** A proxy listening on this host's `port` (all addresses of its namespace) that forwards to `upstream` (ip:port). */
  async createProxy (name: string, port: number, upstream: string): Promise<ProxyInfo> {
    return await this.call<ProxyInfo>('POST', '/proxies', { name, listen: `${this.host.ip}:${port}`, upstream, enabled: true })
  }

  async proxy (name: string): Promise<ProxyInfo> {
    return await this.call<ProxyInfo>('GET', `/proxies/${encodeURIComponent(name)}`)
  }

  /** Enables or disables a proxy; disabling closes its connections and refuses new ones. */
  async setEnabled (name: string, enabled: boolean): Promise<ProxyInfo> {
    return await this.call<ProxyInfo>('POST', `/proxies/${encodeURIComponent(name)}`, { enabled })
  }

  async addToxic (proxy: string, toxic: ToxicSpec): Promise<Record<string, unknown>> {
    return await this.call('POST', `/proxies/${encodeURIComponent(proxy)}/toxics`, {
      type: toxic.type, stream: toxic.stream ?? 'downstream', toxicity: toxic.toxicity ?? 1, attributes: toxic.attributes,
      ...(toxic.name != null ? { name: toxic.name } : {})
    })
  }

  async removeToxic (proxy: string, toxic: string): Promise<void> {
    await this.call('DELETE', `/proxies/${encodeURIComponent(proxy)}/toxics/${encodeURIComponent(toxic)}`)
  }

  /** Bytes the proxy received, both directions together (Toxiproxy's counter; it counts a connection's bytes when the connection closes). */
  async bytesReceived (proxy: string): Promise<number> {
    const res = await fetch(`${this.url}/metrics`)
    let total = 0
    for (const line of (await res.text()).split('\n')) {
      if (line.startsWith('toxiproxy_proxy_received_bytes_total{') && line.includes(`proxy="${proxy}"`)) total += Number(line.split(/\s+/).at(-1))
    }
    return total
  }

  async stop (): Promise<void> {
    if (this.child.exitCode != null || this.child.signalCode != null) return
    const done = new Promise(resolve => this.child.once('exit', resolve))
    this.child.kill('SIGTERM')
    const kill = setTimeout(() => this.child.kill('SIGKILL'), 5000)
    try { await done } finally { clearTimeout(kill) }
  }
}
