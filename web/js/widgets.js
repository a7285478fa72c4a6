// Small pieces the views share.

import { api } from './api.js'
import { h } from './dom.js'
import { statusClass } from './format.js'

/**
 * A star toggle for log row `id` (a real button with aria-pressed). Clicking it sets
 * the star on the server; `onChange(starred)` runs once the server agreed.
 */
export function starButton(id, starred, onChange) {
  const button = h('button', {
    type: 'button',
    class: 'star',
    testid: 'star-toggle',
    dataset: { id: String(id) },
  })
  const show = (on) => {
    button.setAttribute('aria-pressed', String(on))
    button.setAttribute('aria-label', on ? `Unstar request ${id}` : `Star request ${id}`)
    button.title = on ? 'Starred (kept by retention); click to unstar' : 'Star (keep it through retention)'
    button.textContent = on ? '★' : '☆'
  }
  show(Boolean(starred))
  button.addEventListener('click', async (event) => {
    event.stopPropagation()
    const want = button.getAttribute('aria-pressed') !== 'true'
    button.disabled = true
    try {
      const answer = await api(`/api/logs/${id}/starred`, { method: 'PUT', body: { starred: want } })
      const now = Boolean(answer?.starred ?? want)
      show(now)
      onChange?.(now)
    } catch (error) {
      button.title = `Could not change the star: ${error.message}`
    } finally {
      button.disabled = false
    }
  })
  button.addEventListener('keydown', (event) => event.stopPropagation())
  return button
}

export function statusBadge(code, inFlight, testid = 'status') {
  const text = inFlight ? 'running' : code == null ? '–' : String(code)
  return h('span', { class: `badge ${statusClass(code, inFlight)}`, testid }, text)
}

/** A `dl` of label/value pairs, leaving out pairs whose value is null. */
export function facts(pairs, testid) {
  return h(
    'dl',
    { class: 'facts', testid },
    pairs
      .filter(([, value]) => value != null && value !== '')
      .map(([label, value, id]) => [h('dt', null, label), h('dd', { testid: id }, value)]),
  )
}

/** The text of a chat prompt preview (the messages' JSON, maybe cut short): its last user text. */
export function promptSummary(preview, endpoint) {
  if (preview == null) return ''
  if (endpoint !== '/api/chat') return preview
  try {
    const messages = JSON.parse(preview)
    if (Array.isArray(messages)) {
      const user = messages.filter((m) => m?.role === 'user').at(-1) ?? messages.at(-1)
      if (user) return typeof user.content === 'string' ? user.content : JSON.stringify(user.content)
    }
  } catch {
    // Cut at PREVIEW_CHARS: pick the contents out by hand.
    const contents = [...preview.matchAll(/"content":"((?:[^"\\]|\\.)*)/g)].map((m) => m[1])
    if (contents.length) {
      const last = contents.at(-1)
      try {
        return JSON.parse(`"${last}"`)
      } catch {
        return last.replace(/\\(.)/g, '$1')
      }
    }
  }
  return preview
}
