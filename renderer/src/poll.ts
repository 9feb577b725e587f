import { useEffect, useRef, useState } from 'preact/hooks'
import { messageOf } from './api.ts'

/**
 * Runs `load` now and again `intervalMs` after each run finishes (never two at
 * once, so an older answer cannot overwrite a newer one); aborts on unmount.
 * Returns the last run's error, cleared by the next success, and a way to reload now.
 */
export function usePoll (load: (signal: AbortSignal) => Promise<void>, intervalMs: number): { error: string | null, reload: () => void } {
  const [error, setError] = useState<string | null>(null)
  const kick = useRef<() => void>(() => {})
  useEffect(() => {
    const ctl = new AbortController()
    let timer: ReturnType<typeof setTimeout> | undefined
    let running = false
    let again = false
    const run = async (): Promise<void> => {
      if (running) { again = true; return }
      running = true
      clearTimeout(timer)
      try {
        await load(ctl.signal)
        if (!ctl.signal.aborted) setError(null)
      } catch (err) {
        if (!ctl.signal.aborted) setError(messageOf(err))
      } finally {
        running = false
        if (!ctl.signal.aborted) timer = setTimeout(() => { void run() }, again ? 0 : intervalMs)
        again = false
      }
    }
    kick.current = () => { void run() }
    void run()
    return () => { ctl.abort(); clearTimeout(timer) }
  }, [])
  return { error, reload: () => { kick.current() } }
}
