// Minimal live status page: polls the agent's read-only API every heartbeat.
// Builds DOM nodes with textContent only (no innerHTML), so peer-supplied
// strings are never interpreted as markup.
const tbody = document.querySelector('#peers tbody')
const errorEl = document.getElementById('error')
const selfEl = document.getElementById('self')
const updatedEl = document.getElementById('updated')

function bytes (n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = n; let i = 0
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`
}

function age (ms) {
  return ms < 1000 ? `${Math.round(ms)} ms ago` : ms < 120000 ? `${(ms / 1000).toFixed(1)} s ago` : `${Math.round(ms / 60000)} min ago`
}

function cell (row, text, cls) {
  const td = document.createElement('td')
  td.textContent = text
  if (cls) td.className = cls
  row.appendChild(td)
  return td
}

function gpuCell (row, gpus) {
  const td = cell(row, '')
  if (gpus.length === 0) { td.textContent = '—'; return }
  for (const g of gpus) {
    const div = document.createElement('div')
    const util = g.utilisation == null ? '' : `, ${Math.round(g.utilisation)} %`
    const free = g.memoryFreeBytes == null ? '?' : bytes(g.memoryFreeBytes)
    div.textContent = `${g.model}: ${free} free of ${bytes(g.memoryTotalBytes)}${util}`
    if (g.simulated) {
      const tag = document.createElement('span')
      tag.className = 'sim'
      tag.textContent = 'simulated'
      div.appendChild(tag)
    }
    td.appendChild(div)
  }
}

async function refresh () {
  let delay = 2000
  try {
    const res = await fetch('/api/peers?include=all', { headers: { accept: 'application/json' } })
    if (!res.ok) throw new Error(`${res.status} ${res.statusText}`)
    const body = await res.json()
    delay = body.heartbeatMs ?? delay
    const rows = body.peers.map(p => {
      const tr = document.createElement('tr')
      tr.dataset.peerId = p.peerId
      cell(tr, p.name + (p.self ? ' (this agent)' : ''))
      cell(tr, p.cluster)
      cell(tr, p.peerId.slice(0, 10) + '…' + p.peerId.slice(-6)).title = p.peerId
      cell(tr, p.status, p.status)
      const r = p.readings
      cell(tr, String(r.cpu.count))
      cell(tr, [r.cpu.load1, r.cpu.load5, r.cpu.load15].map(x => x.toFixed(2)).join(' / '))
      cell(tr, `${Math.round(r.cpu.utilisation)} %`)
      cell(tr, `${bytes(r.memory.availableBytes)} / ${bytes(r.memory.totalBytes)}`)
      gpuCell(tr, r.gpus)
      cell(tr, p.self ? '—' : age(p.lastSeenAgoMs))
      return tr
    })
    tbody.replaceChildren(...rows)
    const self = body.peers.find(p => p.self)
    selfEl.textContent = self ? `agent ${self.name} · ${body.peers.filter(p => p.status === 'live').length} live peer(s)` : ''
    updatedEl.textContent = `updated ${new Date().toLocaleTimeString()}`
    errorEl.hidden = true
  } catch (err) {
    errorEl.textContent = `cannot reach the agent: ${err.message}`
    errorEl.hidden = false
  }
  setTimeout(refresh, Math.max(500, delay))
}

refresh()
