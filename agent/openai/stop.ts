/**
 * Finds stop strings in streamed text. Text that could be the start of a
 * stop string is held back until it is known not to be one, so a client
 * never sees part of a stop string.
 */
export class StopMatcher {
  private held = ''
  private readonly stops: string[]

  constructor (stops: string[]) {
    this.stops = stops.filter(s => s.length > 0)
  }

  /** Returns the text safe to emit now, and whether a stop string was reached (text after it is dropped). */
  push (text: string): { emit: string, stopped: boolean } {
    const buf = this.held + text
    if (this.stops.length === 0) return { emit: buf, stopped: false }
    let first = -1
    for (const s of this.stops) {
      const i = buf.indexOf(s)
      if (i >= 0 && (first < 0 || i < first)) first = i
    }
    if (first >= 0) {
      this.held = ''
      return { emit: buf.slice(0, first), stopped: true }
    }
    let keep = 0
    for (const s of this.stops) {
      for (let k = Math.min(s.length - 1, buf.length); k > keep; k--) {
        if (buf.endsWith(s.slice(0, k))) { keep = k; break }
      }
    }
    this.held = buf.slice(buf.length - keep)
    return { emit: buf.slice(0, buf.length - keep), stopped: false }
  }

  /** The held-back text, at the end of generation. */
  flush (): string {
    const h = this.held
    this.held = ''
    return h
  }
}
