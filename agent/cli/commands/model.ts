import { writeFileSync } from 'node:fs'
import { resolve } from 'node:path'
import type { Command } from 'commander'
import { ndjsonLines } from '../client.ts'
import { generateModel } from '../../model/generate.ts'
import { ModelSpecSchema, PRESETS } from '../../model/spec.ts'
import { ValidationError, formatIssues } from '../../errors.ts'
import { intArg } from '../args.ts'
import { formatBytes, table } from '../format.ts'
import { needToken, print, withTarget } from '../target.ts'
import type { TargetOpts } from '../target.ts'
import { AgentError } from '../../errors.ts'
import type { AddModelEvent, ImportProgress, ModelInfo, ModelsAnswer } from '../../../contracts/api.ts'

interface AddOpts extends TargetOpts { name?: string, file?: string, variant?: string, weights?: string, contextLength?: number }

function progressLine (p: ImportProgress): string {
  if (p.phase === 'download') return `downloading ${p.file.replace(/^.*\//, '')}: ${formatBytes(p.receivedBytes)}${p.totalBytes != null ? ` of ${formatBytes(p.totalBytes)} (${Math.floor(100 * p.receivedBytes / Math.max(1, p.totalBytes))}%)` : ''}`
  return `${p.phase}: ${p.done}/${p.total}`
}

function infoLine (i: ModelInfo | null): string {
  if (i == null) return ''
  return `${i.architecture}, ${(i.parameters / 1e6).toFixed(0)}M params, ${i.quantization}, vocab ${i.vocabSize}, chat template ${i.chatTemplate ? 'yes' : 'no (fallback)'}`
}

/** POST /api/models with progress lines (NDJSON) shown on stderr as they come. */
async function addModel (opts: AddOpts, source: string): Promise<Extract<AddModelEvent, { type: 'done' }>> {
  const res = await fetch(`${opts.api}/api/models`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/x-ndjson', authorization: `Bearer ${needToken(opts)}` },
    body: JSON.stringify({ source, name: opts.name, file: opts.file, variant: opts.variant, weights: opts.weights, contextLength: opts.contextLength })
  }).catch((err: Error) => { throw new AgentError(`cannot reach the agent API at ${opts.api}: ${err.message} (is an agent running? start one with: npm start)`, 'unreachable', 1) })
  if (!res.ok || res.body == null) {
    const text = await res.text()
    let message = text.slice(0, 500)
    try { const j = JSON.parse(text) as { error?: { code?: string, message?: string } }; message = `${j.error?.code ?? 'error'}: ${j.error?.message ?? text}` } catch {}
    throw new AgentError(`${res.status} ${message}`, 'http_error', 1)
  }
  const tty = process.stderr.isTTY === true && opts.json !== true
  for await (const e of ndjsonLines<AddModelEvent>(res.body as unknown as AsyncIterable<Uint8Array>)) {
    if (e.type === 'progress' && opts.json !== true) process.stderr.write(tty ? `\r\x1b[2K${progressLine(e.progress)}` : `${progressLine(e.progress)}\n`)
    if (e.type === 'error') { if (tty) process.stderr.write('\n'); throw new AgentError(`${e.error.code}: ${e.error.message}`, e.error.code, 1) }
    if (e.type === 'done') { if (tty) process.stderr.write('\n'); return e }
  }
  throw new AgentError('the agent closed the answer before the model was added', 'incomplete', 1)
}

export function registerModelCommand (program: Command): void {
  const model = program.command('model').description('models: add real models (GGUF, Hugging Face ONNX, hf://, ollama://, URLs), list them, generate the demo decoder')
  withTarget(model.command('add')
    .description('onboard a model as a component: a local .gguf, a Hugging Face ONNX export directory, hf://ORG/REPO[@REV][/PATH], ollama://NAME[:TAG] or an http(s) URL of a GGUF')
    .argument('<source>')
    .option('--name <name>', 'component name (default: from the source)')
    .option('--file <path>', 'which file of a hub repo or export directory')
    .option('--variant <v>', 'quantization (GGUF: q4_k_m, q8_0, …) or dtype (ONNX export: fp32, fp16, q4, int8, …)')
    .option('--weights <how>', 'GGUF conversion: q8 (quantized weights stay quantized; 8-bit ones computed with int8 activations, like llama.cpp; default), int8 (all computed with int8 activations: fastest), q4 (only 4-bit forms kept, computed exactly) or f32')
    .option('--context-length <n>', 'positions to serve (default: the model\'s, at most 8192)', intArg(16, 1_048_576)))
    .action(async (source: string, opts: AddOpts) => {
      if (opts.weights != null && !['q8', 'int8', 'q4', 'f32'].includes(opts.weights)) throw new ValidationError(`--weights: q8, int8, q4 or f32, got ${JSON.stringify(opts.weights)}`)
      const r = await addModel(opts, source)
      print(opts, r, () => `${r.existed ? 'already added' : 'added'} ${r.component.uri}${r.cached ? ' (conversion cached)' : ''}\n  ${infoLine(r.component.spec.modelInfo ?? null)}\n  context ${r.component.spec.contextLength ?? '?'}; deploy it: blockmesh block create --component ${r.component.uri} --id ${r.component.spec.name}`)
    })
  withTarget(model.command('list').description('models registered on the agent, with what they are'))
    .action(async (opts: TargetOpts) => {
      const res = await fetch(`${opts.api}/api/models`).catch((err: Error) => { throw new AgentError(`cannot reach the agent API at ${opts.api}: ${err.message}`, 'unreachable', 1) })
      const body = await res.json() as ModelsAnswer
      print(opts, body, () => [
        table(['COMPONENT', 'ARCH', 'PARAMS', 'QUANT', 'CONTEXT', 'VOCAB', 'TEMPLATE', 'SOURCE'], body.models.map(m => [
          m.uri, m.info?.architecture ?? '-', m.info != null ? `${(m.info.parameters / 1e6).toFixed(0)}M` : '-', m.info?.quantization ?? '-', String(m.contextLength ?? '-'),
          String(m.info?.vocabSize ?? '-'), m.info == null ? '-' : m.info.chatTemplate ? 'yes' : 'fallback', m.info?.source ?? '-'])),
        '',
        // per file, which agents hold it (a partial holder is fetching it, with its progress)
        table(['COMPONENT', 'FILE', 'MD5', 'SIZE', 'HELD BY'], body.models.flatMap(m => m.files.map(f => [
          m.uri, f.role, f.md5, f.sizeBytes != null ? formatBytes(f.sizeBytes) : '-',
          f.holders.length === 0 ? 'nobody (its origin only)' : f.holders.map(h => h.state === 'complete' ? h.name : `${h.name} (${Math.floor(100 * (h.receivedBytes ?? 0) / Math.max(1, h.totalBytes ?? 1))}%)`).join(', ')])))
      ].join('\n'))
    })
  model.command('generate')
    .description('write a deterministic GPT-style decoder as ONNX (same arguments → same MD5)')
    .option('--preset <name>', `start from a named size: ${Object.keys(PRESETS).join(', ')}`)
    .option('--layers <n>', 'transformer blocks', intArg(1, 96))
    .option('--hidden <n>', 'hidden size', intArg(16, 8192))
    .option('--heads <n>', 'attention heads (must divide hidden)', intArg(1, 128))
    .option('--vocab <n>', 'vocabulary size (>= 259: 256 bytes + BOS, EOS, PAD)', intArg(259, 262_144))
    .option('--max-positions <n>', 'context length (position table size)', intArg(16, 65_536))
    .option('--seed <n>', 'seed for the random parts', intArg(0, 0xffffffff), 1)
    .requiredOption('--out <file>', 'where to write the .onnx file')
    .option('--component <file>', 'also write a component spec (JSON) for this model')
    .option('--name <name>', 'component name for --component', 'demo-gpt')
    .action((opts: Record<string, string | number | undefined>) => {
      const preset = opts.preset != null ? PRESETS[String(opts.preset)] : undefined
      if (opts.preset != null && preset == null) throw new ValidationError(`--preset: unknown preset ${JSON.stringify(opts.preset)}; known: ${Object.keys(PRESETS).join(', ')}`)
      const raw = {
        layers: opts.layers ?? preset?.layers,
        hidden: opts.hidden ?? preset?.hidden,
        heads: opts.heads ?? preset?.heads,
        vocab: opts.vocab ?? preset?.vocab ?? 259,
        maxPositions: opts.maxPositions ?? preset?.maxPositions,
        seed: opts.seed
      }
      const parsed = ModelSpecSchema.safeParse(raw)
      if (!parsed.success) {
        throw new ValidationError(formatIssues(parsed.error.issues).map(i => `--${i.field.replace(/[A-Z]/g, c => '-' + c.toLowerCase())}: ${i.message}${i.field === 'layers' || i.field === 'hidden' || i.field === 'heads' ? ' (or use --preset)' : ''}`).join('\n'))
      }
      const out = resolve(String(opts.out))
      let last = -1
      const m = generateModel(parsed.data, out, (done, total) => {
        const pct = Math.floor(100 * done / total)
        if (pct !== last && pct % 10 === 0) { process.stderr.write(`\rgenerating: ${pct}%`); last = pct }
      })
      process.stderr.write('\n')
      process.stdout.write(`wrote ${m.path}\n  md5 ${m.md5}\n  ${formatBytes(m.sizeBytes)}, ${(m.parameters / 1e6).toFixed(2)}M parameters (${m.spec.layers} layers, hidden ${m.spec.hidden}, ${m.spec.heads} heads, vocab ${m.spec.vocab}, context ${m.spec.maxPositions})\n`)
      if (opts.component != null) {
        const spec = {
          name: String(opts.name), version: `${m.md5.slice(0, 8)}`, runtime: 'onnx',
          description: `generated GPT-style decoder, ${(m.parameters / 1e6).toFixed(1)}M parameters`,
          model: { url: m.path, md5: m.md5, sizeBytes: m.sizeBytes },
          tokenizer: { type: 'byte' },
          contextLength: m.spec.maxPositions,
          resources: { ram: Math.ceil(m.sizeBytes * 1.5) }
        }
        writeFileSync(String(opts.component), JSON.stringify(spec, null, 2) + '\n')
        process.stdout.write(`  component spec ${opts.component} (uri ${spec.name}:${spec.version})\n`)
      }
    })
}
