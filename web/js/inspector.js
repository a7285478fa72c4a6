// Inspector (#/logs/{id}): one request with everything stored about it: the
// conversation, tools offered, the answer with its tool calls and thinking, timings,
// tokens, cost, raw bodies; star, copy as curl, replay (optionally on another model)
// side by side with the original, and links between a row, its original and replays.

import { api, modelNames, on } from './api.js'
import { delay, h, jsonBlock, prettyJson, replace, thumbnails } from './dom.js'
import { contentText, formatBytes, formatCost, formatFullTime, formatMs, formatRate } from './format.js'
import { facts, starButton, statusBadge } from './widgets.js'

const OLLAMA_URL_KEY = 'ollabridge.ollamaUrl'

function ollamaUrl() {
  let stored = null
  try {
    stored = localStorage.getItem(OLLAMA_URL_KEY)
  } catch {}
  return stored || `${location.protocol}//${location.hostname}:11434`
}

/** The request as the client sent it: the stored body, or one rebuilt from the row. */
function requestBody(row) {
  if (row.request_body != null) {
    if (typeof row.request_body === 'string') {
      try {
        return JSON.parse(row.request_body)
      } catch {
        return row.request_body
      }
    }
    return row.request_body
  }
  if (row.endpoint === '/api/chat' && Array.isArray(row.prompt)) {
    return { model: row.model, messages: row.prompt, stream: row.stream ?? true }
  }
  if (row.endpoint === '/api/generate') return { model: row.model, prompt: row.prompt ?? '', stream: row.stream ?? true }
  return row.prompt
}

const shellQuote = (text) => `'${text.replaceAll("'", `'\\''`)}'`

function curlCommand(row) {
  const body = requestBody(row)
  const text = typeof body === 'string' ? body : JSON.stringify(body)
  return `curl ${shellQuote(`${ollamaUrl()}${row.endpoint}`)} \\\n  -H 'Content-Type: application/json' \\\n  -d ${shellQuote(text ?? '')}`
}

function toolCallView(call, i) {
  const fn = call?.function ?? call ?? {}
  let args = fn.arguments
  if (typeof args === 'string') {
    try {
      args = JSON.parse(args)
    } catch {}
  }
  return h('div', { class: 'tool-call', testid: 'tool-call' },
    h('div', { class: 'tool-call-head' },
      h('span', { class: 'tag' }, 'tool call'),
      h('code', { testid: 'tool-call-name' }, fn.name ?? `call ${i + 1}`),
      call?.id ? h('span', { class: 'muted small mono' }, call.id) : null),
    h('pre', { class: 'code', testid: 'tool-call-args' }, typeof args === 'string' ? args : JSON.stringify(args ?? {}, null, 2)),
  )
}

function thinkingView(text, testid = 'thinking') {
  if (!text) return null
  return h('details', { class: 'thinking', testid }, h('summary', null, 'Thinking'), h('div', { class: 'text' }, text))
}

function messageView(message, index) {
  const role = message?.role ?? 'message'
  const content = contentText(message?.content)
  return h('article', { class: `message role-${role}`, testid: 'message', dataset: { role, index: String(index) } },
    h('header', null,
      h('span', { class: 'role' }, role),
      message?.tool_name ? h('code', { class: 'muted' }, message.tool_name) : null,
      message?.tool_call_id ? h('span', { class: 'muted small mono' }, message.tool_call_id) : null),
    thinkingView(message?.thinking, 'message-thinking'),
    content ? h('div', { class: 'text', testid: 'message-content' }, content) : null,
    thumbnails(message?.images, 'message-image'),
    Array.isArray(message?.tool_calls) ? message.tool_calls.map(toolCallView) : null,
  )
}

function toolsView(tools) {
  if (!Array.isArray(tools) || tools.length === 0) return null
  return h('section', { class: 'panel', testid: 'tools-offered' },
    h('h2', null, `Tools offered (${tools.length})`),
    tools.map((tool) => {
      const fn = tool?.function ?? tool
      return h('details', { class: 'tool', testid: 'tool-offered' },
        h('summary', null, h('code', { testid: 'tool-offered-name' }, fn?.name ?? '?'), fn?.description ? h('span', { class: 'muted' }, ` — ${fn.description}`) : null),
        jsonBlock(fn?.parameters ?? tool))
    }),
  )
}

/** The conversation the client sent: system prompt, messages and images. */
function conversationView(row, body) {
  const items = []
  if (row.endpoint === '/api/chat' && Array.isArray(row.prompt)) {
    row.prompt.forEach((m, i) => items.push(messageView(m, i)))
  } else if (row.endpoint === '/api/generate') {
    if (body?.system) items.push(messageView({ role: 'system', content: body.system }, 0))
    items.push(messageView({ role: 'user', content: typeof row.prompt === 'string' ? row.prompt : prettyJson(row.prompt ?? ''), images: body?.images }, 1))
    if (body?.suffix) items.push(messageView({ role: 'suffix', content: body.suffix }, 2))
  } else if (row.prompt != null) {
    items.push(h('article', { class: 'message', testid: 'message' }, h('header', null, h('span', { class: 'role' }, 'input')), jsonBlock(row.prompt)))
  }
  if (items.length === 0) items.push(h('p', { class: 'muted' }, 'Nothing stored (database.redact, or no body).'))
  return h('section', { class: 'panel', testid: 'conversation' }, h('h2', null, 'Request'), items)
}

function answerView(row) {
  return h('section', { class: 'panel', testid: 'answer' },
    h('h2', null, 'Answer'),
    row.error ? h('p', { class: 'error', testid: 'answer-error' }, row.error) : null,
    thinkingView(row.thinking, 'answer-thinking'),
    row.response ? h('div', { class: 'text answer-text', testid: 'answer-text' }, row.response) : null,
    Array.isArray(row.tool_calls) ? row.tool_calls.map(toolCallView) : row.tool_calls != null ? jsonBlock(row.tool_calls) : null,
    !row.error && !row.response && row.tool_calls == null && !row.in_flight ? h('p', { class: 'muted' }, 'No text stored.') : null,
    row.in_flight ? h('p', { class: 'muted' }, 'Still running…') : null,
    row.done_reason ? h('p', { class: 'muted small' }, `done_reason: ${row.done_reason}`) : null,
  )
}

/**
 * queue → first token → generation, proportional to the request's latency. A streamed
 * answer splits at the first token (before it: waiting, then the backend's prompt
 * evaluation); a non-streamed one, whose first token goes out with the last, splits by
 * the backend's own prompt and generation times, the rest being queue and overhead.
 */
function timingBar(row) {
  const total = row.latency_ms
  if (total == null || total <= 0) return null
  const ttft = row.ttft_ms
  const promptEval = row.prompt_eval_ms ?? 0
  const parts = []
  if (row.stream && ttft != null && ttft < total) {
    const prompt = Math.min(promptEval, ttft)
    parts.push(['queue', 'Queue and overhead', Math.max(ttft - prompt, 0)])
    parts.push(['prompt', 'Prompt evaluation', prompt])
    parts.push(['generation', 'First token → last', Math.max(total - ttft, 0)])
  } else {
    const gen = Math.min(row.eval_ms ?? 0, total)
    const prompt = Math.min(promptEval, total - gen)
    parts.push(['queue', 'Queue and overhead', Math.max(total - gen - prompt, 0)])
    parts.push(['prompt', 'Prompt evaluation', prompt])
    parts.push(['generation', 'Generation', gen])
  }
  const sum = parts.reduce((s, p) => s + p[2], 0) || 1
  return h('section', { class: 'panel', testid: 'timing' },
    h('h2', null, 'Timing'),
    h('div', { class: 'timing-bar', testid: 'timing-bar', role: 'img', 'aria-label': parts.map(([, label, ms]) => `${label} ${formatMs(ms)}`).join(', ') },
      parts.filter((p) => p[2] > 0).map(([kind, label, ms]) =>
        h('span', { class: `seg seg-${kind}`, style: `flex-grow: ${ms / sum}`, title: `${label}: ${formatMs(ms)}` }))),
    h('ul', { class: 'legend' }, parts.map(([kind, label, ms]) =>
      h('li', { testid: `timing-${kind}` }, h('span', { class: `swatch seg-${kind}`, 'aria-hidden': 'true' }), `${label}: ${formatMs(ms)}`))),
    facts([
      ['Latency', formatMs(total), 'insp-latency'],
      ['Time to first token', ttft != null ? formatMs(ttft) : null, 'insp-ttft'],
      ['Prompt eval (backend)', row.prompt_eval_ms != null ? formatMs(row.prompt_eval_ms) : null],
      ['Generation (backend)', row.eval_ms != null ? formatMs(row.eval_ms) : null],
      ['Speed', row.tokens_per_second != null ? `${formatRate(row.tokens_per_second)} tok/s` : null],
    ]),
  )
}

function rawView(row, body) {
  const blocks = [
    ['Client request', row.request_body != null ? body : null, 'raw-request'],
    ['Backend request', row.backend_request, 'raw-backend-request'],
    ['Backend response', row.backend_response, 'raw-backend-response'],
  ].filter(([, value]) => value != null)
  return h('section', { class: 'panel', testid: 'raw' },
    h('h2', null, 'Raw bodies'),
    blocks.length === 0
      ? h('p', { class: 'muted' }, 'Not stored. Set database.store_bodies to keep the client and backend bodies.')
      : blocks.map(([label, value, testid]) => h('details', { class: 'raw', testid }, h('summary', null, label), jsonBlock(value))),
  )
}

/** The side-by-side of an original row and a replay answer. */
function comparison(original, replay) {
  const answer = replay.answer ?? {}
  const message = answer.message ?? {}
  const replayText = message.content ?? answer.response ?? ''
  const ns = (n) => (typeof n === 'number' ? n / 1e6 : null)
  const side = (title, testid, { error, thinking, text, toolCalls, rows }) =>
    h('div', { class: 'side', testid },
      h('h3', null, title),
      error ? h('p', { class: 'error', testid: `${testid}-error` }, error) : null,
      thinkingView(thinking),
      text ? h('div', { class: 'text', testid: `${testid}-text` }, text) : null,
      Array.isArray(toolCalls) ? toolCalls.map(toolCallView) : null,
      facts(rows))
  return h('div', { class: 'compare' },
    side(`Original #${original.id} (${original.model ?? '–'})`, 'replay-original', {
      error: original.error,
      thinking: original.thinking,
      text: original.response,
      toolCalls: original.tool_calls,
      rows: [
        ['Status', String(original.status_code ?? '–')],
        ['Latency', formatMs(original.latency_ms)],
        ['TTFT', original.ttft_ms != null ? formatMs(original.ttft_ms) : null],
        ['Tokens', `${original.prompt_tokens ?? '–'} → ${original.completion_tokens ?? '–'}`],
      ],
    }),
    side(`Replay (${answer.model ?? original.model ?? '–'})`, 'replay-answer', {
      error: answer.error,
      thinking: message.thinking ?? answer.thinking,
      text: replayText,
      toolCalls: message.tool_calls,
      rows: [
        ['Status', String(replay.status ?? '–'), 'replay-status'],
        ['Latency', formatMs(replay.latency_ms)],
        ['Backend total', ns(answer.total_duration) != null ? formatMs(ns(answer.total_duration)) : null],
        ['Tokens', answer.eval_count != null ? `${answer.prompt_eval_count ?? '–'} → ${answer.eval_count}` : null],
        ['done_reason', answer.done_reason],
      ],
    }),
  )
}

export function mount(main, { id }) {
  document.title = `Request #${id} · ollabridge`
  let alive = true
  let row = null
  const root = h('section', { class: 'view', testid: 'inspector', dataset: { id: String(id) } }, h('p', { class: 'muted' }, 'Loading…'))
  replace(main, root)
  const replayArea = h('div', { class: 'replay-result', testid: 'replay-result', 'aria-live': 'polite' })
  const replayLinks = h('p', { class: 'links', testid: 'replays' })
  let lastReplay = null

  function renderLinks() {
    const replays = row?.replays ?? []
    replace(
      replayLinks,
      row?.replay_of != null ? ['Replay of ', h('a', { href: `#/logs/${row.replay_of}`, testid: 'replay-of-link' }, `#${row.replay_of}`), replays.length ? ' · ' : ''] : null,
      replays.length
        ? ['Replays: ', replays.flatMap((rid, i) => [i ? ', ' : '', h('a', { href: `#/logs/${rid}`, testid: 'replay-link', dataset: { id: String(rid) } }, `#${rid}`)])]
        : null,
    )
    replayLinks.hidden = row?.replay_of == null && replays.length === 0
  }

  function render() {
    const body = requestBody(row)
    const models = h('select', { testid: 'replay-model', id: 'replay-model', 'aria-label': 'Replay on model' },
      h('option', { value: '' }, `same model (${row.model ?? '–'})`))
    modelNames()
      .then((names) => {
        for (const n of names) if (n !== row.model) models.append(h('option', { value: n }, n))
      })
      .catch(() => {})
    // Shown only with several backends: replay on one of them, bypassing the model's routing.
    const backends = h('select', { testid: 'replay-backend', id: 'replay-backend', 'aria-label': 'Replay on backend', hidden: true },
      h('option', { value: '' }, 'usual backend'))
    api('/api/backends')
      .then(({ backends: list }) => {
        if (!list || list.length < 2) return
        for (const b of list) backends.append(h('option', { value: b.name }, b.name))
        backends.hidden = false
      })
      .catch(() => {})
    const replayButton = h('button', { type: 'button', class: 'primary', testid: 'replay-button' }, 'Replay')
    const canReplay = ['/api/chat', '/api/generate'].includes(row.endpoint) && !row.in_flight
    replayButton.disabled = !canReplay
    if (!canReplay) replayButton.title = 'Only finished /api/chat and /api/generate requests can be replayed'
    replayButton.addEventListener('click', () => replay(models.value, backends.value, replayButton))

    const curl = h('pre', { class: 'code curl', testid: 'curl-command', hidden: true })
    const copyButton = h('button', { type: 'button', class: 'secondary', testid: 'copy-curl' }, 'Copy as curl')
    copyButton.addEventListener('click', async () => {
      const command = curlCommand(row)
      curl.textContent = command
      curl.hidden = false
      try {
        await navigator.clipboard.writeText(command)
        copyButton.textContent = 'Copied'
      } catch {
        copyButton.textContent = 'Select and copy below'
      }
      setTimeout(() => {
        copyButton.textContent = 'Copy as curl'
      }, 2000)
    })

    replace(
      root,
      h('div', { class: 'view-head' },
        h('div', null,
          h('p', { class: 'crumbs' }, h('a', { href: '#/live', testid: 'back-to-live' }, '← Live')),
          h('h1', null, starButton(row.id, row.starred, (on) => {
            row.starred = on
          }), ` Request #${row.id} `, statusBadge(row.status_code, row.in_flight, 'insp-status')),
          h('p', { class: 'muted' },
            h('span', { class: 'mono' }, `${row.method} ${row.endpoint}`), ' · ',
            h('span', { testid: 'insp-model' }, row.model ?? '–'), ' · ', formatFullTime(row.timestamp)),
          replayLinks),
        h('div', { class: 'actions' }, copyButton,
          h('div', { class: 'replay-controls' }, models, backends, replayButton)),
      ),
      curl,
      replayArea,
      h('div', { class: 'inspector-grid' },
        h('div', { class: 'col' }, conversationView(row, body), toolsView(body?.tools), answerView(row)),
        h('div', { class: 'col' },
          timingBar(row),
          h('section', { class: 'panel', testid: 'details' },
            h('h2', null, 'Details'),
            facts([
              ['Backend', backendLabel(row), 'insp-backend'],
              ['Failed tries', attemptsLabel(row.attempts), 'insp-attempts'],
              ['Cache', row.cache_hit ? 'hit (the backend was not called)' : null, 'insp-cache'],
              ['Backend model', row.backend_model, 'insp-backend-model'],
              ['Prompt tokens', row.prompt_tokens != null ? `${row.prompt_tokens}${row.tokens_estimated ? ' (estimated)' : ''}` : null, 'insp-prompt-tokens'],
              ['Output tokens', row.completion_tokens != null ? `${row.completion_tokens}${row.tokens_estimated ? ' (estimated)' : ''}` : null, 'insp-completion-tokens'],
              ['Cost', row.cost != null ? formatCost(row.cost) : null, 'insp-cost'],
              ['Streamed', row.stream == null ? null : row.stream ? 'yes' : 'no'],
              ['Request bytes', row.request_bytes != null ? formatBytes(row.request_bytes) : null],
              ['Response bytes', row.response_bytes != null ? formatBytes(row.response_bytes) : null],
              ['Client', row.client_addr],
              ['API key', row.client_key, 'insp-client-key'],
              ['Request id', row.request_id, 'insp-request-id'],
            ], 'insp-facts')),
          rawView(row, body)),
      ),
    )
    renderLinks()
    if (lastReplay) replace(replayArea, comparison(row, lastReplay))
  }

  async function load() {
    try {
      row = await api(`/api/logs/${id}`)
      if (!alive) return
      render()
    } catch (e) {
      if (!alive) return
      replace(root,
        h('p', { class: 'crumbs' }, h('a', { href: '#/live' }, '← Live')),
        h('p', { class: 'error', role: 'alert', testid: 'inspector-error' }, e.status === 404 ? `Request #${id} is not in the log.` : `Cannot load request #${id}: ${e.message}`))
    }
  }

  async function replay(model, backend, button) {
    button.disabled = true
    button.textContent = 'Replaying…'
    replace(replayArea, h('p', { class: 'muted' }, 'Replaying…'))
    const before = new Set(row.replays ?? [])
    try {
      const options = {}
      if (model) options.model = model
      if (backend) options.backend = backend
      const result = await api(`/api/replay/${id}`, { method: 'POST', body: options })
      if (!alive) return
      lastReplay = result.replay
      if (result.original) row = { ...row, ...result.original }
      replace(replayArea, comparison(row, lastReplay))
      // The replay's own row is written by the log writer a moment later.
      for (let i = 0; i < 40 && alive; i++) {
        const fresh = await api(`/api/logs/${id}`).catch(() => null)
        if (!alive) return
        if (fresh && (fresh.replays ?? []).some((r) => !before.has(r))) {
          row = fresh
          renderLinks()
          const added = (fresh.replays ?? []).filter((r) => !before.has(r)).at(-1)
          replayArea.prepend(h('p', { class: 'links' }, 'Logged as ', h('a', { href: `#/logs/${added}`, testid: 'replay-row-link' }, `#${added}`)))
          break
        }
        await delay(Math.min(100 * (i + 1), 1000))
      }
    } catch (e) {
      if (!alive) return
      replace(replayArea, h('p', { class: 'error', role: 'alert', testid: 'replay-error' }, `Replay failed: ${e.message}`))
    } finally {
      button.disabled = false
      button.textContent = 'Replay'
    }
  }

  // A row still running: load it again once it is finished.
  const unsubscribe = on('finished', (event) => {
    if (row?.in_flight && event.request_id === row.request_id) setTimeout(load, 300)
  })
  load()
  return () => {
    alive = false
    unsubscribe()
  }
}

/** The backend's configured name, with its type when the name is something else. */
function backendLabel(row) {
  const name = row.backend ?? row.backend_type
  if (!name) return null
  return row.backend_type && row.backend_type !== name ? `${name} (${row.backend_type})` : name
}

/** Targets that failed before the one that answered, one per line. */
function attemptsLabel(attempts) {
  if (!Array.isArray(attempts) || attempts.length === 0) return null
  return attempts.map((a) => `${a.backend} / ${a.model}: ${a.error}`).join('\n')
}
