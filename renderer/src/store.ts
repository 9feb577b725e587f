import { useEffect, useState } from 'preact/hooks'

/** A value several components watch; set() re-renders every subscriber. */
export class Store<T> {
  private value: T
  private readonly subs = new Set<(v: T) => void>()
  constructor (initial: T) { this.value = initial }
  get (): T { return this.value }
  set (v: T): void {
    this.value = v
    for (const fn of this.subs) fn(v)
  }
  update (fn: (v: T) => T): void { this.set(fn(this.value)) }
  subscribe (fn: (v: T) => void): () => void {
    this.subs.add(fn)
    return () => { this.subs.delete(fn) }
  }
}

/** The store's current value, re-rendering on change. */
export function useStore<T> (store: Store<T>): T {
  const [v, setV] = useState(store.get())
  useEffect(() => {
    setV(store.get())
    return store.subscribe(setV)
  }, [store])
  return v
}
