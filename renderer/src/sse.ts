/** Thrown when a server's event outgrows the bound. */
export class EventTooLargeError extends Error {
  override readonly name = 'EventTooLargeError'
}

/**
 * Splits a text/event-stream into events and returns each event's data
 * (its `data:` lines joined by "\n"); comments and other fields are dropped.
 * An event larger than maxEventChars throws rather than growing without bound.
 */
export class SseSplitter {
  private buf = ''
  private readonly max: number
  constructor (maxEventChars = 1024 * 1024) { this.max = maxEventChars }

  push (text: string): string[] {
    this.buf += text.replace(/\r\n?/g, '\n')
    const out: string[] = []
    let end: number
    while ((end = this.buf.indexOf('\n\n')) >= 0) {
      const event = this.buf.slice(0, end)
      this.buf = this.buf.slice(end + 2)
      const data = event.split('\n').filter(l => l.startsWith('data:')).map(l => l.slice(l.startsWith('data: ') ? 6 : 5))
      if (data.length > 0) out.push(data.join('\n'))
    }
    if (this.buf.length > this.max) throw new EventTooLargeError(`the server sent an event larger than ${this.max} characters`)
    return out
  }
}
