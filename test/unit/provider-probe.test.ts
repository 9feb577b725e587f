// The provider probe's result shaping: what a provider's failure becomes in the capacity record,
// `blockmesh peers` and the dashboard. No ONNX Runtime here (test/gpu.test.ts runs the real probe).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  MAX_PROVIDERS, MAX_PROVIDER_REASON, cleanOrtError, missingLibraryIn, orderProviders, probeModel, providerLibraries,
  shapeStatus, shortReason, summarizeProviders
} from '../../agent/executor/provider-probe.ts'
import type { NvidiaPresence, ShapeContext } from '../../agent/executor/provider-probe.ts'
import * as record from '../../mesh/capacity/record.ts'
import { decodeModel } from '../../agent/model/onnx.ts'

const BIN = '/srv/app/node_modules/onnxruntime-node/bin/napi-v6/linux/x64'
// what ORT 1.30 printed and threw on a machine without the CUDA provider files
const SHARED_MISSING_LOG = `\x1b[1;31m2026-12-03 05:48:45.087817328 [E:onnxruntime:onnxruntime-node, provider_bridge_ort.cc:2146 Create] /onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:1988 onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library ${BIN}/libonnxruntime_providers_shared.so with error: ${BIN}/libonnxruntime_providers_shared.so: cannot open shared object file: No such file or directory\n\x1b[m`
const WEBGPU_ERROR = '/onnxruntime_src/onnxruntime/core/providers/webgpu/webgpu_context.cc:136 onnxruntime::webgpu::WebGpuContext::Initialize(const onnxruntime::webgpu::WebGpuContextConfig&)::<lambda()> adapter_result.status == wgpu::RequestAdapterStatus::Success was false. Failed to get a WebGPU adapter: No supported adapters\n'
const VULKAN_LOG = 'Warning: Couldn\'t load Vulkan: libvulkan.so.1: cannot open shared object file: No such file or directory\n    at operator() (/build/Release/_deps/dawn-src/src/dawn/native/vulkan/BackendVk.cpp:368)\n'

const gpu: NvidiaPresence = { gpus: [{ index: 0, busId: '00000000:01:00.0', name: 'NVIDIA H100 80GB HBM3', memoryTotalMiB: 81559, memoryFreeMiB: 81000, utilisation: 0 }] }
const none: NvidiaPresence = { gpus: [], error: 'nvidia-smi not found' }
const ctx = (over: Partial<ShapeContext> = {}): ShapeContext => ({ missing: [], nvidia: gpu, installable: true, platform: 'linux/x64', ...over })
const cudaMissing = ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so']
const loadFailed = { kind: 'error' as const, error: 'OrtSessionOptionsAppendExecutionProvider_Cuda: Failed to load shared library', log: SHARED_MISSING_LOG }

test('the record bounds the probe clips to are the capacity record\'s', () => {
  assert.equal(MAX_PROVIDERS, record.MAX_PROVIDERS)
  assert.equal(MAX_PROVIDER_REASON, record.MAX_PROVIDER_REASON)
})

test('a provider that loads is available, with no reason', () => {
  assert.deepEqual(shapeStatus('cpu', { kind: 'ok' }, ctx()), { name: 'cpu', available: true })
})

test('CUDA without its provider libraries: "not installed", with the command where a GPU is found', () => {
  assert.deepEqual(shapeStatus('cuda', loadFailed, ctx({ missing: cudaMissing })),
    { name: 'cuda', available: false, reason: 'libonnxruntime_providers_cuda.so not installed: run npx blockmesh gpu setup' })
  assert.equal(shapeStatus('cuda', loadFailed, ctx({ missing: cudaMissing, nvidia: none })).reason,
    'libonnxruntime_providers_cuda.so not installed; no NVIDIA GPU (nvidia-smi not found)')
  assert.equal(shapeStatus('tensorrt', loadFailed, ctx({ missing: ['libonnxruntime_providers_tensorrt.so'] })).reason,
    'libonnxruntime_providers_tensorrt.so not installed: run npx blockmesh gpu setup')
  assert.equal(shapeStatus('cuda', loadFailed, ctx({ missing: ['libonnxruntime_providers_cuda.dylib'], installable: false, platform: 'darwin/arm64' })).reason,
    'libonnxruntime_providers_cuda.dylib not installed: onnxruntime-node has no cuda download for darwin/arm64')
})

test('CUDA installed but a system library missing: which one, and what to install', () => {
  const log = `Failed to load library ${BIN}/libonnxruntime_providers_cuda.so with error: libcudnn.so.9: cannot open shared object file: No such file or directory`
  assert.equal(shapeStatus('cuda', { ...loadFailed, log }, ctx()).reason,
    'OrtSessionOptionsAppendExecutionProvider_Cuda: Failed to load shared library (libcudnn.so.9 not found: install cuDNN 9 for CUDA 12)')
  const cublas = 'with error: libcublasLt.so.12: cannot open shared object file: No such file or directory'
  assert.match(shapeStatus('cuda', { ...loadFailed, log: cublas }, ctx()).reason ?? '', /libcublasLt\.so\.12 not found: install the CUDA 12 runtime libraries\)$/)
})

test('CUDA installed on a machine without an NVIDIA GPU: "no NVIDIA GPU" and ORT\'s first line', () => {
  const error = '/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:129 std::conditional_t<THRW, void, onnxruntime::common::Status> onnxruntime::CudaCall(ERRTYPE, const char*, const char*, SUCCTYPE, const char*, const char*, int) [with ERRTYPE = cudaError; bool THRW = true; SUCCTYPE = cudaError; std::conditional_t<THRW, void, onnxruntime::common::Status> = void] CUDA failure 100: no CUDA-capable device is detected ; GPU=0 ; hostname=x\nmore'
  assert.equal(shapeStatus('cuda', { kind: 'error', error, log: '' }, ctx({ nvidia: { gpus: [], error: 'nvidia-smi lists no GPU' } })).reason,
    'no NVIDIA GPU (nvidia-smi lists no GPU): CUDA failure 100: no CUDA-capable device is detected ; GPU=0 ; hostname=x')
})

test('WebGPU without an adapter: ORT\'s message without its source location, and the Vulkan loader Dawn could not open', () => {
  assert.equal(cleanOrtError(WEBGPU_ERROR), 'Failed to get a WebGPU adapter: No supported adapters')
  assert.deepEqual(shapeStatus('webgpu', { kind: 'error', error: WEBGPU_ERROR, log: VULKAN_LOG }, ctx({ nvidia: none })), {
    name: 'webgpu',
    available: false,
    reason: 'Failed to get a WebGPU adapter: No supported adapters (libvulkan.so.1 not found: install the Vulkan loader, libvulkan1)'
  })
})

test('a probe that hangs or crashes says so; every reason fits the record (≤ 200 chars)', () => {
  assert.equal(shapeStatus('webgpu', { kind: 'timeout', ms: 20_000 }, ctx()).reason, 'probe timed out after 20 s')
  assert.equal(shapeStatus('dml', { kind: 'crash', exit: 'signal SIGSEGV', log: '' }, ctx()).reason, 'probe crashed (signal SIGSEGV)')
  const long = shapeStatus('webgpu', { kind: 'error', error: 'E'.repeat(5000), log: '' }, ctx())
  assert.equal(long.reason?.length, MAX_PROVIDER_REASON)
  assert.ok(long.reason?.endsWith('…'))
  assert.equal(shapeStatus('x'.repeat(40), { kind: 'timeout', ms: 1 }, ctx()).name.length, 32)
})

test('ORT errors become one line: no colours, no [ONNXRuntimeError] preamble, file names without folders', () => {
  assert.equal(cleanOrtError(SHARED_MISSING_LOG.slice(SHARED_MISSING_LOG.indexOf('Failed'))),
    'Failed to load library libonnxruntime_providers_shared.so with error: libonnxruntime_providers_shared.so: cannot open shared object file: No such file or directory')
  assert.equal(cleanOrtError('\x1b[1;31m[ONNXRuntimeError] : 1 : FAIL : bad thing\nsecond line'), 'bad thing')
  assert.equal(cleanOrtError('/src/x.cc:12 onnxruntime::Foo::Bar(int) [ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Exception during initialization: out of memory'), 'Exception during initialization: out of memory')
  assert.equal(cleanOrtError('  \n'), 'failed without a message')
  assert.equal(missingLibraryIn(SHARED_MISSING_LOG), undefined, 'ORT\'s own provider files are reported as "not installed", not as a system library')
  assert.equal(missingLibraryIn(VULKAN_LOG), 'libvulkan.so.1')
})

test('providers are probed CPU first and WebGPU last, at most 8, each once', () => {
  assert.deepEqual(orderProviders(['webgpu', 'tensorrt', 'cuda', 'dml', 'cpu', 'cuda']), ['cpu', 'cuda', 'tensorrt', 'dml', 'webgpu'])
  assert.equal(orderProviders(Array.from({ length: 12 }, (_, i) => `p${i}`)).length, 8)
})

test('the libraries each provider loads from onnxruntime-node\'s bin folder, per platform', () => {
  assert.deepEqual(providerLibraries('cuda', 'linux'), ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so'])
  assert.deepEqual(providerLibraries('tensorrt', 'win32'), ['onnxruntime_providers_tensorrt.dll', 'onnxruntime_providers_shared.dll'])
  assert.deepEqual(providerLibraries('cpu', 'linux'), [])
  assert.deepEqual(providerLibraries('webgpu', 'linux'), [])
})

test('a table cell: what loads, then what does not, grouped by a short reason', () => {
  const probed = [
    { name: 'cpu', available: true },
    { name: 'cuda', available: false, reason: 'libonnxruntime_providers_cuda.so not installed: run npx blockmesh gpu setup' },
    { name: 'tensorrt', available: false, reason: 'libonnxruntime_providers_tensorrt.so not installed; no NVIDIA GPU (nvidia-smi not found)' },
    { name: 'webgpu', available: false, reason: 'Failed to get a WebGPU adapter: No supported adapters (libvulkan.so.1 not found: install the Vulkan loader, libvulkan1)' }
  ]
  assert.equal(summarizeProviders(probed), 'cpu; cuda, tensorrt: not installed; webgpu: needs libvulkan.so.1')
  assert.equal(summarizeProviders([{ name: 'cpu', available: true }, { name: 'webgpu', available: true }]), 'cpu, webgpu')
  assert.equal(summarizeProviders([]), '-')
  assert.equal(shortReason('no NVIDIA GPU (nvidia-smi lists no GPU): CUDA failure 100'), 'no NVIDIA GPU')
  assert.equal(shortReason('probe timed out after 20 s'), 'timed out')
  assert.equal(shortReason('Failed to get a WebGPU adapter: No supported adapters'), 'no adapter')
  assert.equal(shortReason(undefined), 'does not load')
})

test('the probe model is one Add node over two floats', async () => {
  const m = decodeModel(await probeModel())
  assert.deepEqual(m.graph?.node?.map(n => n.opType), ['Add'])
  assert.deepEqual(m.graph?.input?.map(i => i.name), ['a', 'b'])
})
