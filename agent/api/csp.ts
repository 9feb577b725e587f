/**
 * Content-Security-Policy for every page the agent serves (and the desktop
 * app's own pages): scripts, styles and fetches from the page's own origin
 * only, no inline script or style, no framing, no plugins.
 */
export const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "object-src 'none'"
].join('; ')
