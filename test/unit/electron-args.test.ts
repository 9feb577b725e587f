import { test } from 'node:test'
import assert from 'node:assert/strict'
import { DesktopArgsError, parseDesktopArgs } from '../../main/args.ts'

test('no flags: the connect page', () => {
  assert.deepEqual(parseDesktopArgs(['.']), { local: false })
  // Electron's and Chromium's own switches are left alone
  assert.deepEqual(parseDesktopArgs(['main/dist/main.cjs', '--no-sandbox', '--inspect=0', '--remote-debugging-port=0']), { local: false })
})

test('--agent-url URL and --agent-url=URL connect to that origin', () => {
  assert.deepEqual(parseDesktopArgs(['.', '--agent-url', 'http://127.0.0.1:7700/peers']), { agentUrl: 'http://127.0.0.1:7700', local: false })
  assert.deepEqual(parseDesktopArgs(['--agent-url=https://agent.example:8443']), { agentUrl: 'https://agent.example:8443', local: false })
})

test('--local starts the local agent', () => {
  assert.deepEqual(parseDesktopArgs(['.', '--local']), { local: true })
})

test('the environment is read when no flag is given; flags win', () => {
  assert.deepEqual(parseDesktopArgs(['.'], { BLOCKMESH_AGENT_URL: 'http://127.0.0.1:7701' }), { agentUrl: 'http://127.0.0.1:7701', local: false })
  assert.deepEqual(parseDesktopArgs(['.'], { BLOCKMESH_LOCAL: '1' }), { local: true })
  assert.deepEqual(parseDesktopArgs(['.'], { BLOCKMESH_LOCAL: 'yes please' }), { local: false })
  assert.deepEqual(parseDesktopArgs(['--local'], { BLOCKMESH_AGENT_URL: 'http://127.0.0.1:7701' }), { local: true })
  assert.deepEqual(parseDesktopArgs(['--agent-url', 'http://127.0.0.1:7702'], { BLOCKMESH_LOCAL: '1' }), { agentUrl: 'http://127.0.0.1:7702', local: false })
})

test('bad URLs, a missing URL, or both modes are errors', () => {
  for (const argv of [
    ['--agent-url', 'file:///etc/passwd'],
    ['--agent-url', 'http://user:pw@127.0.0.1:7700'],
    ['--agent-url', 'http://127.0.0.1:7700/#x'],
    ['--agent-url=javascript:alert(1)'],
    ['--agent-url'],
    ['--agent-url', '--local'],
    ['--local', '--agent-url', 'http://127.0.0.1:7700']
  ]) assert.throws(() => parseDesktopArgs(argv), DesktopArgsError, argv.join(' '))
  assert.throws(() => parseDesktopArgs([], { BLOCKMESH_AGENT_URL: 'ftp://x' }), DesktopArgsError)
})
