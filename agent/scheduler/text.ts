/**
 * The scheduler's words: how sizes, numbers and counts read in a check's
 * wording and a refusal's reasons, and the order text sorts in. Pure helpers,
 * no scheduler types.
 */

const GiB = 2 ** 30

/** Bytes as GiB with one decimal: "44.7 GiB". */
export function gib (bytes: number): string {
  return `${(bytes / GiB).toFixed(1)} GiB`
}

/** A number rounded to two decimals: "0.75". */
export function num (x: number): string {
  return String(Math.round(x * 100) / 100)
}

/** The word, with an "s" unless there is exactly one. */
export function plural (n: number, word: string): string {
  return n === 1 ? word : `${word}s`
}

/** Orders text by code unit, independent of the locale. */
export function compareText (a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
