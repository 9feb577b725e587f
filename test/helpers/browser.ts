/**
 * The dashboard's browser tests: where Chromium is, why a test must skip, and a page that collects every
 * script error and Content-Security-Policy violation (4xx answers the tests provoke on purpose are logged by
 * Chromium as "Failed to load resource" and are not problems).
 */
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import type { Browser, Page } from 'playwright-core'
import { RENDERER_DIST } from '../../agent/api/routes/dashboard.ts'

export const CHROMIUM = process.env.BLOCKMESH_CHROMIUM ?? '/usr/bin/chromium'
export const SHOTS = join(import.meta.dirname, '..', '..', 'test-results', 'dashboard')

/** Why the browser tests cannot run here, or null. */
export const browserMissing: string | null = !existsSync(CHROMIUM)
  ? `Chromium is not installed at ${CHROMIUM} (.ci/run installs Debian's chromium)`
  : !existsSync(join(RENDERER_DIST, 'index.html')) ? 'the dashboard is not built (npm test builds it: npm run build:renderer)' : null

/** A Chromium page whose console errors and page errors are pushed to `problems`; dialogs are accepted. */
export async function openPage (problems: string[]): Promise<{ browser: Browser, page: Page }> {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } })
  page.on('console', m => { if (m.type() === 'error' && !/^Failed to load resource: the server responded with a status of 4\d\d/.test(m.text())) problems.push(m.text()) })
  page.on('pageerror', e => { problems.push(e.message) })
  page.on('dialog', d => { void d.accept() })
  return { browser, page }
}
