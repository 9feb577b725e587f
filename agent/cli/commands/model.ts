import { writeFileSync } from 'node:fs'
import { resolve } from 'node:path'
import type { Command } from 'commander'
import { generateModel } from '../../model/generate.ts'
import { ModelSpecSchema, PRESETS } from '../../model/spec.ts'
import { ValidationError, formatIssues } from '../../errors.ts'
import { intArg } from '../args.ts'
import { formatBytes } from '../format.ts'

export function registerModelCommand (program: Command): void {
  const model = program.command('model').description('models: generate the demo GPT-style ONNX decoder')
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
