// Live table: requests in flight (from the event stream, with their growing token
// count) above the finished rows (from /api/logs, paged with "Load more"), filtered by
// model, status, text, errors only and starred only. Enter or a click opens a row.

import { api, inflight, modelNames, on, query } from './api.js'
import { debounce, h, replace, throttle } from './dom.js'
import { formatCost, formatMs, formatRate, formatTime } from './format.js'
import { promptSummary, starButton, statusBadge } from './widgets.js'

const PAGE = 50

function readFilters(params) {
  return {
    model: params.get('model') ?? '',
    status: params.get('status') ?? '',
    q: params.get('q') ?? '',
    errors_only: params.get('errors_only') === 'true',
    starred: params.get('starred') === 'true',
  }
}

let applyFilters = null

export function update({ params }) {
  applyFilters?.(readFilters(params))
}

export function mount(main, { params }) {
  document.title = 'Live · ollabridge'
  let filters = readFilters(params)
  let alive = true
  /** Loaded rows by id, and the cursor of the page after them. */
  let rows = new Map()
  let nextCursor = null
  let loadedOnce = false
  const rowElements = new Map()

  // Filters.
  const modelSelect = h('select', { id: 'filter-model', testid: 'filter-model' }, h('option', { value: '' }, 'all models'))
  const statusSelect = h('select', { id: 'filter-status', testid: 'filter-status' },
    h('option', { value: '' }, 'any status'),
    h('option', { value: '2xx' }, '2xx'),
    h('option', { value: '4xx' }, '4xx'),
    h('option', { value: '5xx' }, '5xx'),
    h('option', { value: '499' }, '499 (client gone)'),
  )
  const search = h('input', { id: 'filter-q', testid: 'filter-q', type: 'search', placeholder: 'Search prompts and answers', autocomplete: 'off' })
  const errorsOnly = h('input', { id: 'filter-errors', testid: 'filter-errors', type: 'checkbox' })
  const starredOnly = h('input', { id: 'filter-starred', testid: 'filter-starred', type: 'checkbox' })

  const filterBar = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter requests', onsubmit: (e) => e.preventDefault() },
    h('label', { class: 'field' }, h('span', null, 'Model'), modelSelect),
    h('label', { class: 'field' }, h('span', null, 'Status'), statusSelect),
    h('label', { class: 'field grow' }, h('span', null, 'Text'), search),
    h('label', { class: 'check' }, errorsOnly, h('span', null, 'Errors only')),
    h('label', { class: 'check' }, starredOnly, h('span', null, 'Starred only')),
  )

  function showFilters() {
    if (filters.model && ![...modelSelect.options].some((o) => o.value === filters.model)) {
      modelSelect.append(h('option', { value: filters.model }, filters.model))
    }
    modelSelect.value = filters.model
    statusSelect.value = filters.status
    if (document.activeElement !== search) search.value = filters.q
    errorsOnly.checked = filters.errors_only
    starredOnly.checked = filters.starred
  }

  function setFilters(next) {
    filters = { ...filters, ...next }
    history.replaceState(null, '', `#/live${query(filters)}`)
    showFilters()
    reload()
  }
  applyFilters = (next) => {
    if (JSON.stringify(next) === JSON.stringify(filters)) return
    filters = next
    showFilters()
    reload()
  }

  modelSelect.addEventListener('change', () => setFilters({ model: modelSelect.value }))
  statusSelect.addEventListener('change', () => setFilters({ status: statusSelect.value }))
  search.addEventListener('input', debounce(() => setFilters({ q: search.value.trim() }), 300))
  errorsOnly.addEventListener('change', () => setFilters({ errors_only: errorsOnly.checked }))
  starredOnly.addEventListener('change', () => setFilters({ starred: starredOnly.checked }))

  // In flight.
  const inflightList = h('ul', { class: 'inflight', testid: 'inflight' })
  const inflightCount = h('span', { class: 'count', testid: 'inflight-count' }, '0')

  function renderInflight() {
    const now = Date.now()
    const entries = [...inflight.values()].sort((a, b) => a.seenAt - b.seenAt)
    inflightCount.textContent = String(entries.length)
    if (entries.length === 0) {
      replace(inflightList, h('li', { class: 'muted empty' }, 'Nothing running.'))
      return
    }
    replace(
      inflightList,
      entries.map((e) =>
        h('li', { testid: 'inflight-row', dataset: { requestId: e.request_id } },
          h('span', { class: 'spinner', 'aria-hidden': 'true' }),
          h('span', { class: 'mono' }, e.endpoint),
          h('span', { class: 'model' }, e.model ?? ''),
          h('span', { class: 'num', title: 'running for' }, formatMs(now - e.seenAt)),
          h('span', { class: 'num' }, h('span', { testid: 'inflight-tokens' }, String(e.tokens)), ' tokens'),
          h('span', { class: 'mono muted small' }, e.request_id.slice(0, 12)),
        ),
      ),
    )
  }

  // Finished rows.
  const tbody = h('tbody', { testid: 'log-rows' })
  const empty = h('p', { class: 'muted empty', testid: 'log-empty', hidden: true })
  const error = h('p', { class: 'error', role: 'alert', hidden: true, testid: 'live-error' })
  const loadMore = h('button', { type: 'button', class: 'secondary', testid: 'load-more', hidden: true, onclick: () => more() }, 'Load more')
  const head = ['', 'Time', 'Endpoint', 'Model', 'Status', 'Latency', 'TTFT', 'Tokens in → out', 'Tok/s', 'Cost', 'Prompt → answer']
  const headClasses = ['', '', 'hide-narrow', '', '', 'num', 'num hide-narrow', 'num hide-narrow', 'num hide-narrow', 'num hide-narrow', '']
  const table = h('table', { class: 'data logs', testid: 'log-table', hidden: true },
    h('caption', { class: 'visually-hidden' }, 'Finished requests, newest first. Enter opens one.'),
    h('thead', null, h('tr', null, head.map((t, i) =>
      h('th', { scope: 'col', class: headClasses[i] || null }, i === 0 ? h('span', { class: 'visually-hidden' }, 'Starred') : t)))),
    tbody,
  )

  function open(id) {
    location.hash = `#/logs/${id}`
  }

  function rowElement(row) {
    const prompt = promptSummary(row.prompt_preview, row.endpoint)
    const answer = row.error ? row.error : row.response_preview || (row.in_flight ? '…' : '')
    const tr = h('tr', {
      tabindex: '0',
      testid: 'log-row',
      class: row.in_flight ? 'running' : null,
      dataset: { id: String(row.id), requestId: row.request_id ?? '', replayOf: row.replay_of ?? '' },
      'aria-label': `Request ${row.id}, ${row.endpoint}, ${row.model ?? 'no model'}, status ${row.in_flight ? 'running' : row.status_code}`,
      onclick: (event) => {
        if (event.target.closest('a, button')) return
        open(row.id)
      },
      onkeydown: (event) => {
        if (event.key === 'Enter' && event.target === tr) open(row.id)
        if (event.key === 'ArrowDown') (tr.nextElementSibling ?? tr).focus()
        if (event.key === 'ArrowUp') (tr.previousElementSibling ?? tr).focus()
      },
    },
      h('td', null, starButton(row.id, row.starred, (on) => {
        row.starred = on
        if (filters.starred && !on) reload()
      })),
      h('td', { class: 'time', title: row.timestamp }, h('a', { href: `#/logs/${row.id}`, tabindex: '-1', testid: 'row-link' }, formatTime(row.timestamp))),
      h('td', { class: 'mono hide-narrow', testid: 'row-endpoint' }, row.endpoint),
      h('td', { class: 'model' }, h('span', { testid: 'row-model' }, row.model ?? '–'),
        row.replay_of != null ? h('span', { class: 'tag', testid: 'row-replay-of', title: `Replay of request ${row.replay_of}` }, `↻ #${row.replay_of}`) : null),
      h('td', null, statusBadge(row.status_code, row.in_flight, 'row-status')),
      h('td', { class: 'num', testid: 'row-latency' }, row.in_flight ? '…' : formatMs(row.latency_ms)),
      h('td', { class: 'num hide-narrow' }, formatMs(row.ttft_ms)),
      h('td', { class: 'num hide-narrow', testid: 'row-tokens' }, `${row.prompt_tokens ?? '–'} → ${row.completion_tokens ?? '–'}`),
      h('td', { class: 'num hide-narrow' }, formatRate(row.tokens_per_second)),
      h('td', { class: 'num hide-narrow' }, formatCost(row.cost)),
      h('td', { class: 'preview' },
        h('span', { class: 'prompt', testid: 'row-prompt' }, prompt),
        h('span', { class: 'arrow', 'aria-hidden': 'true' }, ' → '),
        h('span', { class: row.error ? 'answer error-text' : 'answer', testid: 'row-answer' }, answer)),
    )
    return tr
  }

  function renderRows() {
    const sorted = [...rows.values()].sort((a, b) => b.id - a.id)
    const focusedId = document.activeElement?.closest?.('tr[data-id]')?.dataset.id
    const keep = new Set()
    const elements = sorted.map((row) => {
      const signature = JSON.stringify(row)
      let cached = rowElements.get(row.id)
      if (!cached || cached.signature !== signature) {
        const element = rowElement(row)
        if (!cached && loadedOnce) element.classList.add('fresh')
        cached = { element, signature }
        rowElements.set(row.id, cached)
      }
      keep.add(row.id)
      return cached.element
    })
    for (const id of rowElements.keys()) if (!keep.has(id)) rowElements.delete(id)
    tbody.replaceChildren(...elements)
    if (focusedId) tbody.querySelector(`tr[data-id="${CSS.escape(focusedId)}"]`)?.focus()
    empty.hidden = sorted.length > 0
    empty.textContent = Object.values(filters).some(Boolean)
      ? 'No request matches these filters.'
      : 'No requests yet. Send one to the Ollama port, or try the playground.'
    loadMore.hidden = nextCursor == null
    table.hidden = sorted.length === 0
    loadedOnce = true
  }

  function listUrl(cursor) {
    return `/api/logs${query({ ...filters, errors_only: filters.errors_only ? 'true' : '', starred: filters.starred ? 'true' : '', limit: PAGE, cursor })}`
  }

  let generation = 0
  /** The newest page again, merged into what is loaded (rows change: in flight → finished, stars). */
  async function refresh() {
    const mine = generation
    try {
      const page = await api(listUrl())
      if (!alive || mine !== generation) return
      error.hidden = true
      const fresh = new Map(page.logs.map((r) => [r.id, r]))
      const oldest = page.logs.length ? page.logs.at(-1).id : Infinity
      if (page.next_cursor == null) {
        rows = fresh
        nextCursor = null
      } else {
        for (const [id, row] of rows) if (id < oldest) fresh.set(id, row)
        rows = fresh
        if (!loadedOnce) nextCursor = page.next_cursor
      }
      renderRows()
    } catch (e) {
      if (!alive) return
      error.textContent = `Cannot load the log: ${e.message}`
      error.hidden = false
    }
  }

  function reload() {
    generation++
    rows = new Map()
    rowElements.clear()
    nextCursor = null
    loadedOnce = false
    refresh()
  }

  async function more() {
    if (nextCursor == null) return
    const mine = generation
    loadMore.disabled = true
    try {
      const page = await api(listUrl(nextCursor))
      if (!alive || mine !== generation) return
      for (const row of page.logs) rows.set(row.id, row)
      nextCursor = page.next_cursor
      renderRows()
    } catch (e) {
      error.textContent = `Cannot load more: ${e.message}`
      error.hidden = false
    } finally {
      loadMore.disabled = false
    }
  }

  replace(
    main,
    h('section', { class: 'view', testid: 'live' },
      h('div', { class: 'view-head' }, h('h1', null, 'Live'), filterBar),
      h('section', { class: 'panel', 'aria-labelledby': 'inflight-title' },
        h('h2', { id: 'inflight-title' }, 'In flight ', inflightCount),
        inflightList),
      h('section', { class: 'panel', 'aria-labelledby': 'finished-title' },
        h('h2', { id: 'finished-title' }, 'Requests'),
        error,
        h('div', { class: 'table-wrap' }, table),
        empty,
        h('div', { class: 'more' }, loadMore)),
    ),
  )
  showFilters()
  renderInflight()

  // Model names for the filter: what the API offers and what the log has seen.
  Promise.all([
    modelNames().catch(() => []),
    api('/api/stats?window=7d').then((s) => s.models.map((m) => m.model).filter(Boolean)).catch(() => []),
  ]).then(([offered, seen]) => {
    if (!alive) return
    const names = [...new Set([...offered, ...seen, filters.model].filter(Boolean))].sort()
    replace(modelSelect, h('option', { value: '' }, 'all models'), names.map((n) => h('option', { value: n }, n)))
    modelSelect.value = filters.model
  })

  const refreshSoon = throttle(refresh, 400)
  // The row is written shortly after `finished` (the log writer batches): look again a bit later too.
  const refreshLater = debounce(refresh, 300)
  // Requests running for more than a second get a row (in_flight): look while they stream.
  const refreshWhileRunning = throttle(refresh, 1000)
  const unsubscribe = [
    on('started', renderInflight),
    on('progress', () => {
      renderInflight()
      refreshWhileRunning()
    }),
    on('finished', () => {
      renderInflight()
      refreshSoon()
      refreshLater()
    }),
    on('connected', () => {
      renderInflight()
      refresh()
    }),
  ]
  const ticker = setInterval(() => {
    if (inflight.size) renderInflight()
  }, 500)
  reload()

  return () => {
    alive = false
    applyFilters = null
    clearInterval(ticker)
    for (const off of unsubscribe) off()
  }
}
