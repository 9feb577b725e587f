/** A test's name that says why it is skipped, when it is (the skip option's reason: a string, or false/undefined/null to run). */
export function skipNamed (name: string, skip: string | boolean | null | undefined): string {
  return typeof skip === 'string' && skip !== '' ? `${name} (skipped: ${skip})` : name
}
