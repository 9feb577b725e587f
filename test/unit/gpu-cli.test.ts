// `blockmesh gpu setup|status`: argument handling and what each case prints, with the machine
// (nvidia-smi, the probe, onnxruntime-node's installer) replaced. test/gpu.test.ts runs the real one.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Command, CommanderError } from 'commander'
import { GpuSetupError, installerEnv, installerError, registerGpuCommand } from '../../agent/cli/commands/gpu.ts'
import type { GpuDeps, InstallResult } from '../../agent/cli/commands/gpu.ts'
import type { NvidiaPresence, ProbeReport } from '../../agent/executor/provider-probe.ts'

const CUDA_FILES = ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so', 'libonnxruntime_providers_tensorrt.so']
const H100: NvidiaPresence = { gpus: [{ index: 0, busId: '0', name: 'NVIDIA H100 80GB HBM3', memoryTotalMiB: 81559, memoryFreeMiB: 81000, utilisation: 0 }] }
const NONE: NvidiaPresence = { gpus: [], error: 'nvidia-smi not found' }
const ENOTFOUND = 'node:internal/process/promises:394\n    triggerUncaughtException(err, true /* fromPromise */);\n    ^\n\nError: getaddrinfo ENOTFOUND api.nuget.org\n    at GetAddrInfoReqWrap.onlookupall [as oncomplete] (node:dns:122:26) {\n  errno: -3008,\n}\n\nNode.js v22.23.3\n'

const dirs: string[] = []
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }) })

interface Harness { deps: GpuDeps, out: string[], err: string[], installs: Array<{ timeoutMs: number, verbose: boolean, reinstall: boolean }>, probes: number, binDir: string }

function harness (opts: { nvidia?: NvidiaPresence, install?: (binDir: string) => InstallResult, cudaLoads?: boolean, cudaFiles?: string[] } = {}): Harness {
  const binDir = mkdtempSync(join(tmpdir(), 'bm-gpu-cli-'))
  dirs.push(binDir)
  const h: Harness = { out: [], err: [], installs: [], probes: 0, binDir, deps: undefined as unknown as GpuDeps }
  h.deps = {
    ort: () => ({ dir: '/ort', version: '1.30.0', binDir, installScript: '/ort/script/install.js', platform: 'linux/x64', cudaFiles: opts.cudaFiles ?? CUDA_FILES, cudaPlatforms: ['linux/x64'] }),
    nvidia: async () => opts.nvidia ?? H100,
    probe: async (): Promise<ProbeReport> => {
      h.probes++
      return {
        providers: [
          { name: 'cpu', available: true },
          opts.cudaLoads === true ? { name: 'cuda', available: true } : { name: 'cuda', available: false, reason: 'libonnxruntime_providers_cuda.so not installed: run npx blockmesh gpu setup' }
        ],
        ort: { version: '1.30.0', binDir },
        nvidia: opts.nvidia ?? H100,
        probedAt: new Date(0).toISOString(),
        ms: 1
      }
    },
    install: async (_pkg, o) => { h.installs.push(o); return (opts.install ?? (() => ({ code: 1, timedOut: false, stderr: ENOTFOUND })))(binDir) },
    out: (t) => { h.out.push(t) },
    err: (t) => { h.err.push(t) }
  }
  return h
}

const installs = (binDir: string): InstallResult => {
  for (const f of CUDA_FILES) writeFileSync(join(binDir, f), 'elf')
  return { code: 0, timedOut: false, stderr: '' }
}

async function gpu (h: Harness, args: string[]): Promise<unknown> {
  const program = new Command('blockmesh').exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} })
  registerGpuCommand(program, h.deps)
  for (const cmd of program.commands) { cmd.exitOverride(); for (const sub of cmd.commands) sub.exitOverride() }
  try {
    await program.parseAsync(args, { from: 'user' })
    return undefined
  } catch (err) {
    return err
  }
}

test('gpu status and gpu setup --check only probe: the GPU, the ORT folder and a provider table', async () => {
  for (const args of [['gpu', 'status'], ['gpu', 'setup', '--check']]) {
    const h = harness({ nvidia: NONE })
    assert.equal(await gpu(h, args), undefined)
    assert.equal(h.probes, 1)
    assert.equal(h.installs.length, 0, 'nothing installed')
    const text = h.out.join('\n')
    assert.match(text, /^no NVIDIA GPU found \(nvidia-smi not found\)$/m)
    assert.match(text, /^PROVIDER +LOADS +WHY NOT$/m)
    assert.match(text, /^cpu +yes$/m)
    assert.match(text, /^cuda +no +libonnxruntime_providers_cuda\.so not installed: run npx blockmesh gpu setup$/m)
  }
})

test('gpu status --json prints the probe report', async () => {
  const h = harness()
  await gpu(h, ['gpu', 'status', '--json'])
  const report = JSON.parse(h.out.join('\n')) as ProbeReport
  assert.deepEqual(report.providers.map(p => [p.name, p.available]), [['cpu', true], ['cuda', false]])
})

test('gpu setup without an NVIDIA GPU refuses (exit 1), naming --force; the installer is not run', async () => {
  const h = harness({ nvidia: NONE })
  const err = await gpu(h, ['gpu', 'setup'])
  assert.ok(err instanceof GpuSetupError)
  assert.match(err.message, /^no NVIDIA GPU found \(nvidia-smi not found\): the CUDA provider would not load here\. .*--force/)
  assert.equal(h.installs.length, 0)
})

test('gpu setup --force without a GPU warns and runs the installer; a failed download is one clear error', async () => {
  const h = harness({ nvidia: NONE })
  const err = await gpu(h, ['gpu', 'setup', '--force', '--timeout', '60'])
  assert.deepEqual(h.installs, [{ timeoutMs: 60_000, verbose: false, reinstall: false }])
  assert.match(h.err.join('\n'), /^warning: no NVIDIA GPU found .*--force/)
  assert.ok(err instanceof GpuSetupError)
  assert.equal(err.message, 'could not download the CUDA provider: getaddrinfo ENOTFOUND api.nuget.org (it comes from api.nuget.org; behind a proxy set GLOBAL_AGENT_HTTPS_PROXY; --verbose shows the installer\'s output)')
  assert.equal(h.probes, 0, 'no probe after a failed download')
})

test('gpu setup on a GPU box: installer (default bound 30 min), files checked, probe; CUDA loading ends well', async () => {
  const h = harness({ install: installs, cudaLoads: true })
  assert.equal(await gpu(h, ['gpu', 'setup', '--verbose']), undefined)
  assert.deepEqual(h.installs, [{ timeoutMs: 1_800_000, verbose: true, reinstall: false }])
  assert.match(h.out[0], /^NVIDIA GPU: 1 × NVIDIA H100 80GB HBM3$/)
  assert.match(h.out.join('\n'), /^cuda +yes$/m)
  assert.match(h.out.at(-1) ?? '', /the CUDA provider loads: restart running agents/)
})

test('gpu setup: installed but CUDA still does not load is an error with the probe\'s reason', async () => {
  const h = harness({ install: installs, cudaLoads: false })
  const err = await gpu(h, ['gpu', 'setup'])
  assert.ok(err instanceof GpuSetupError)
  assert.match(err.message, /^the CUDA provider is installed but does not load here: libonnxruntime_providers_cuda\.so not installed/)
})

test('gpu setup: an installer that "succeeds" without writing the files is caught', async () => {
  const h = harness({ install: () => ({ code: 0, timedOut: false, stderr: '' }) })
  const err = await gpu(h, ['gpu', 'setup'])
  assert.ok(err instanceof GpuSetupError)
  assert.match(err.message, /^the installer finished but libonnxruntime_providers_cuda\.so, .* is not in /)
})

test('gpu setup with the libraries already there skips the download unless --reinstall', async () => {
  const h = harness({ cudaLoads: true })
  installs(h.binDir)
  assert.equal(await gpu(h, ['gpu', 'setup']), undefined)
  assert.equal(h.installs.length, 0)
  assert.match(h.out.join('\n'), /already in .*--reinstall/)
  await gpu(h, ['gpu', 'setup', '--reinstall'])
  assert.equal(h.installs.length, 1)
  assert.equal(h.installs[0].reinstall, true)
  assert.match(h.out.join('\n'), /ONNXRUNTIME_NODE_INSTALL=1 node /, 'a forced fetch')
})

test('gpu setup where onnxruntime-node has no CUDA download says so', async () => {
  const h = harness({ cudaFiles: [] })
  const err = await gpu(h, ['gpu', 'setup'])
  assert.ok(err instanceof GpuSetupError)
  assert.equal(err.message, 'onnxruntime-node 1.30.0 has no CUDA provider download for linux/x64 (its installer has one for linux/x64 only)')
})

test('misuse: bad --timeout, unknown flag, unknown subcommand are commander errors (exit 2)', async () => {
  for (const args of [['gpu', 'setup', '--timeout', '0'], ['gpu', 'setup', '--timeout', 'soon'], ['gpu', 'setup', '--frobnicate'], ['gpu', 'status', '--force'], ['gpu', 'install']]) {
    const h = harness()
    const err = await gpu(h, args)
    assert.ok(err instanceof CommanderError, `${args.join(' ')}: ${String(err)}`)
    assert.notEqual(err.exitCode, 0)
    assert.equal(h.installs.length + h.probes, 0)
  }
})

test('the installer runs with ONNXRUNTIME_NODE_INSTALL=cuda12 and without npm\'s variables that would make it skip', () => {
  const npmEnv = { PATH: '/bin', npm_config_local_prefix: '/repo', npm_package_json: '/repo/package.json', npm_config_onnxruntime_node_install: 'skip', ONNXRUNTIME_NODE_INSTALL: 'skip' }
  assert.deepEqual(installerEnv(npmEnv, false), { PATH: '/bin', ONNXRUNTIME_NODE_INSTALL: 'cuda12' })
  assert.deepEqual(installerEnv(npmEnv, true), { PATH: '/bin', ONNXRUNTIME_NODE_INSTALL: '1' })
})

test('the installer\'s error line is found under Node\'s unhandled-rejection banner; a timeout says so', () => {
  assert.equal(installerError({ code: 1, timedOut: false, stderr: ENOTFOUND }, 1000), 'getaddrinfo ENOTFOUND api.nuget.org')
  assert.equal(installerError({ code: 1, timedOut: false, stderr: 'Error: Failed to download from https://x. HTTP status code = 404\n' }, 1000), 'Failed to download from https://x. HTTP status code = 404')
  assert.equal(installerError({ code: null, timedOut: true, stderr: '' }, 90_000), 'the installer did not finish within 90 s')
  assert.equal(installerError({ code: 7, timedOut: false, stderr: '' }, 1000), 'the installer exited with code 7')
})
