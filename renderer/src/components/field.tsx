import type { ComponentChildren } from 'preact'

/** A labelled input with the API's message for its field, if any. */
export function Field ({ label, name, error, hint, children }: { label: string, name: string, error?: string, hint?: string, children: ComponentChildren }) {
  return (
    <label class={`field ${error != null ? 'invalid' : ''}`} data-field={name}>
      <span>{label}</span>
      {children}
      {hint != null && error == null && <small class="muted">{hint}</small>}
      {error != null && <small class="error" data-testid={`error-${name}`} role="alert">{error}</small>}
    </label>
  )
}
