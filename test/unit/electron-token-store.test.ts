import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { MAX_TOKEN_FILE_BYTES, TokenOriginError, TokenStore } from '../../main/token-store.ts'
import type { SafeStorageLike } from '../../main/token-store.ts'

/**
 * Stands in for Electron's safeStorage: a real transformation (XOR with a
 * key, then a marker) so the test can tell sealed bytes from plaintext and
 * catch a store that skips encryption.
 */
function fakeSafeStorage (opts: { available?: boolean, backend?: string, key?: number } = {}): SafeStorageLike & { encrypted: number } {
  const key = opts.key ?? 0x5a
  const MARK = Buffer.from('SEALED:')
  const fake = {
    encrypted: 0,
    isEncryptionAvailable: () => opts.available ?? true,
    getSelectedStorageBackend: () => opts.backend ?? 'gnome_libsecret',
    encryptString (plain: string): Buffer {
      fake.encrypted++
      return Buffer.concat([MARK, Buffer.from(Buffer.from(plain, 'utf8').map(b => b ^ key))])
    },
    decryptString (sealed: Buffer): string {
      if (!sealed.subarray(0, MARK.length).equals(MARK)) throw new Error('Error while decrypting the ciphertext provided to safeStorage.decryptString.')
      return Buffer.from(sealed.subarray(MARK.length).map(b => b ^ key)).toString('utf8')
    }
  }
  return fake
}

const TOKEN = 'tok_3kV9x-QpL2mN8rT4wZ7yB1cD5fG6hJ0a'
const AGENT = 'http://127.0.0.1:7700'

let dir: string
before(() => { dir = mkdtempSync(join(tmpdir(), 'bm-tokens-')) })
after(() => { rmSync(dir, { recursive: true, force: true }) })

function freshFile (name: string): string {
  return join(dir, name, 'tokens.json')
}

describe('token store with OS encryption', () => {
  test('set, get, clear by origin; another store on the same file reads it back', () => {
    const file = freshFile('roundtrip')
    const safe = fakeSafeStorage()
    const store = new TokenStore({ safeStorage: safe, file })
    assert.equal(store.persistent, true)
    assert.equal(store.get(AGENT), null)
    store.set(AGENT + '/some/page?x=1', TOKEN)
    store.set('https://remote.example:8443', 'other-token')
    assert.equal(store.get(AGENT), TOKEN)
    assert.equal(store.get('http://127.0.0.1:7701'), null, 'another port is another agent')

    const again = new TokenStore({ safeStorage: fakeSafeStorage(), file })
    assert.equal(again.get(AGENT + '/'), TOKEN)
    assert.equal(again.get('https://remote.example:8443/x'), 'other-token')

    again.clear(AGENT)
    assert.equal(store.get(AGENT), null)
    assert.equal(store.get('https://remote.example:8443'), 'other-token')
  })

  test('the file holds no plaintext token, is 0600, and leaves no temporary files', () => {
    const file = freshFile('sealed')
    const safe = fakeSafeStorage()
    new TokenStore({ safeStorage: safe, file }).set(AGENT, TOKEN)
    assert.equal(safe.encrypted, 1)
    const raw = readFileSync(file)
    assert.equal(raw.includes(TOKEN), false, 'no plaintext token on disk')
    assert.equal(raw.includes(Buffer.from(TOKEN).toString('base64')), false, 'not merely base64 of the plaintext')
    const data = JSON.parse(raw.toString('utf8'))
    assert.equal(data.version, 1)
    assert.deepEqual(Object.keys(data.tokens), [AGENT])
    assert.equal(safe.decryptString(Buffer.from(data.tokens[AGENT], 'base64')), TOKEN)
    if (process.platform !== 'win32') assert.equal(statSync(file).mode & 0o777, 0o600)
    assert.deepEqual(readdirSync(join(dir, 'sealed')), ['tokens.json'])
  })

  test('a token sealed under another key (a reset keyring) reads as none', () => {
    const file = freshFile('rekeyed')
    new TokenStore({ safeStorage: fakeSafeStorage(), file }).set(AGENT, TOKEN)
    const other = fakeSafeStorage()
    other.decryptString = () => { throw new Error('Error while decrypting') }
    const logged: string[] = []
    assert.equal(new TokenStore({ safeStorage: other, file, log: m => logged.push(m) }).get(AGENT), null)
    assert.ok(logged.some(l => l.includes('cannot be decrypted')))
  })

  test('an oversized file is not read (and is replaced on the next write)', () => {
    const file = freshFile('big')
    new TokenStore({ safeStorage: fakeSafeStorage(), file }).set(AGENT, TOKEN)
    const sealed = readFileSync(file, 'utf8')
    // a valid store with a huge padding field: only the size bound can make it unreadable
    const data = JSON.parse(sealed)
    data.padding = 'x'.repeat(MAX_TOKEN_FILE_BYTES)
    writeFileSync(file, JSON.stringify(data))
    const logged: string[] = []
    const store = new TokenStore({ safeStorage: fakeSafeStorage(), file, log: m => logged.push(m) })
    assert.equal(store.get(AGENT), null)
    assert.ok(logged.some(l => l.includes('bytes')))
    store.set('http://127.0.0.1:7701', 'fresh')
    assert.ok(statSync(file).size < 4096)
    assert.equal(store.get('http://127.0.0.1:7701'), 'fresh')
  })

  test('a malformed file reads as empty', () => {
    for (const content of ['not json', '[]', '{"version":2,"tokens":{}}', '{"version":1,"tokens":["x"]}']) {
      const file = freshFile('malformed')
      rmSync(join(dir, 'malformed'), { recursive: true, force: true })
      new TokenStore({ safeStorage: fakeSafeStorage(), file }).set(AGENT, TOKEN)
      writeFileSync(file, content)
      assert.equal(new TokenStore({ safeStorage: fakeSafeStorage(), file }).get(AGENT), null, content)
    }
  })

  test('only http(s) origins', () => {
    const store = new TokenStore({ safeStorage: fakeSafeStorage(), file: freshFile('origins') })
    for (const bad of ['file:///etc/passwd', 'javascript:alert(1)', 'not a url', '']) {
      assert.throws(() => { store.set(bad, TOKEN) }, TokenOriginError, bad)
      assert.throws(() => store.get(bad), TokenOriginError, bad)
    }
  })
})

describe('token store without OS encryption', () => {
  for (const [what, safe, platform] of [
    ['encryption unavailable', fakeSafeStorage({ available: false }), 'linux'],
    ['Linux basic_text backend (a fixed key)', fakeSafeStorage({ backend: 'basic_text' }), 'linux']
  ] as const) {
    test(`${what}: tokens live in memory only, nothing is written`, () => {
      const file = freshFile(what.replace(/\W+/g, '-'))
      const logged: string[] = []
      const store = new TokenStore({ safeStorage: safe, file, platform, log: m => logged.push(m) })
      assert.equal(store.persistent, false)
      store.set(AGENT, TOKEN)
      assert.equal(store.get(AGENT + '/'), TOKEN)
      assert.equal(existsSync(file), false, 'no file at all, so no plaintext on disk')
      assert.equal(safe.encrypted, 0)
      assert.equal(new TokenStore({ safeStorage: safe, file, platform }).get(AGENT), null, 'a new run starts empty')
      store.clear(AGENT)
      assert.equal(store.get(AGENT), null)
      assert.ok(logged.some(l => l.includes('in memory')))
    })
  }

  test('basic_text only matters on Linux', () => {
    assert.equal(new TokenStore({ safeStorage: fakeSafeStorage({ backend: 'basic_text' }), file: freshFile('mac'), platform: 'darwin' }).persistent, true)
  })
})
