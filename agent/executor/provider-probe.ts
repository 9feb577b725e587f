import { execFile, spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { existsSync, writeSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { NVIDIA_SMI_ARGS, parseNvidiaSmi } from '../hardware/nvidia-smi.ts'
import type { NvidiaSmiGpu } from '../hardware/nvidia-smi.ts'
import type { ProviderStatus } from '../../mesh/capacity/record.ts'

/**
 * Which ONNX Runtime execution providers load on this machine, and why the
 * others do not. Every provider onnxruntime-node knows is tried on a one-node
 * model (Add) in a child process, one after the other with a bound each: a
 * provider that crashes the process, hangs (WebGPU without a usable adapter
 * can be slow) or prints native noise (Dawn, the provider bridge) touches
 * neither the agent nor its log. What the native side printed is read back
 * for the reason (the error ORT throws for a missing library says only
 * "Failed to load shared library").
 */

export type { ProviderStatus }

/** The capacity record's bounds (mesh/capacity/record.ts; repeated so the child does not load libp2p). */
export const MAX_PROVIDERS = 8
export const MAX_PROVIDER_REASON = 200
/** The command that installs the CUDA provider (named in reasons and docs). */
export const SETUP_COMMAND = 'npx blockmesh gpu setup'
/** A provider's own bound (session create and one run). */
export const PROVIDER_TIMEOUT_MS = 20_000
/** Bound on starting the child and loading onnxruntime-node in it. */
export const LOAD_TIMEOUT_MS = 30_000

const PROBE_FILE = fileURLToPath(import.meta.url)
const CHILD_FLAG = '--blockmesh-provider-probe'
/** Written to stderr before each provider, so the native log can be split per provider. */
const MARK = '@@blockmesh-probe '
const MAX_LOG = 256 * 1024
/** GPU providers that need an NVIDIA GPU. */
const NVIDIA_PROVIDERS = new Set(['cuda', 'tensorrt'])

// ---------------------------------------------------------------- the package

export interface OrtPackage {
  /** onnxruntime-node's folder */
  dir: string
  version: string
  /** where its native libraries (and any provider libraries the installer fetches) live */
  binDir: string
  /** its installer (the postinstall script) */
  installScript: string
  /** platform/arch as the installer spells it */
  platform: string
  /** files the installer fetches for CUDA 12 here (empty: it has no CUDA download for this platform) */
  cudaFiles: string[]
  /** platforms the installer has a CUDA 12 download for */
  cudaPlatforms: string[]
}

interface InstallMetadata { manifests?: Record<string, Record<string, unknown>> }

/** Locates onnxruntime-node and reads what its installer would fetch (its install-metadata.js). */
export function ortPackage (): OrtPackage {
  const require = createRequire(import.meta.url)
  const pkgJson = require.resolve('onnxruntime-node/package.json')
  const dir = dirname(pkgJson)
  const pkg = require(pkgJson) as { version: string, binary?: { napi_versions?: number[] } }
  const platform = `${process.platform}/${process.arch}`
  const napi = pkg.binary?.napi_versions?.[0] ?? 6
  let manifests: NonNullable<InstallMetadata['manifests']> = {}
  try {
    manifests = (require(join(dir, 'script', 'install-metadata.js')) as InstallMetadata).manifests ?? {}
  } catch { /* an older or newer package without it: no CUDA download known */ }
  const cuda = manifests[`${platform}:cuda12`]
  return {
    dir,
    version: pkg.version,
    binDir: join(dir, 'bin', `napi-v${napi}`, process.platform, process.arch),
    installScript: join(dir, 'script', 'install.js'),
    platform,
    cudaFiles: cuda == null ? [] : Object.keys(cuda).map(f => f.replace(/^\.\//, '')),
    cudaPlatforms: Object.keys(manifests).filter(k => k.endsWith(':cuda12')).map(k => k.slice(0, -':cuda12'.length))
  }
}

/** The libraries a provider loads from onnxruntime-node's bin folder (empty: it is built in). Its own first. */
export function providerLibraries (name: string, platform: NodeJS.Platform = process.platform): string[] {
  const lib = (n: string): string => platform === 'win32' ? `${n}.dll` : platform === 'darwin' ? `lib${n}.dylib` : `lib${n}.so`
  switch (name) {
    case 'cuda': return [lib('onnxruntime_providers_cuda'), lib('onnxruntime_providers_shared')]
    case 'tensorrt': return [lib('onnxruntime_providers_tensorrt'), lib('onnxruntime_providers_shared')]
    default: return []
  }
}

// ---------------------------------------------------------------- NVIDIA GPUs

export interface NvidiaPresence {
  gpus: NvidiaSmiGpu[]
  /** why none is listed: "nvidia-smi not found", its error, or "nvidia-smi lists no GPU" */
  error?: string
}

/** Asks nvidia-smi for the GPUs; never throws. */
export async function detectNvidia (timeoutMs = 5000, binary = 'nvidia-smi'): Promise<NvidiaPresence> {
  return await new Promise(resolve => {
    execFile(binary, NVIDIA_SMI_ARGS, { timeout: timeoutMs, maxBuffer: 1024 * 1024, windowsHide: true }, (err, stdout, stderr) => {
      if (err != null) {
        const code = (err as NodeJS.ErrnoException).code
        if (code === 'ENOENT') { resolve({ gpus: [], error: 'nvidia-smi not found' }); return }
        const first = firstLine(String(stderr)) || firstLine(String(stdout)) || err.message
        resolve({ gpus: [], error: clip(`nvidia-smi failed: ${first}`, 120) })
        return
      }
      const gpus = parseNvidiaSmi(String(stdout))
      resolve(gpus.length > 0 ? { gpus } : { gpus, error: 'nvidia-smi lists no GPU' })
    })
  })
}

// ---------------------------------------------------------------- shaping

/** What trying one provider gave. */
export type ProbeOutcome =
  | { kind: 'ok' }
  | { kind: 'error', error: string, log: string }
  | { kind: 'timeout', ms: number }
  | { kind: 'crash', exit: string, log: string }

export interface ShapeContext {
  /** the provider's libraries that are not in onnxruntime-node's bin folder */
  missing: string[]
  nvidia: NvidiaPresence
  /** onnxruntime-node's installer can fetch the CUDA provider on this platform */
  installable: boolean
  platform: string
}

function clip (s: string, max = MAX_PROVIDER_REASON): string {
  return s.length <= max ? s : s.slice(0, max - 1) + '…'
}

function firstLine (s: string): string {
  return s.split('\n').map(l => l.trim()).find(l => l !== '') ?? ''
}

/**
 * One short line from an ORT error: no colour codes, no source location or
 * failed-check preamble, file names without their folders.
 */
export function cleanOrtError (message: string): string {
  let s = firstLine(message.replace(/\x1b\[[0-9;]*m/g, ''))
  s = s.replace(/^\S+\.(?:cc|cpp|h):\d+\s+.*?\bwas false\.\s*/, '')
  s = s.replace(/^\S+\.(?:cc|cpp|h):\d+\s+/, '')
  if (/^\S*(?:::|<)/.test(s)) {
    // a C++ signature first ("std::…> onnxruntime::CudaCall(…) [with …] CUDA failure 100: …"): the message follows it
    const m = /[)\]]\s+(?=[A-Z]|\[ONNXRuntimeError\])/.exec(s)
    if (m != null) s = s.slice(m.index + m[0].length)
  }
  s = s.replace(/\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*/g, '')
  s = s.replace(/(?:[A-Za-z]:)?(?:[\\/][^\s\\/:]+)+[\\/]([^\s\\/:]+)/g, '$1')
  return clip(s.replace(/\s+/g, ' ').trim() || 'failed without a message')
}

/** The first shared library the native log says could not be opened (other than ORT's own provider files). */
export function missingLibraryIn (log: string): string | undefined {
  for (const m of log.matchAll(/([^\s\\/:'"]+\.so(?:\.\d+)*): cannot open shared object file/g)) {
    if (!/^libonnxruntime_providers_/.test(m[1])) return m[1]
  }
  return undefined
}

/** What to install for a missing system library, when it is a known one. */
export function libraryHint (lib: string): string | undefined {
  if (/^libcudnn/.test(lib)) return 'install cuDNN 9 for CUDA 12'
  if (/^libcuda\.so/.test(lib)) return 'install the NVIDIA driver'
  if (/^(libcublas|libcudart|libcufft|libcurand|libcusparse|libcupti|libnvrtc|libnvJitLink)/.test(lib)) return 'install the CUDA 12 runtime libraries'
  if (/^(libnvinfer|libnvonnxparser)/.test(lib)) return 'install TensorRT 10'
  if (/^libvulkan/.test(lib)) return 'install the Vulkan loader, libvulkan1'
  return undefined
}

function noGpu (nvidia: NvidiaPresence): string {
  return `no NVIDIA GPU (${nvidia.error ?? 'nvidia-smi lists none'})`
}

/** Turns what trying a provider gave into its { name, available, reason } (reason ≤ 200 chars). */
export function shapeStatus (name: string, outcome: ProbeOutcome, ctx: ShapeContext): ProviderStatus {
  if (outcome.kind === 'ok') return { name, available: true }
  const gpuFound = ctx.nvidia.gpus.length > 0
  let reason: string
  if (ctx.missing.length > 0) {
    const what = `${ctx.missing[0]} not installed`
    if (!ctx.installable) reason = `${what}: onnxruntime-node has no ${name} download for ${ctx.platform}`
    else if (NVIDIA_PROVIDERS.has(name) && !gpuFound) reason = `${what}; ${noGpu(ctx.nvidia)}`
    else reason = `${what}: run ${SETUP_COMMAND}`
  } else if (outcome.kind === 'timeout') {
    reason = `probe timed out after ${Math.round(outcome.ms / 1000)} s`
  } else {
    const lib = missingLibraryIn(outcome.log + '\n' + (outcome.kind === 'error' ? outcome.error : ''))
    const msg = outcome.kind === 'crash' ? `probe crashed (${outcome.exit})` : cleanOrtError(outcome.error)
    if (NVIDIA_PROVIDERS.has(name) && !gpuFound) reason = `${noGpu(ctx.nvidia)}: ${msg}`
    else if (lib != null) reason = `${msg} (${lib} not found${libraryHint(lib) != null ? `: ${libraryHint(lib) as string}` : ''})`
    else reason = msg
  }
  return { name: clip(name, 32), available: false, reason: clip(reason) }
}

/** Probe order: CPU first, then CUDA and TensorRT, the rest by name, WebGPU (the slowest to fail) last; at most 8. */
export function orderProviders (names: string[]): string[] {
  const rank = (n: string): number => n === 'cpu' ? 0 : n === 'cuda' ? 1 : n === 'tensorrt' ? 2 : n === 'webgpu' ? 4 : 3
  return [...new Set(names)].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b)).slice(0, MAX_PROVIDERS)
}

/** A few words for a reason, for tables: "not installed", "no NVIDIA GPU", "needs libvulkan.so.1"… */
export function shortReason (reason: string | undefined): string {
  if (reason == null || reason === '') return 'does not load'
  if (/ not installed\b/.test(reason)) return 'not installed'
  if (/^no NVIDIA GPU\b/.test(reason)) return 'no NVIDIA GPU'
  if (/^probe timed out/.test(reason)) return 'timed out'
  if (/^probe crashed/.test(reason)) return 'crashed'
  const lib = /([\w.+-]+\.(?:so|dll|dylib)[\w.]*) not found/.exec(reason)
  if (lib != null) return `needs ${lib[1]}`
  if (/WebGPU adapter/i.test(reason)) return 'no adapter'
  return 'does not load'
}

/** One cell: "cpu, webgpu; cuda, tensorrt: not installed" ("-" when none were reported). */
export function summarizeProviders (providers: ProviderStatus[]): string {
  if (providers.length === 0) return '-'
  const ok = providers.filter(p => p.available).map(p => p.name)
  const off = new Map<string, string[]>()
  for (const p of providers) {
    if (p.available) continue
    const why = shortReason(p.reason)
    off.set(why, [...(off.get(why) ?? []), p.name])
  }
  return [...(ok.length > 0 ? [ok.join(', ')] : []), ...[...off].map(([why, names]) => `${names.join(', ')}: ${why}`)].join('; ')
}

// ---------------------------------------------------------------- running it

export interface ProbeReport {
  providers: ProviderStatus[]
  ort: { version: string, binDir: string }
  nvidia: NvidiaPresence
  probedAt: string
  ms: number
}

export interface ProbeOptions {
  /** providers to try (default: every one onnxruntime-node lists) */
  names?: string[]
  /** bound per provider (default 20 s) */
  timeoutMs?: number
  /** bound on loading onnxruntime-node in the child (default 30 s) */
  loadTimeoutMs?: number
  /** NVIDIA GPUs here (default: ask nvidia-smi) */
  nvidia?: NvidiaPresence
  signal?: AbortSignal
}

interface ChildRun {
  listed: string[] | null
  version: string | null
  outcomes: Map<string, ProbeOutcome>
  /** the child ended (or was killed) before it listed the backends: why */
  failure?: string
}

type ChildEvent =
  | { t: 'backends', names: string[] | null, version: string }
  | { t: 'start', name: string }
  | { t: 'done', name: string, ok: boolean, error?: string }
  | { t: 'fatal', error: string }

function splitLog (log: string): Map<string, string> {
  const out = new Map<string, string>()
  const parts = log.split(MARK)
  for (const part of parts.slice(1)) {
    const nl = part.indexOf('\n')
    const name = (nl < 0 ? part : part.slice(0, nl)).trim()
    out.set(name, nl < 0 ? '' : part.slice(nl + 1))
  }
  return out
}

async function runChild (names: string[] | null, opts: Required<Pick<ProbeOptions, 'timeoutMs' | 'loadTimeoutMs'>> & { signal?: AbortSignal }): Promise<ChildRun> {
  const run: ChildRun = { listed: null, version: null, outcomes: new Map() }
  const child: ChildProcess = spawn(process.execPath, [PROBE_FILE, CHILD_FLAG, ...(names ?? [])], {
    stdio: ['ignore', 'pipe', 'pipe'], windowsHide: true
  })
  let log = ''
  child.stderr?.setEncoding('utf8')
  child.stderr?.on('data', (chunk: string) => { if (log.length < MAX_LOG) log += chunk })
  let current: string | undefined
  let timedOut: { name: string | undefined, ms: number } | undefined
  let timer: NodeJS.Timeout | undefined
  const arm = (ms: number): void => {
    clearTimeout(timer)
    timer = setTimeout(() => { timedOut = { name: current, ms }; child.kill('SIGKILL') }, ms)
  }
  const onAbort = (): void => { child.kill('SIGKILL') }
  opts.signal?.addEventListener('abort', onAbort, { once: true })
  if (opts.signal?.aborted === true) onAbort()
  arm(opts.loadTimeoutMs)
  let fatal: string | undefined
  const lines = createInterface({ input: child.stdout! })
  lines.on('line', line => {
    let ev: ChildEvent
    try { ev = JSON.parse(line) as ChildEvent } catch { return }
    // each step has its bound: a provider's probe, and between them (and to exit) the load bound
    if (ev.t === 'backends') { run.listed = ev.names; run.version = ev.version; arm(opts.loadTimeoutMs) } else if (ev.t === 'start') { current = ev.name; arm(opts.timeoutMs) } else if (ev.t === 'done') {
      current = undefined
      arm(opts.loadTimeoutMs)
      run.outcomes.set(ev.name, ev.ok ? { kind: 'ok' } : { kind: 'error', error: ev.error ?? '', log: '' })
    } else if (ev.t === 'fatal') fatal = ev.error
  })
  const exit = await new Promise<string>(resolve => {
    child.once('error', err => { resolve(`could not start: ${err.message}`) })
    child.once('close', (code, signal) => { resolve(signal != null ? `signal ${signal}` : `exit code ${String(code)}`) })
  })
  clearTimeout(timer)
  opts.signal?.removeEventListener('abort', onAbort)
  const logs = splitLog(log)
  for (const [name, o] of run.outcomes) if (o.kind === 'error') o.log = logs.get(name) ?? ''
  if (timedOut?.name != null) run.outcomes.set(timedOut.name, { kind: 'timeout', ms: timedOut.ms })
  else if (current != null && !run.outcomes.has(current) && opts.signal?.aborted !== true) run.outcomes.set(current, { kind: 'crash', exit, log: logs.get(current) ?? '' })
  if (run.listed == null) {
    run.failure = fatal ?? (timedOut != null
      ? `onnxruntime-node did not load within ${Math.round(timedOut.ms / 1000)} s`
      : `onnxruntime-node did not load (${exit}): ${cleanOrtError(log.split(MARK)[0]) || 'no message'}`)
  }
  return run
}

/**
 * Finds out which providers load here. A probe that fails reports it per provider (or, when
 * onnxruntime-node does not load at all, CPU unavailable with the reason); it throws only when
 * aborted or when onnxruntime-node is not installed.
 */
export async function probeProviders (opts: ProbeOptions = {}): Promise<ProbeReport> {
  const started = Date.now()
  const ort = ortPackage()
  const nvidiaP = opts.nvidia != null ? Promise.resolve(opts.nvidia) : detectNvidia()
  const bounds = { timeoutMs: opts.timeoutMs ?? PROVIDER_TIMEOUT_MS, loadTimeoutMs: opts.loadTimeoutMs ?? LOAD_TIMEOUT_MS, signal: opts.signal }

  let order = opts.names != null ? orderProviders(opts.names) : null
  const outcomes = new Map<string, ProbeOutcome>()
  let version = ort.version
  let failure: string | undefined
  let pending: string[] | null = order
  // a child that crashes or hangs on one provider is replaced by a new one for the providers after it
  for (let round = 0; round <= MAX_PROVIDERS && (pending == null || pending.length > 0); round++) {
    const run = await runChild(pending, bounds)
    if (opts.signal?.aborted === true) throw opts.signal.reason ?? new Error('aborted')
    if (run.version != null) version = run.version
    if (order == null) {
      if (run.listed == null) { failure = run.failure; break }
      order = orderProviders(run.listed)
    }
    const before = outcomes.size
    for (const [n, o] of run.outcomes) outcomes.set(n, o)
    pending = order.filter(n => !outcomes.has(n))
    if (outcomes.size === before && pending.length > 0) {
      // no progress at all: the child cannot run here; say so for every provider left
      for (const n of pending) outcomes.set(n, { kind: 'crash', exit: run.failure ?? 'ended before probing', log: '' })
      pending = []
    }
  }

  const nvidia = await nvidiaP
  const installable = ort.cudaFiles.length > 0
  const providers = failure != null
    ? [{ name: 'cpu', available: false, reason: clip(failure) }]
    : (order ?? []).map(name => shapeStatus(name, outcomes.get(name) ?? { kind: 'crash', exit: 'not probed', log: '' }, {
        missing: providerLibraries(name).filter(f => !existsSync(join(ort.binDir, f))),
        nvidia,
        installable,
        platform: ort.platform
      }))
  return { providers, ort: { version, binDir: ort.binDir }, nvidia, probedAt: new Date(started).toISOString(), ms: Date.now() - started }
}

/**
 * The agent's probe: started once in the background, its result kept.
 * `current()` is empty until it ends (the capacity record then carries no
 * providers, as an older agent's would).
 */
export class ProviderProbe {
  private readonly opts: ProbeOptions
  private readonly abort = new AbortController()
  private running: Promise<ProbeReport> | undefined
  private report: ProbeReport | undefined

  constructor (opts: ProbeOptions = {}) {
    this.opts = opts
  }

  /** Starts the probe (once) and resolves with its report. */
  async start (): Promise<ProbeReport> {
    this.running ??= probeProviders({ ...this.opts, signal: this.abort.signal }).then(r => { this.report = r; return r })
    return await this.running
  }

  current (): ProviderStatus[] {
    return this.report?.providers ?? []
  }

  result (): ProbeReport | undefined {
    return this.report
  }

  /** Ends a probe still running (its child is killed). */
  stop (): void {
    this.abort.abort(new Error('provider probe stopped'))
  }
}

// ---------------------------------------------------------------- the child

/** The smallest model worth running: c = a + b on two floats. */
export async function probeModel (): Promise<Uint8Array> {
  const { node, valueInfo, encodeModel, DT, IR_VERSION, OPSET } = await import('../model/onnx.ts')
  return encodeModel({
    irVersion: IR_VERSION,
    opsetImport: [{ domain: '', version: OPSET }],
    producerName: 'blockmesh-provider-probe',
    graph: {
      name: 'probe',
      node: [node('Add', ['a', 'b'], ['c'], 'add')],
      input: [valueInfo('a', DT.FLOAT, [2]), valueInfo('b', DT.FLOAT, [2])],
      output: [valueInfo('c', DT.FLOAT, [2])]
    }
  })
}

async function childMain (names: string[]): Promise<void> {
  const emit = (ev: ChildEvent): void => { process.stdout.write(JSON.stringify(ev) + '\n') }
  try {
    const { default: ort } = await import('onnxruntime-node')
    const list = (ort as { listSupportedBackends?: () => Array<{ name: string }> }).listSupportedBackends
    const listed = typeof list === 'function' ? list().map(b => b.name) : ['cpu']
    emit({ t: 'backends', names: listed, version: ort.env.versions.node ?? ort.env.versions.common })
    const model = await probeModel()
    // test hook: BLOCKMESH_PROBE_FAULT=crash:cuda,hang:webgpu makes those providers' probes crash or hang
    const faults = new Map((process.env.BLOCKMESH_PROBE_FAULT ?? '').split(',').map(f => f.split(':').reverse() as [string, string]))
    for (const name of names.length > 0 ? names : orderProviders(listed)) {
      writeSync(2, `\n${MARK}${name}\n`)
      emit({ t: 'start', name })
      if (faults.get(name) === 'crash') { writeSync(2, 'simulated native crash\n'); process.kill(process.pid, 'SIGSEGV') }
      if (faults.get(name) === 'hang') await new Promise(() => setInterval(() => {}, 1000))
      try {
        const session = await ort.InferenceSession.create(model, { executionProviders: [name], intraOpNumThreads: 1, interOpNumThreads: 1 })
        const x = new ort.Tensor('float32', Float32Array.of(1, 2), [2])
        const out = await session.run({ a: x, b: x })
        const c = out.c.data as Float32Array
        await session.release()
        if (c[0] !== 2 || c[1] !== 4) throw new Error(`computed ${c[0]}, ${c[1]} for 1+1, 2+2`)
        emit({ t: 'done', name, ok: true })
      } catch (err) {
        emit({ t: 'done', name, ok: false, error: String((err as Error).message ?? err).slice(0, 4000) })
      }
    }
  } catch (err) {
    emit({ t: 'fatal', error: `onnxruntime-node does not load: ${cleanOrtError(String((err as Error).message ?? err))}` })
    process.stdout.write('', () => process.exit(3))
    return
  }
  // native threads (Dawn's) may keep the process alive: leave once the output is out
  process.stdout.write('', () => process.exit(0))
}

if (process.argv[1] === PROBE_FILE && process.argv[2] === CHILD_FLAG) await childMain(process.argv.slice(3))
