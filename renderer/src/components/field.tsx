import { cloneElement, isValidElement } from 'preact'
import type { ComponentChildren, VNode } from 'preact'

/** A labelled input with the API's message for its field, if any (the input is marked invalid and described by it). */
export function Field ({ label, name, error, hint, children }: { label: string, name: string, error?: string, hint?: string, children: ComponentChildren }) {
  const noteId = `note-${name.replace(/[^A-Za-z0-9_-]/g, '-')}`
  const note = error ?? hint
  const input = isValidElement(children)
    ? cloneElement(children as VNode<Record<string, unknown>>, { 'aria-invalid': error != null ? 'true' : undefined, 'aria-describedby': note != null ? noteId : undefined })
    : children
  return (
    <label class={`field ${error != null ? 'invalid' : ''}`} data-field={name}>
      <span>{label}</span>
      {input}
      {hint != null && error == null && <small class="muted" id={noteId}>{hint}</small>}
      {error != null && <small class="error" id={noteId} data-testid={`error-${name}`} role="alert">{error}</small>}
    </label>
  )
}
