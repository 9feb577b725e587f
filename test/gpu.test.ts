// GPU readiness on this machine, for real: the provider probe and `blockmesh gpu`. This machine has
// onnxruntime-node's CPU build only (no CUDA provider libraries, no NVIDIA GPU, no Vulkan) and no
// route to NuGet, so CUDA must be reported "not installed" and `gpu setup` must fail cleanly.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { lookup } from 'node:dns/promises'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { cli } from './helpers/cli.ts'
import { detectNvidia, ortPackage, probeProviders } from '../agent/executor/provider-probe.ts'

const ort = ortPackage()
const cudaInstalled = existsSync(join(ort.binDir, 'libonnxruntime_providers_cuda.so'))
const nvidia = await detectNvidia()
const reachesNuget = await lookup('api.nuget.org').then(() => true, () => false)

/** Every file under onnxruntime-node's bin folder with its size and mtime. */
function binListing (): string[] {
  const out: string[] = []
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name)
      if (e.isDirectory()) walk(p)
      else { const s = statSync(p); out.push(`${p} ${s.size} ${s.mtimeMs}`) }
    }
  }
  walk(join(ort.dir, 'bin'))
  return out.sort()
}

test('the real probe: CPU loads; CUDA is unavailable because this machine has no CUDA provider libraries', {
  skip: cudaInstalled ? `the CUDA provider libraries are installed in ${ort.binDir}` : false
}, async () => {
  const r = await probeProviders()
  const byName = new Map(r.providers.map(p => [p.name, p]))
  assert.deepEqual(byName.get('cpu'), { name: 'cpu', available: true })
  assert.equal(r.providers[0].name, 'cpu', 'CPU is probed first')
  const cuda = byName.get('cuda')
  assert.ok(cuda != null, `onnxruntime-node ${r.ort.version} lists cuda: ${JSON.stringify(r.providers)}`)
  assert.equal(cuda.available, false)
  assert.match(cuda.reason ?? '', /^libonnxruntime_providers_cuda\.so not installed[:;] /)
  if (nvidia.gpus.length === 0) assert.match(cuda.reason ?? '', /no NVIDIA GPU \(/)
  for (const p of r.providers) {
    assert.ok(p.available || (p.reason != null && p.reason.length > 0 && p.reason.length <= 200), JSON.stringify(p))
    assert.doesNotMatch(p.reason ?? '', /\x1b|\/onnxruntime_src\//, 'no colour codes or ORT source paths in a reason')
  }
  assert.ok(r.providers.length <= 8)
  assert.equal(r.ort.binDir, ort.binDir)
})

test('blockmesh gpu status prints the same, and exits 0', { skip: cudaInstalled ? 'the CUDA provider is installed here' : false }, () => {
  const r = cli(['gpu', 'status'], { timeoutMs: 120_000 })
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /^PROVIDER +LOADS +WHY NOT$/m)
  assert.match(r.stdout, /^cpu +yes$/m)
  assert.match(r.stdout, /^cuda +no +libonnxruntime_providers_cuda\.so not installed/m)
  assert.equal(r.stderr, '', 'the native libraries\' noise stays in the probe')
  const json = JSON.parse(cli(['gpu', 'setup', '--check', '--json'], { timeoutMs: 120_000 }).stdout) as { providers: Array<{ name: string, available: boolean }> }
  assert.equal(json.providers.find(p => p.name === 'cpu')?.available, true)
})

test('blockmesh gpu setup without an NVIDIA GPU refuses (exit 1) and names --force', { skip: nvidia.gpus.length > 0 ? 'this machine has an NVIDIA GPU' : false }, () => {
  const before = binListing()
  const r = cli(['gpu', 'setup'], { timeoutMs: 60_000 })
  assert.equal(r.code, 1, r.stderr)
  assert.match(r.stderr, /^error: no NVIDIA GPU found \(.*\): the CUDA provider would not load here\. .*--force/m)
  assert.deepEqual(binListing(), before)
})

test('blockmesh gpu setup --force without network: "could not download the CUDA provider", exit 1, node_modules untouched', {
  skip: reachesNuget ? 'this machine resolves api.nuget.org: the installer would download the CUDA provider (~hundreds of MB) into node_modules' : cudaInstalled ? 'the CUDA provider is installed here' : false
}, () => {
  const before = binListing()
  const r = cli(['gpu', 'setup', '--force', '--timeout', '60'], { timeoutMs: 90_000 })
  assert.equal(r.code, 1, `stdout ${r.stdout}\nstderr ${r.stderr}`)
  assert.match(r.stdout, /fetching the CUDA 12 provider .* with onnxruntime-node's installer: ONNXRUNTIME_NODE_INSTALL=cuda12 node \S*install\.js/)
  assert.match(r.stderr, /^error: could not download the CUDA provider: getaddrinfo (ENOTFOUND|EAI_AGAIN) api\.nuget\.org /m)
  assert.doesNotMatch(r.stderr, /triggerUncaughtException|at GetAddrInfoReqWrap/, 'no stack trace from the installer')
  assert.deepEqual(binListing(), before, 'nothing in onnxruntime-node/bin was added, removed or changed')

  // as `npx blockmesh gpu setup` runs it: npm's variables name this repository as the package being
  // installed, which onnxruntime-node's script takes for its own checkout and skips; it must still try
  const root = join(import.meta.dirname, '..')
  const npm = { npm_config_local_prefix: root, npm_package_json: join(root, 'package.json'), npm_config_onnxruntime_node_install: 'skip' }
  Object.assign(process.env, npm)
  try {
    const viaNpx = cli(['gpu', 'setup', '--force', '--timeout', '60'], { timeoutMs: 90_000 })
    assert.equal(viaNpx.code, 1)
    assert.match(viaNpx.stderr, /^error: could not download the CUDA provider: getaddrinfo/m)
  } finally {
    for (const k of Object.keys(npm)) delete process.env[k]
  }
  assert.deepEqual(binListing(), before)
})

test('a provider whose probe crashes or hangs is reported as such; the others are still probed (in a new child)', async () => {
  process.env.BLOCKMESH_PROBE_FAULT = 'crash:cpu,hang:tensorrt'
  try {
    const r = await probeProviders({ timeoutMs: 2000, nvidia: { gpus: [], error: 'nvidia-smi not found' } })
    const byName = new Map(r.providers.map(p => [p.name, p]))
    assert.deepEqual(byName.get('cpu'), { name: 'cpu', available: false, reason: 'probe crashed (signal SIGSEGV)' })
    const trt = byName.get('tensorrt')
    if (!existsSync(join(ort.binDir, 'libonnxruntime_providers_tensorrt.so'))) assert.match(trt?.reason ?? '', /not installed/, 'missing libraries stay the reason')
    else assert.equal(trt?.reason, 'probe timed out after 2 s')
    assert.ok(byName.has('cuda') && byName.has('webgpu'), `the providers after the crash and the hang were probed: ${JSON.stringify(r.providers)}`)
  } finally {
    delete process.env.BLOCKMESH_PROBE_FAULT
  }
})

test('a hung probe is bounded: it times out and says after how long', async () => {
  process.env.BLOCKMESH_PROBE_FAULT = 'hang:cpu'
  try {
    const r = await probeProviders({ names: ['cpu'], timeoutMs: 1000 })
    assert.deepEqual(r.providers, [{ name: 'cpu', available: false, reason: 'probe timed out after 1 s' }])
  } finally {
    delete process.env.BLOCKMESH_PROBE_FAULT
  }
})
