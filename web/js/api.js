// Talking to the admin listener: the admin token (asked for on a 401, kept in
// localStorage, sent on every call), JSON calls, and the live event stream read with
// fetch() (EventSource cannot send the Authorization header).

import { delay } from './dom.js'

const TOKEN_KEY = 'ollabridge.adminToken'

export function getToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) ?? ''
  } catch {
    return ''
  }
}

function setToken(token) {
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token)
    else localStorage.removeItem(TOKEN_KEY)
  } catch {
    // Private mode: the token lives until the page closes.
  }
  memoryToken = token
}
let memoryToken = ''

function authHeaders() {
  const token = getToken() || memoryToken
  return token ? { Authorization: `Bearer ${token}` } : {}
}

export class HttpError extends Error {
  constructor(status, message) {
    super(message)
    this.status = status
  }
}

/** The error text of a failed answer: its `error` field, or the body as it is. */
async function errorText(response) {
  const text = await response.text().catch(() => '')
  try {
    return JSON.parse(text).error ?? text
  } catch {
    return text || response.statusText
  }
}

// One token prompt at a time: every call that got a 401 waits for the same answer.
let pendingPrompt = null
let currentSubmit = null

/** Shows the token dialog with `reason`; resolves once the user saved a token. */
export function askToken(reason) {
  if (pendingPrompt) return pendingPrompt
  const dialog = document.getElementById('token-dialog')
  const form = document.getElementById('token-form')
  const input = document.getElementById('token-input')
  const error = document.getElementById('token-error')
  // No token yet is the normal first visit, not an error worth showing.
  const shown = reason && !/missing/i.test(reason) ? reason : ''
  error.textContent = shown
  error.hidden = !shown
  input.value = ''
  if (currentSubmit) form.removeEventListener('submit', currentSubmit)
  pendingPrompt = new Promise((resolve) => {
    const onSubmit = (event) => {
      event.preventDefault()
      const token = input.value.trim()
      if (!token) return
      setToken(token)
      form.removeEventListener('submit', onSubmit)
      currentSubmit = null
      dialog.close()
      pendingPrompt = null
      resolve(token)
    }
    currentSubmit = onSubmit
    form.addEventListener('submit', onSubmit)
  })
  if (!dialog.open) dialog.showModal()
  input.focus()
  return pendingPrompt
}

// A prompt after a 401 cannot be dismissed: nothing works without a token. One opened
// from the header button can (Escape).
let optionalPrompt = null
document.getElementById('token-dialog')?.addEventListener('cancel', (event) => {
  if (optionalPrompt) {
    optionalPrompt()
    return
  }
  if (pendingPrompt) event.preventDefault()
})

/**
 * A call to the admin listener. `body` is sent as JSON. Answers the parsed JSON, or
 * with `raw: true` the Response itself (for streams). A 401 asks for the token and
 * tries again; other failures throw an HttpError with the server's message.
 */
export async function api(path, { method = 'GET', body, signal, raw = false, headers = {} } = {}) {
  for (;;) {
    const init = { method, signal, headers: { ...authHeaders(), ...headers } }
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json'
      init.body = JSON.stringify(body)
    }
    const response = await fetch(path, init)
    if (response.status === 401) {
      await askToken(await errorText(response))
      continue
    }
    if (!response.ok) throw new HttpError(response.status, await errorText(response))
    if (raw) return response
    const text = await response.text()
    return text ? JSON.parse(text) : null
  }
}

/** `?a=1&b=2` of the entries whose value is set. */
export function query(params) {
  const search = new URLSearchParams()
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '' && value !== false) search.set(key, String(value))
  }
  const text = search.toString()
  return text ? `?${text}` : ''
}

/** Reads a byte stream of NDJSON and calls `onObject` per line. */
export async function readNdjson(stream, onObject) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ''
  for (;;) {
    const { value, done } = await reader.read()
    if (done) break
    buffer += value
    let newline
    while ((newline = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, newline).trim()
      buffer = buffer.slice(newline + 1)
      if (line) onObject(JSON.parse(line))
    }
  }
  if (buffer.trim()) onObject(JSON.parse(buffer))
}

/** Reads a Server-Sent Events stream and calls `onEvent(name, data)` per event. */
export async function readSse(stream, onEvent) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ''
  let name = 'message'
  let data = []
  for (;;) {
    const { value, done } = await reader.read()
    if (done) return
    buffer += value
    for (;;) {
      const end = buffer.search(/\r\n|\r|\n/)
      // A lone \r at the end may be half of a \r\n still on its way.
      if (end < 0 || (buffer[end] === '\r' && end === buffer.length - 1)) break
      const line = buffer.slice(0, end)
      buffer = buffer.slice(end + (buffer.startsWith('\r\n', end) ? 2 : 1))
      if (line === '') {
        if (data.length) onEvent(name, data.join('\n'))
        name = 'message'
        data = []
      } else if (!line.startsWith(':')) {
        const colon = line.indexOf(':')
        const field = colon < 0 ? line : line.slice(0, colon)
        let text = colon < 0 ? '' : line.slice(colon + 1)
        if (text.startsWith(' ')) text = text.slice(1)
        if (field === 'event') name = text
        else if (field === 'data') data.push(text)
      }
    }
  }
}

/**
 * Live events from `/api/events`, re-dispatched on `events` as `started`, `progress`,
 * `finished` (detail: the event's JSON), plus `connected` after every (re)connection,
 * when views refetch what they may have missed.
 */
export const events = new EventTarget()

/** In-flight requests seen on the event stream, by request id. */
export const inflight = new Map()

let connectionState = 'connecting'
export const connection = () => connectionState

function setConnection(state) {
  connectionState = state
  const badge = document.querySelector('[data-testid="live-status"]')
  if (badge) {
    badge.dataset.state = state
    badge.textContent = state
    badge.title = state === 'live' ? 'Receiving live events' : 'Event stream not connected'
  }
}

function track(name, detail) {
  const id = detail.request_id
  if (!id) return
  if (name === 'started') {
    inflight.set(id, {
      request_id: id,
      endpoint: detail.endpoint,
      model: detail.model ?? null,
      timestamp: detail.timestamp,
      seenAt: Date.now(),
      tokens: 0,
    })
  } else if (name === 'progress') {
    const entry = inflight.get(id)
    if (entry) entry.tokens = detail.tokens
  } else if (name === 'finished') {
    inflight.delete(id)
  }
}

let started = false

/** Connects to the event stream and keeps reconnecting (with backoff) while the page lives. */
export function startEvents() {
  if (started) return
  started = true
  ;(async () => {
    let backoff = 500
    for (;;) {
      try {
        const response = await api('/api/events', { raw: true, headers: { Accept: 'text/event-stream' } })
        // Whatever ran before this connection, we heard nothing of its end.
        inflight.clear()
        setConnection('live')
        backoff = 500
        events.dispatchEvent(new CustomEvent('connected'))
        await readSse(response.body, (name, data) => {
          let detail
          try {
            detail = JSON.parse(data)
          } catch {
            return
          }
          track(name, detail)
          events.dispatchEvent(new CustomEvent(name, { detail }))
        })
      } catch (error) {
        console.warn('event stream:', error)
      }
      setConnection('offline')
      await delay(backoff)
      backoff = Math.min(backoff * 2, 10_000)
      setConnection('connecting')
    }
  })()
}

/** Subscribes `handler` to the named events; returns the unsubscribe function. */
export function on(names, handler) {
  const list = [names].flat()
  const listener = (event) => handler(event.detail, event.type)
  for (const name of list) events.addEventListener(name, listener)
  return () => {
    for (const name of list) events.removeEventListener(name, listener)
  }
}

/** Client model names the Ollama API offers (`/ollama/api/tags`), without `:latest`. */
export async function modelNames() {
  const tags = await api('/ollama/api/tags')
  const names = (tags?.models ?? []).map((m) => (m.name ?? m.model ?? '').replace(/:latest$/, ''))
  return [...new Set(names.filter(Boolean))].sort()
}

/** Changes the token from the header button; resolves to the new token, or null when cancelled. */
export function changeToken() {
  if (pendingPrompt) return pendingPrompt
  const asked = askToken(null)
  return new Promise((resolve) => {
    optionalPrompt = () => {
      optionalPrompt = null
      pendingPrompt = null
      resolve(null)
    }
    asked.then((token) => {
      optionalPrompt = null
      resolve(token)
    })
  })
}
