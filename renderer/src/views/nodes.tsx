import { useMemo } from 'preact/hooks'
import { useStore } from '../store.ts'
import { live } from '../live.ts'
import type { Peer, ProviderStatus, Sample } from '../types.ts'
import { bytes, num, pct, shortId } from '../format.ts'
import { Spark } from '../components/chart.tsx'

function Bar ({ value, label }: { value: number | null, label: string }) {
  const v = value == null ? 0 : Math.max(0, Math.min(100, value))
  return (
    <div class="bar" role="meter" aria-label={label} aria-valuemin={0} aria-valuemax={100} aria-valuenow={value ?? undefined}>
      <progress max={100} value={v} class={v > 85 ? 'hot' : ''} />
    </div>
  )
}

function series (samples: Sample[], pick: (s: Sample) => number | null): { xs: number[], ys: Array<number | null> } {
  return { xs: samples.map(s => s.t / 1000), ys: samples.map(pick) }
}

/** The execution providers that load on the peer, and in small text why the others do not. */
function Providers ({ providers }: { providers: ProviderStatus[] }) {
  const off = providers.filter(p => !p.available)
  return (
    <div class="providers" data-testid="providers">
      <p>
        <span class="label">Providers</span>
        {providers.length === 0 && <span class="muted">not probed yet</span>}
        {providers.map(p => (
          <span key={p.name} class={`pill ${p.available ? 'ready' : 'off'}`} data-testid="provider" data-provider={p.name} data-available={String(p.available)}
            title={p.available ? `${p.name} loads here` : `${p.name} does not load: ${p.reason ?? 'no reason given'}`}>
            {p.name}
          </span>
        ))}
      </p>
      {off.length > 0 && (
        <ul class="provider-reasons">
          {off.map(p => <li key={p.name}><small><span class="mono">{p.name}</span>: {p.reason ?? 'does not load'}</small></li>)}
        </ul>
      )}
    </div>
  )
}

function PeerCard ({ peer, samples }: { peer: Peer, samples: Sample[] }) {
  const r = peer.readings
  const usedRam = r.memory.totalBytes - r.memory.availableBytes
  const tps = peer.instances.reduce((s, i) => s + i.tokensPerSecond, 0)
  const blocks = new Set(peer.instances.map(i => i.block))
  const cpu = useMemo(() => series(samples, s => s.cpu), [samples])
  const ram = useMemo(() => series(samples, s => s.ram), [samples])
  const tok = useMemo(() => series(samples, s => s.tps), [samples])
  const gpu = useMemo(() => series(samples, s => s.gpu), [samples])
  return (
    <article class="card peer-card" data-testid="node-card" data-peer={peer.peerId}>
      <header>
        <h2>{peer.name} {peer.self && <span class="badge">this agent</span>}</h2>
        <span class="muted">cluster {peer.cluster}{peer.vendor !== '' ? ` · ${peer.vendor}` : ''} · <span class="mono" title={peer.peerId}>{shortId(peer.peerId)}</span> · record <span data-testid="record-seq">{peer.seq}</span> of epoch {peer.epoch}</span>
      </header>
      <div class="stats">
        <div>
          <h3>CPU</h3>
          <p>{r.cpu.count} × {r.cpu.model || 'CPU'}</p>
          <p>busy <strong data-testid="cpu-util">{pct(r.cpu.utilisation)}</strong> · load {num(r.cpu.load1, 2)} / {num(r.cpu.load5, 2)} / {num(r.cpu.load15, 2)}</p>
          <Bar value={r.cpu.utilisation} label="CPU busy" />
        </div>
        <div>
          <h3>RAM</h3>
          <p>{bytes(usedRam)} of {bytes(r.memory.totalBytes)} in use</p>
          <Bar value={r.memory.totalBytes > 0 ? 100 * usedRam / r.memory.totalBytes : null} label="RAM in use" />
        </div>
        <div>
          <h3>GPUs</h3>
          {r.gpus.length === 0 && <p class="muted">none</p>}
          {r.gpus.map(g => (
            <div key={g.index} class="gpu" data-testid="gpu">
              <p>#{g.index} {g.model}{g.simulated ? ' (simulated)' : ''}</p>
              <p class="muted">memory {g.memoryFreeBytes == null ? '?' : bytes(g.memoryTotalBytes - g.memoryFreeBytes)} of {bytes(g.memoryTotalBytes)} · util {pct(g.utilisation)}</p>
              <Bar value={g.memoryFreeBytes == null ? null : 100 * (g.memoryTotalBytes - g.memoryFreeBytes) / Math.max(1, g.memoryTotalBytes)} label={`GPU ${g.index} memory in use`} />
            </div>
          ))}
        </div>
        <div>
          <h3>Serving</h3>
          <p><strong data-testid="tps">{num(tps)}</strong> tokens/s · {blocks.size} blocks · {peer.instances.length} instances</p>
          <ul class="instances">
            {peer.instances.map(i => (
              <li key={i.instance}><span class={`pill ${i.status}`}>{i.status}</span> <span class="mono">{i.block}</span> <span class="muted">{i.provider ?? ''} · {i.active} active · {i.queued} queued · {num(i.tokensPerSecond)} tok/s</span></li>
            ))}
          </ul>
        </div>
      </div>
      <Providers providers={peer.providers ?? []} />
      <div class="charts">
        <Spark title="CPU busy" unit="%" range={[0, 100]} xs={cpu.xs} ys={cpu.ys} />
        <Spark title="RAM in use" unit="%" range={[0, 100]} xs={ram.xs} ys={ram.ys} color="#8b5cf6" />
        <Spark title="tokens/s" xs={tok.xs} ys={tok.ys} color="#10b981" />
        {r.gpus.length > 0 && <Spark title="GPU util" unit="%" range={[0, 100]} xs={gpu.xs} ys={gpu.ys} color="#f59e0b" />}
      </div>
    </article>
  )
}

export function NodesView () {
  const state = useStore(live.state)
  return (
    <section class="nodes">
      {!state.connected && <p class="warn-banner">Live updates are off; reconnecting to the agent…</p>}
      {state.peers.map(p => <PeerCard key={p.peerId} peer={p} samples={state.history[p.peerId] ?? []} />)}
    </section>
  )
}
