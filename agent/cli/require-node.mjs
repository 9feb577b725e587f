// Fails loudly when the running Node is older than the project needs.
// Plain JavaScript on purpose: it must run (and explain) on Node 20 too.
export const MIN_NODE = [22, 18]

export function checkNode (versions = process.versions) {
  const [major, minor] = versions.node.split('.').map(Number)
  if (major > MIN_NODE[0] || (major === MIN_NODE[0] && minor >= MIN_NODE[1])) return null
  return `blockmesh needs Node >= ${MIN_NODE.join('.')} (this is ${versions.node}).\n` +
    'Run it through npm so the project\'s own Node is used: npm start, npm test, npx blockmesh ...\n' +
    '(npm install brings Node 22 as the "node" devDependency into node_modules/.bin).'
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const problem = checkNode()
  if (problem != null) {
    console.error(problem)
    process.exit(1)
  }
}
