import { z } from 'zod'

/** An API token as a page may hand it over: 1-4096 characters, no whitespace. */
export const TokenSchema = z.string().min(1).max(4096).regex(/^\S+$/, 'a token has no whitespace')

/**
 * An agent's address as the user types it: an http(s) URL without
 * credentials (they would end up in history and logs) or fragment. Only its
 * origin is kept: the agent serves its dashboard at `/`, and the origin is
 * what the window is then allowed to be on and what tokens are stored under.
 */
export const AgentUrlSchema = z.string().min(1).max(2048).transform((value, ctx) => {
  let u: URL
  try { u = new URL(value) } catch {
    ctx.addIssue({ code: 'custom', message: 'not a URL' })
    return z.NEVER
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') ctx.addIssue({ code: 'custom', message: 'only http: and https: URLs' })
  else if (u.username !== '' || u.password !== '') ctx.addIssue({ code: 'custom', message: 'no user name or password in the URL' })
  else if (u.hash !== '') ctx.addIssue({ code: 'custom', message: 'no #fragment in the URL' })
  else return u.origin
  return z.NEVER
})

/** One line per issue: "path: message". */
export function describeIssues (error: z.ZodError): string {
  return error.issues.map(i => (i.path.length > 0 ? `${i.path.join('.')}: ` : '') + i.message).join('; ')
}
