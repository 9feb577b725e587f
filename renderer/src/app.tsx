import { useEffect, useErrorBoundary, useState } from 'preact/hooks'
import type { ComponentType } from 'preact'
import { useStore } from './store.ts'
import { live } from './live.ts'
import { auth } from './auth.ts'
import { desktop } from './desktop.ts'
import { Login } from './components/login.tsx'
import { TopologyView } from './views/topology.tsx'
import { NodesView } from './views/nodes.tsx'
import { DeployView } from './views/deploy.tsx'
import { ModelsView } from './views/models.tsx'
import { SplitView } from './views/split.tsx'
import { ChatView } from './views/chat.tsx'
import { TemplatesView } from './views/templates.tsx'

const VIEWS = [
  { id: 'topology', title: 'Topology', view: TopologyView },
  { id: 'nodes', title: 'Nodes', view: NodesView },
  { id: 'deploy', title: 'Deploy', view: DeployView },
  { id: 'models', title: 'Models', view: ModelsView },
  { id: 'templates', title: 'Templates', view: TemplatesView },
  { id: 'split', title: 'Split', view: SplitView },
  { id: 'chat', title: 'Chat', view: ChatView }
] as const

type ViewId = typeof VIEWS[number]['id']

function current (): ViewId {
  const id = location.hash.replace(/^#\/?/, '')
  return (VIEWS.find(v => v.id === id)?.id) ?? 'topology'
}

/** A view that throws (say, on data it did not expect) shows the error instead of taking the whole page down. */
function Guarded ({ view: View }: { view: ComponentType }) {
  const [error, reset] = useErrorBoundary()
  if (error != null) {
    return (
      <div class="card error" role="alert">
        <p>This view failed: {(error as Error).message ?? String(error)}</p>
        <button class="secondary" onClick={reset}>Try again</button>
      </div>
    )
  }
  return <View />
}

export function App () {
  const [view, setView] = useState<ViewId>(current())
  const state = useStore(live.state)
  const { token } = useStore(auth.state)
  const [showLogin, setShowLogin] = useState(false)
  useEffect(() => {
    const onHash = (): void => { setView(current()) }
    window.addEventListener('hashchange', onHash)
    return () => { window.removeEventListener('hashchange', onHash) }
  }, [])
  const self = state.peers.find(p => p.self)
  const View = VIEWS.find(v => v.id === view)?.view ?? TopologyView
  const d = desktop()
  return (
    <div class="shell">
      <header class="top">
        <div class="brand"><span class="logo" aria-hidden="true" />Blockmesh</div>
        <nav aria-label="views">
          {VIEWS.map(v => <a key={v.id} href={`#/${v.id}`} class={v.id === view ? 'active' : ''} aria-current={v.id === view ? 'page' : undefined}>{v.title}</a>)}
        </nav>
        <div class="status">
          <span role="status" class="live-state"><span class={`dot ${state.connected ? 'ok' : 'bad'}`} aria-hidden="true" />{state.connected ? 'live' : 'reconnecting…'}</span>
          <span data-testid="agent-name">{self != null ? `${self.name} · ${self.cluster}` : 'connecting…'}</span>
          {d != null && <button class="link" onClick={() => { void d.connection.switch() }}>switch agent</button>}
          {token == null
            ? <button data-testid="login-open" onClick={() => { setShowLogin(true) }}>Log in</button>
            : <button class="secondary" data-testid="logout" onClick={() => { void auth.logout() }}>Log out</button>}
        </div>
      </header>
      {showLogin && token == null && <Login onClose={() => { setShowLogin(false) }} />}
      <main>
        <Guarded key={view} view={View} />
      </main>
    </div>
  )
}
