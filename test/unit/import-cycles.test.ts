// Folder-level import cycles (scripts/import-cycles.ts): the repository has none, and the finder finds one
// when there is one.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { contractValueImports, describe, folderCycles, readSources } from '../../scripts/import-cycles.ts'

test('no folder of agent/, mesh/, contracts/ or renderer/src imports its way back to itself', () => {
  const sources = readSources()
  assert.ok(sources.size > 100, `read ${sources.size} source files`)
  assert.deepEqual(folderCycles(sources).map(describe), [])
})

test('code that runs imports contracts/ for types only', () => {
  assert.deepEqual(contractValueImports(readSources()).map(i => `${i.from} → ${i.to}`), [])
})

test('the finder sees a cycle between folders, through type imports and around a loop, and nothing else', () => {
  const src = (entries: Record<string, string>): Map<string, string> => new Map(Object.entries(entries))
  // two folders importing each other (one of them for a type only)
  const pair = folderCycles(src({
    'agent/registry/blocks.ts': "import { PolicySchema } from '../scheduler/policy.ts'\n",
    'agent/scheduler/policy.ts': "import type { Size } from '../registry/components.ts'\n",
    'agent/registry/components.ts': 'export type Size = number\n'
  }))
  assert.equal(pair.length, 1)
  assert.deepEqual(pair[0].folders, ['agent/registry', 'agent/scheduler'])
  assert.equal(pair[0].imports.length, 2)
  // a loop over three folders, with a multi-line import and an export-from
  const loop = folderCycles(src({
    'agent/a/x.ts': "import {\n  y\n} from '../b/y.ts'\n",
    'agent/b/y.ts': "export { z } from '../c/z.ts'\n",
    'agent/c/z.ts': "import '../a/x.ts'\n"
  }))
  assert.deepEqual(loop.map(c => c.folders), [['agent/a', 'agent/b', 'agent/c']])
  // a parent folder's loose files are its room: a loop through them and a sibling is found, whatever the subfolders
  const parent = folderCycles(src({
    'agent/model/import.ts': "import { slugOf } from '../splitter/plan.ts'\nimport { convert } from './gguf/convert.ts'\n",
    'agent/model/gguf/convert.ts': "import { encode } from '../onnx.ts'\n",
    'agent/model/onnx.ts': 'export const encode = 1\n',
    'agent/splitter/plan.ts': "import { encode } from '../model/onnx.ts'\n"
  }))
  assert.deepEqual(parent.map(c => c.folders), [['agent/model', 'agent/splitter']])
  // not cycles: files of one folder, a root's loose files (composition root and shared leaves), a parent
  // folder's loose files with its subfolders, packages
  assert.deepEqual(folderCycles(src({
    'agent/blocks/owner.ts': "import { x } from './store.ts'\n",
    'agent/blocks/store.ts': "import { y } from './owner.ts'\nimport { AgentError } from '../errors.ts'\n",
    'agent/daemon.ts': "import { BlockOwner } from './blocks/owner.ts'\n",
    'agent/errors.ts': "import { z } from 'zod'\n",
    'agent/api/server.ts': "import { routes } from './routes/blocks.ts'\n",
    'agent/api/routes/blocks.ts': "import type { ApiContext } from '../context.ts'\n",
    'agent/api/context.ts': "import type { BlockOwner } from '../blocks/owner.ts'\n"
  })), [])
})

test('contracts imported as a value from code that runs is reported', () => {
  const found = contractValueImports(new Map([
    ['agent/api/routes/blocks.ts', "import { BlocksAnswer } from '../../../contracts/api.ts'\n"],
    ['agent/cli/commands/peers.ts', "import type { PeersAnswer } from '../../../contracts/api.ts'\n"],
    ['renderer/src/types.ts', "import { x } from '../../contracts/api.ts'\n"]
  ]))
  assert.deepEqual(found.map(i => i.from), ['agent/api/routes/blocks.ts'])
})
