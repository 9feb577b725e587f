/**
 * Where a model's files come from, once they are in the mesh (issue 15).
 *
 * A Hugging Face ONNX export whose weights are in external data (`onnx/model.onnx` + `model.onnx_data`, as
 * optimum writes models over 2 GB) travels as two files: added on agent A with `POST /api/models`, served by
 * agent B, which cannot see A's files (an empty tmpfs over them in B's own mount namespace). B fetches both
 * from A over the mesh, puts them side by side and answers like A does.
 *
 * A model added from a URL on one agent is not downloaded again when another agent adds the same URL: the
 * component is already in the mesh's desired state, and its files come from the peers that hold them (a
 * local HTTP server counts the downloads).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { convertGguf } from '../agent/model/gguf/convert.ts'
import { onnx } from '../agent/model/onnx.ts'
import { md5File } from '../agent/model/source.ts'
import { tinyLlama, writeExportSideFiles } from './helpers/tiny-gguf.ts'
import { AgentProcess, canHide, stopAll, tempDir, until } from './helpers/agents.ts'

const noHide = canHide()

/** Rewrites `src` as `dest` + `dest`_data: every initializer over 1 KiB moved to the external data file. */
function withExternalData (src: string, dest: string): void {
  const model = onnx.ModelProto.decode(readFileSync(src))
  const parts: Buffer[] = []
  let offset = 0
  const dataName = `${dest.split('/').pop() as string}_data`
  for (const t of model.graph?.initializer ?? []) {
    const raw = t.rawData
    if (raw == null || raw.length <= 1024) continue
    parts.push(Buffer.from(raw))
    t.externalData = [
      onnx.StringStringEntryProto.create({ key: 'location', value: dataName }),
      onnx.StringStringEntryProto.create({ key: 'offset', value: String(offset) }),
      onnx.StringStringEntryProto.create({ key: 'length', value: String(raw.length) })
    ]
    t.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL
    t.rawData = new Uint8Array(0)
    offset += raw.length
  }
  assert.ok(parts.length > 0, 'the model has weights to move out')
  writeFileSync(dest, onnx.ModelProto.encode(model).finish())
  writeFileSync(`${dest}_data`, Buffer.concat(parts))
}

describe(`an ONNX export with external data served by a host that cannot see it${noHide !== false ? ` (skipped: ${noHide})` : ''}`, { skip: noHide !== false ? noHide : undefined }, () => {
  const files = tempDir('bm-extdata-')
  let a: AgentProcess, b: AgentProcess

  before(async () => {
    const gguf = join(files, 'tiny.gguf')
    tinyLlama(gguf)
    const c = await convertGguf(gguf, { cacheDir: join(files, 'conv') })
    const root = join(files, 'export')
    writeExportSideFiles(root, c.tokenizerPath)
    withExternalData(c.onnxPath, join(root, 'onnx', 'model.onnx'))
    a = await AgentProcess.start({ name: 'ext-a' })
    b = await AgentProcess.start({ name: 'ext-b', cluster: 'host', bootstrap: [a.addr], hide: [files, a.dir] })
    await until(async () => (await a.peers()).length === 2, 'the mesh to form')
  })
  after(async () => { await stopAll([a, b]) })

  test('both files fetched from A, placed side by side, and the model answers as it does on A', async () => {
    const added = await a.api('/api/models', { method: 'POST', body: { source: join(files, 'export'), name: 'ext' } })
    assert.equal(added.status, 201, JSON.stringify(added.body))
    const model = added.body.component.spec.model
    assert.equal(model.externalData?.length, 1, 'the external data file is part of the component')
    assert.equal(model.externalData[0].name, 'model.onnx_data')
    assert.equal(model.externalData[0].md5, await md5File(join(files, 'export', 'onnx', 'model.onnx_data')))

    const uri = added.body.component.uri as string
    const onA = await a.api('/api/blocks', { method: 'POST', body: { id: 'ext-a', component: uri } })
    assert.equal(onA.status, 201, JSON.stringify(onA.body))
    const onB = await a.api('/api/blocks', { method: 'POST', body: { id: 'ext-b', component: uri, policy: { cluster: { names: ['host'] } } } })
    assert.equal(onB.status, 201, JSON.stringify(onB.body))
    for (const id of ['ext-a', 'ext-b']) {
      const r = await until(async () => {
        const x = (await a.api(`/api/blocks/${id}`)).body
        return x.status === 'ready' || x.status === 'failed' ? x : undefined
      }, `block ${id} ready`, 60_000)
      assert.equal(r.status, 'ready', JSON.stringify(r))
    }
    const ask = async (block: string): Promise<string> => {
      const r = await a.api('/v1/completions', { method: 'POST', body: { model: block, prompt: 'hello there', max_tokens: 8, temperature: 0 } })
      assert.equal(r.status, 200, JSON.stringify(r.body))
      return r.body.choices[0].text as string
    }
    assert.equal(await ask('ext-b'), await ask('ext-a'), 'the same greedy answer from the host that fetched the files')

    const store = (await b.api('/api/content')).body
    const held = new Set(store.files.filter((f: any) => f.state === 'complete').map((f: any) => f.md5))
    assert.ok(held.has(model.md5), 'B holds the model file')
    assert.ok(held.has(model.externalData[0].md5), 'B holds the external data file')
    assert.ok((await b.metric('blockmesh_content_received_bytes_total', { source: 'mesh' })) >= model.externalData[0].sizeBytes, 'the bytes came over the mesh')
  })
})

describe('model add of a URL already added elsewhere in the mesh: no second download', () => {
  const files = tempDir('bm-once-')
  let a: AgentProcess, b: AgentProcess
  let downloads = 0
  const server = createServer((req, res) => {
    if (req.url !== '/tiny.gguf') { res.writeHead(404).end(); return }
    downloads++
    const body = readFileSync(join(files, 'tiny.gguf'))
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length }).end(body)
  })
  let url = ''

  before(async () => {
    tinyLlama(join(files, 'tiny.gguf'))
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/tiny.gguf`
    a = await AgentProcess.start({ name: 'once-a' })
    b = await AgentProcess.start({ name: 'once-b', bootstrap: [a.addr] })
    await until(async () => (await a.peers()).length === 2, 'the mesh to form')
  })
  after(async () => { await stopAll([a, b]); server.close() })

  test('A downloads it once; B adding the same URL gets the component already in the mesh', async () => {
    const first = await a.api('/api/models', { method: 'POST', body: { source: url, name: 'once' } })
    assert.equal(first.status, 201, JSON.stringify(first.body))
    assert.equal(downloads, 1)
    const uri = first.body.component.uri as string
    await until(async () => (await b.api('/api/components')).body.components.some((c: any) => c.uri === uri), 'the component to reach B')
    const second = await b.api('/api/models', { method: 'POST', body: { source: url, name: 'once' } })
    assert.equal(second.status, 200, JSON.stringify(second.body))
    assert.equal(second.body.existed, true)
    assert.equal(second.body.component.uri, uri)
    assert.equal(downloads, 1, 'the URL was not fetched a second time')
    // another conversion mode is another model: that one is made (and downloaded) anew
    const f32 = await b.api('/api/models', { method: 'POST', body: { source: url, name: 'once', weights: 'f32' } })
    assert.equal(f32.status, 201, JSON.stringify(f32.body))
    assert.notEqual(f32.body.component.uri, uri)
    assert.equal(downloads, 2)
  })
})
