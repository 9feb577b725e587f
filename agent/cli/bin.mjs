#!/usr/bin/env node
import { checkNode } from './require-node.mjs'

const problem = checkNode()
if (problem != null) {
  console.error(problem)
  process.exit(1)
}
const { main } = await import('./main.ts')
await main()
