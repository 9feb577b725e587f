import { NotFoundError } from '../errors.ts'
import type { Component, ComponentRegistry } from '../registry/components.ts'
import type { DesiredState } from '../state/replica.ts'

/** Lookups remembered, at most (URIs come from peers' records: a bound against a flood of unknown ones). */
const MAX_ENTRIES = 4096

/**
 * Components by URI for the request path. ComponentRegistry.find checks the stored spec with zod on
 * every call; a request served by a peer's instance looks its component up each time, so the parsed
 * component (or its absence) is kept here until the desired state changes that URI.
 */
export class ComponentCache {
  private readonly registry: Pick<ComponentRegistry, 'find'>
  private readonly byUri = new Map<string, Component | null>()
  private readonly unsubscribe: () => void

  constructor (registry: Pick<ComponentRegistry, 'find'>, state: Pick<DesiredState, 'onChange'>) {
    this.registry = registry
    this.unsubscribe = state.onChange(keys => {
      for (const k of keys) if (k.startsWith('components/')) this.byUri.delete(k.slice('components/'.length))
    })
  }

  find (uri: string): Component | undefined {
    let c = this.byUri.get(uri)
    if (c === undefined) {
      c = this.registry.find(uri) ?? null
      if (this.byUri.size >= MAX_ENTRIES) this.byUri.clear()
      this.byUri.set(uri, c)
    }
    return c ?? undefined
  }

  get (uri: string): Component {
    const c = this.find(uri)
    if (c == null) throw new NotFoundError(`no component ${uri}`)
    return c
  }

  close (): void {
    this.unsubscribe()
    this.byUri.clear()
  }
}
