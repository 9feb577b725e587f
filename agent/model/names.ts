/** A model's name made safe for component, block and vDAG ids: lower case, [a-z0-9._-], at most 40 characters. */
export function slugOf (s: string): string {
  const slug = s.toLowerCase().replace(/[^a-z0-9._-]+/g, '-').replace(/^[^a-z0-9]+/, '').slice(0, 40)
  return slug === '' ? 'model' : slug
}
