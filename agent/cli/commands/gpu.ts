import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join, relative } from 'node:path'
import type { Command } from 'commander'
import { AgentError } from '../../errors.ts'
import { intArg } from '../args.ts'
import { table } from '../format.ts'
import { detectNvidia, ortPackage, probeProviders } from '../../executor/provider-probe.ts'
import type { NvidiaPresence, OrtPackage, ProbeReport } from '../../executor/provider-probe.ts'

/** `blockmesh gpu …` failed at run time (exit 1). */
export class GpuSetupError extends AgentError {
  constructor (message: string) {
    super(message, 'gpu_setup_failed', 500)
    this.name = 'GpuSetupError'
  }
}

export interface InstallResult {
  /** exit code (null when killed) */
  code: number | null
  timedOut: boolean
  /** what the installer wrote to stderr (its error, when it failed) */
  stderr: string
}

/** What the command does to the machine, replaceable in tests. */
export interface GpuDeps {
  ort: () => OrtPackage
  nvidia: () => Promise<NvidiaPresence>
  probe: () => Promise<ProbeReport>
  /** runs onnxruntime-node's installer with ONNXRUNTIME_NODE_INSTALL=cuda12 */
  install: (pkg: OrtPackage, opts: { timeoutMs: number, verbose: boolean, reinstall: boolean }) => Promise<InstallResult>
  out: (text: string) => void
  err: (text: string) => void
}

/**
 * The installer's environment. onnxruntime-node 1.30's flag parser returns nothing for "cuda12" (its
 * `default:` branch has no `return`), so the script falls back to its default, which on linux/x64 is
 * cuda12 when a file is missing, unless npm's variables say this is onnxruntime-node's own checkout
 * (`npm_package_json` in `npm_config_local_prefix`): under `npx blockmesh` in this repository they name
 * Blockmesh's package.json and root, and the script would exit 0 having fetched nothing. So those go,
 * with the .npmrc `onnxruntime-node-install=skip` that npm passes on; "1" forces a fetch (--reinstall).
 */
export function installerEnv (env: NodeJS.ProcessEnv, reinstall: boolean): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = { ...env, ONNXRUNTIME_NODE_INSTALL: reinstall ? '1' : 'cuda12' }
  for (const k of ['npm_config_local_prefix', 'npm_package_json', 'npm_config_onnxruntime_node_install', 'npm_config_onnxruntime_node_install_cuda', 'ONNXRUNTIME_NODE_INSTALL_CUDA']) delete out[k]
  return out
}

/** Runs `node <onnxruntime-node>/script/install.js` with the CUDA 12 flag; its stdout (progress) goes to ours. */
export async function runOrtInstaller (pkg: OrtPackage, opts: { timeoutMs: number, verbose: boolean, reinstall?: boolean }): Promise<InstallResult> {
  return await new Promise(resolve => {
    const child = spawn(process.execPath, [pkg.installScript], {
      cwd: pkg.dir,
      env: installerEnv(process.env, opts.reinstall === true),
      stdio: ['ignore', 'inherit', 'pipe'],
      windowsHide: true
    })
    let stderr = ''
    child.stderr?.setEncoding('utf8')
    child.stderr?.on('data', (chunk: string) => {
      if (stderr.length < 64 * 1024) stderr += chunk
      if (opts.verbose) process.stderr.write(chunk)
    })
    let timedOut = false
    const timer = setTimeout(() => { timedOut = true; child.kill('SIGTERM') }, opts.timeoutMs)
    child.once('error', err => { clearTimeout(timer); resolve({ code: null, timedOut, stderr: `Error: ${err.message}` }) })
    child.once('close', code => { clearTimeout(timer); resolve({ code, timedOut, stderr }) })
  })
}

export const defaultGpuDeps: GpuDeps = {
  ort: ortPackage,
  nvidia: async () => await detectNvidia(),
  probe: async () => await probeProviders(),
  install: runOrtInstaller,
  out: (text) => { process.stdout.write(text + '\n') },
  err: (text) => { process.stderr.write(text + '\n') }
}

/** The error line of a failed installer run ("Error: getaddrinfo ENOTFOUND api.nuget.org" → after "Error: "). */
export function installerError (r: InstallResult, timeoutMs: number): string {
  if (r.timedOut) return `the installer did not finish within ${Math.round(timeoutMs / 1000)} s`
  const lines = r.stderr.split('\n').map(l => l.trim())
  const err = lines.find(l => /^(?:\w*Error|Error \[\w+\]):\s/.test(l))
  if (err != null) return err.replace(/^(?:\w*Error|Error \[\w+\]):\s*/, '')
  const last = lines.filter(l => l !== '' && !l.startsWith('at ') && !/^Node\.js v/.test(l)).at(-1)
  return last ?? `the installer exited with code ${String(r.code)}`
}

export function describeNvidia (n: NvidiaPresence): string {
  if (n.gpus.length === 0) return `no NVIDIA GPU found (${n.error ?? 'nvidia-smi lists none'})`
  const names = [...new Set(n.gpus.map(g => g.name))]
  return `NVIDIA GPU: ${n.gpus.length} × ${names.join(', ')}`
}

export function providersReport (r: ProbeReport): string {
  return table(['PROVIDER', 'LOADS', 'WHY NOT'], r.providers.map(p => [p.name, p.available ? 'yes' : 'no', p.available ? '' : p.reason ?? '']))
}

export interface GpuSetupOptions {
  force: boolean
  check: boolean
  reinstall: boolean
  timeoutMs: number
  verbose: boolean
  json: boolean
}

async function status (deps: GpuDeps, json: boolean): Promise<ProbeReport> {
  const report = await deps.probe()
  if (json) {
    deps.out(JSON.stringify(report, null, 2))
  } else {
    deps.out(describeNvidia(report.nvidia))
    deps.out(`onnxruntime-node ${report.ort.version}: ${report.ort.binDir}`)
    deps.out(providersReport(report))
  }
  return report
}

/**
 * `blockmesh gpu setup`: checks for an NVIDIA GPU, fetches ONNX Runtime's
 * CUDA 12 provider libraries with onnxruntime-node's own installer, then
 * probes again and says which providers load. `--check` only probes.
 */
export async function gpuSetup (opts: GpuSetupOptions, deps: GpuDeps = defaultGpuDeps): Promise<void> {
  if (opts.check) { await status(deps, opts.json); return }
  const pkg = deps.ort()
  const nvidia = await deps.nvidia()
  deps.out(describeNvidia(nvidia))
  if (pkg.cudaFiles.length === 0) {
    throw new GpuSetupError(`onnxruntime-node ${pkg.version} has no CUDA provider download for ${pkg.platform}` +
      (pkg.cudaPlatforms.length > 0 ? ` (its installer has one for ${pkg.cudaPlatforms.join(', ')} only)` : ''))
  }
  if (nvidia.gpus.length === 0) {
    if (!opts.force) {
      throw new GpuSetupError(`${describeNvidia(nvidia)}: the CUDA provider would not load here. Install the NVIDIA driver first, or run with --force to fetch the provider anyway (e.g. into an image built without a GPU)`)
    }
    deps.err(`warning: ${describeNvidia(nvidia)}; fetching the CUDA provider anyway (--force)`)
  }
  const present = pkg.cudaFiles.filter(f => existsSync(join(pkg.binDir, f)))
  if (present.length === pkg.cudaFiles.length && !opts.reinstall) {
    deps.out(`the CUDA provider libraries are already in ${pkg.binDir} (--reinstall fetches them again)`)
  } else {
    const rel = relative(process.cwd(), pkg.installScript)
    const flag = installerEnv({}, opts.reinstall).ONNXRUNTIME_NODE_INSTALL as string
    deps.out(`fetching the CUDA 12 provider (${pkg.cudaFiles.join(', ')}) from NuGet with onnxruntime-node's installer: ONNXRUNTIME_NODE_INSTALL=${flag} node ${rel.startsWith('..') ? pkg.installScript : rel}`)
    const r = await deps.install(pkg, { timeoutMs: opts.timeoutMs, verbose: opts.verbose, reinstall: opts.reinstall })
    if (r.code !== 0 || r.timedOut) {
      throw new GpuSetupError(`could not download the CUDA provider: ${installerError(r, opts.timeoutMs)}` +
        ' (it comes from api.nuget.org; behind a proxy set GLOBAL_AGENT_HTTPS_PROXY' + (opts.verbose ? ')' : '; --verbose shows the installer\'s output)'))
    }
    if (!opts.verbose && r.stderr.trim() !== '') deps.err(r.stderr.trimEnd())
    const missing = pkg.cudaFiles.filter(f => !existsSync(join(pkg.binDir, f)))
    if (missing.length > 0) throw new GpuSetupError(`the installer finished but ${missing.join(', ')} is not in ${pkg.binDir}`)
  }
  const report = await status(deps, opts.json)
  const cuda = report.providers.find(p => p.name === 'cuda')
  if (cuda?.available === true) {
    deps.out('the CUDA provider loads: restart running agents to use it (they probe the providers when they start)')
  } else if (nvidia.gpus.length === 0) {
    deps.out('the CUDA provider is installed; it will load on a machine with an NVIDIA GPU, its driver, CUDA 12 and cuDNN 9')
  } else {
    throw new GpuSetupError(`the CUDA provider is installed but does not load here: ${cuda?.reason ?? 'onnxruntime-node does not list it'}`)
  }
}

export function registerGpuCommand (program: Command, deps: GpuDeps = defaultGpuDeps): void {
  const gpu = program.command('gpu')
    .description('GPU readiness: which ONNX Runtime execution providers load here, and installing the CUDA one')
  gpu.command('setup')
    .description('fetch ONNX Runtime\'s CUDA 12 provider with onnxruntime-node\'s installer (needs an NVIDIA GPU and internet), then say which providers load')
    .option('--check', 'only probe and print which providers load (same as `gpu status`)')
    .option('--force', 'fetch the CUDA provider even where no NVIDIA GPU is found')
    .option('--reinstall', 'fetch it even when its libraries are already there')
    .option('--timeout <seconds>', 'give up on the download after this long', intArg(1, 86_400), 1800)
    .option('--verbose', 'show the installer\'s own error output')
    .option('--json', 'print the probe report as JSON')
    .action(async (o: { check?: boolean, force?: boolean, reinstall?: boolean, timeout: number, verbose?: boolean, json?: boolean }) => {
      await gpuSetup({ check: o.check === true, force: o.force === true, reinstall: o.reinstall === true, timeoutMs: o.timeout * 1000, verbose: o.verbose === true, json: o.json === true }, deps)
    })
  gpu.command('status')
    .description('probe and print which execution providers load here, and why the others do not')
    .option('--json', 'print the probe report as JSON')
    .action(async (o: { json?: boolean }) => {
      await status(deps, o.json === true)
    })
}
