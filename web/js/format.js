// Numbers and times as the dashboard shows them.

/** A stored timestamp (`YYYY-MM-DD HH:MM:SS.SSS`, UTC) or RFC 3339 as a Date. */
export function parseTime(text) {
  if (!text) return null
  const iso = /^\d{4}-\d\d-\d\d \d/.test(text) ? `${text.replace(' ', 'T')}Z` : text
  const date = new Date(iso)
  return Number.isNaN(date.getTime()) ? null : date
}

const pad = (n, w = 2) => String(n).padStart(w, '0')

/** Local time; the date too when it is not today. */
export function formatTime(text) {
  const date = parseTime(text)
  if (!date) return text ?? ''
  const time = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`
  const now = new Date()
  if (date.toDateString() === now.toDateString()) return time
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${time}`
}

export function formatFullTime(text) {
  const date = parseTime(text)
  if (!date) return text ?? ''
  return `${formatTime(text).includes('-') ? '' : `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} `}${formatTime(text)}.${pad(date.getMilliseconds(), 3)}`
}

export function formatMs(ms) {
  if (ms == null || Number.isNaN(ms)) return '–'
  if (ms < 10) return `${(Math.round(ms * 10) / 10).toFixed(1)} ms`
  if (ms < 1000) return `${Math.round(ms)} ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(2)} s`
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`
}

export function formatCount(n) {
  if (n == null) return '–'
  if (Math.abs(n) >= 1e6) return `${(n / 1e6).toFixed(1)}M`
  if (Math.abs(n) >= 1e4) return `${(n / 1e3).toFixed(1)}k`
  return String(Math.round(n))
}

export function formatRate(n) {
  if (n == null) return '–'
  if (n === 0) return '0'
  if (n < 1) return n.toFixed(2)
  return n >= 100 ? String(Math.round(n)) : n.toFixed(1)
}

export function formatPercent(ratio) {
  if (ratio == null) return '–'
  const pct = ratio * 100
  return `${pct === 0 || pct >= 10 ? pct.toFixed(0) : pct.toFixed(1)} %`
}

export function formatCost(cost) {
  if (cost == null) return '–'
  if (cost === 0) return '$0'
  if (cost < 0.01) return `$${cost.toFixed(6)}`
  return `$${cost.toFixed(2)}`
}

export function formatBytes(n) {
  if (n == null) return '–'
  if (n < 1024) return `${n} B`
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`
  return `${(n / 1024 / 1024).toFixed(1)} MiB`
}

/** `2xx`…`5xx` class name for a status code, for colouring. */
export function statusClass(code, inFlight) {
  if (inFlight) return 'status-running'
  if (code == null) return 'status-none'
  if (code === 499) return 'status-gone'
  if (code >= 500) return 'status-5xx'
  if (code >= 400) return 'status-4xx'
  return 'status-2xx'
}

/** The text of a message `content`, which is a string for Ollama (parts for some clients). */
export function contentText(content) {
  if (content == null) return ''
  if (typeof content === 'string') return content
  if (Array.isArray(content)) return content.map((p) => (typeof p === 'string' ? p : (p?.text ?? ''))).join('')
  return JSON.stringify(content)
}
