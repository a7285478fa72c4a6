// Overview: request rate, errors, latency and TTFT percentiles, tokens/s, tokens and
// cost per model over a window; refetched (throttled) as requests finish.

import { api, on, query } from './api.js'
import { timeChart } from './charts.js'
import { h, replace, throttle } from './dom.js'
import { formatCost, formatCount, formatMs, formatPercent, formatRate } from './format.js'

const WINDOWS = [
  { window: '15m', bucket: '1m', minutes: 15 },
  { window: '1h', bucket: '1m', minutes: 60 },
  { window: '24h', bucket: '15m', minutes: 1440 },
  { window: '7d', bucket: '1h', minutes: 10080 },
]
const WINDOW_KEY = 'ollabridge.window'

function chosenWindow(params) {
  let stored = null
  try {
    stored = localStorage.getItem(WINDOW_KEY)
  } catch {}
  const wanted = params.get('window') ?? stored ?? '1h'
  return WINDOWS.find((w) => w.window === wanted) ?? WINDOWS[1]
}

export function mount(main, { params }) {
  document.title = 'Overview · ollabridge'
  let win = chosenWindow(params)
  let alive = true
  const charts = []

  const status = h('p', { class: 'muted small', testid: 'overview-updated', 'aria-live': 'polite' })
  const picker = h(
    'div',
    { class: 'segmented', role: 'group', 'aria-label': 'Time window' },
    WINDOWS.map((w) =>
      h('button', {
        type: 'button',
        testid: `window-${w.window}`,
        'aria-pressed': String(w === win),
        onclick: () => {
          history.replaceState(null, '', `#/?window=${w.window}`)
          select(w)
        },
      }, w.window),
    ),
  )
  const cards = h('div', { class: 'cards', testid: 'stat-cards' })
  const chartBoxes = {
    requests: h('div', { class: 'chart', testid: 'chart-requests' }),
    latency: h('div', { class: 'chart', testid: 'chart-latency' }),
    tokens: h('div', { class: 'chart', testid: 'chart-tokens' }),
  }
  const models = h('div', { class: 'table-wrap' })
  const error = h('p', { class: 'error', role: 'alert', hidden: true, testid: 'overview-error' })

  replace(
    main,
    h('section', { class: 'view', testid: 'overview' },
      h('div', { class: 'view-head' }, h('h1', null, 'Overview'), picker),
      error,
      cards,
      h('div', { class: 'chart-grid' },
        h('figure', { class: 'panel' }, h('figcaption', null, 'Requests per minute'), chartBoxes.requests),
        h('figure', { class: 'panel' }, h('figcaption', null, 'Mean latency'), chartBoxes.latency),
        h('figure', { class: 'panel' }, h('figcaption', null, 'Tokens per bucket'), chartBoxes.tokens),
      ),
      h('section', { class: 'panel' }, h('h2', null, 'Per model'), models),
      status,
    ),
  )

  function card(testid, label, value, sub) {
    return h('div', { class: 'card', testid },
      h('div', { class: 'card-label' }, label),
      h('div', { class: 'card-value', testid: `${testid}-value` }, value),
      sub ? h('div', { class: 'card-sub' }, sub) : null)
  }

  function renderStats(stats) {
    const o = stats.overall
    const perMinute = o.count / win.minutes
    replace(
      cards,
      card('stat-requests', 'Requests', formatCount(o.count), `${formatRate(perMinute)} / min`),
      card('stat-errors', 'Error rate', formatPercent(o.error_rate), `${o.errors} failed`),
      card('stat-latency', 'Latency p50', formatMs(o.latency_ms.p50),
        [h('div', null, `p95 ${formatMs(o.latency_ms.p95)}`), h('div', null, `p99 ${formatMs(o.latency_ms.p99)}`)]),
      card('stat-ttft', 'First token p50', formatMs(o.ttft_ms.p50), `p95 ${formatMs(o.ttft_ms.p95)}`),
      card('stat-tps', 'Tokens / s', formatRate(o.tokens_per_second_mean), 'mean, generation'),
      card('stat-tokens', 'Tokens', formatCount(o.prompt_tokens + o.completion_tokens),
        `${formatCount(o.prompt_tokens)} in · ${formatCount(o.completion_tokens)} out`),
      card('stat-cost', 'Cost', formatCost(o.cost), o.cost == null ? 'no pricing configured' : `over ${win.window}`),
    )
    const head = ['Model', 'Requests', 'Errors', 'p50', 'p95', 'p99', 'TTFT p50', 'TTFT p95', 'Tok/s', 'Prompt tok', 'Output tok', 'Cost']
    replace(
      models,
      stats.models.length === 0
        ? h('p', { class: 'muted' }, `No requests in the last ${win.window}.`)
        : h('table', { class: 'data', testid: 'model-stats' },
          h('thead', null, h('tr', null, head.map((t, i) => h('th', { scope: 'col', class: i ? 'num' : null }, t)))),
          h('tbody', null, stats.models.map((m) =>
            h('tr', { testid: 'model-row', dataset: { model: m.model ?? '' } },
              h('th', { scope: 'row' }, m.model ?? '(none)'),
              h('td', { class: 'num' }, formatCount(m.count)),
              h('td', { class: 'num' }, formatPercent(m.error_rate)),
              h('td', { class: 'num' }, formatMs(m.latency_ms.p50)),
              h('td', { class: 'num' }, formatMs(m.latency_ms.p95)),
              h('td', { class: 'num' }, formatMs(m.latency_ms.p99)),
              h('td', { class: 'num' }, formatMs(m.ttft_ms.p50)),
              h('td', { class: 'num' }, formatMs(m.ttft_ms.p95)),
              h('td', { class: 'num' }, formatRate(m.tokens_per_second_mean)),
              h('td', { class: 'num' }, formatCount(m.prompt_tokens)),
              h('td', { class: 'num' }, formatCount(m.completion_tokens)),
              h('td', { class: 'num' }, formatCost(m.cost)),
            ))),
        ),
    )
  }

  function renderSeries(series) {
    const minutes = parseInt(win.bucket, 10) * (win.bucket.endsWith('h') ? 60 : win.bucket.endsWith('d') ? 1440 : 1)
    const x = series.buckets.map((b) => Date.parse(b.start) / 1000)
    const perMin = (n) => n / minutes
    const data = {
      requests: [x, series.buckets.map((b) => perMin(b.count)), series.buckets.map((b) => perMin(b.errors))],
      latency: [x, series.buckets.map((b) => (b.count ? b.latency_ms_mean : null))],
      tokens: [x, series.buckets.map((b) => b.prompt_tokens), series.buckets.map((b) => b.completion_tokens)],
    }
    const step = minutes * 60
    if (charts.length === 0 || charts.step !== step) {
      for (const chart of charts.splice(0)) chart.destroy()
      charts.step = step
      charts.push(
        timeChart(chartBoxes.requests, {
          step,
          yLabel: 'req/min',
          series: [
            { label: 'requests', kind: 'bars', value: formatRate },
            { label: 'errors', kind: 'bars', value: formatRate },
          ],
        }, data.requests),
        timeChart(chartBoxes.latency, { step, yLabel: 'ms', series: [{ label: 'mean latency', kind: 'line', value: formatMs }] }, data.latency),
        timeChart(chartBoxes.tokens, {
          step,
          yLabel: 'tokens',
          series: [
            { label: 'prompt', kind: 'bars', value: formatCount },
            { label: 'output', kind: 'bars', value: formatCount },
          ],
        }, data.tokens),
      )
    } else {
      charts[0].setData(data.requests)
      charts[1].setData(data.latency)
      charts[2].setData(data.tokens)
    }
  }

  let generation = 0
  async function refresh() {
    const mine = ++generation
    try {
      const [stats, series] = await Promise.all([
        api(`/api/stats${query({ window: win.window })}`),
        api(`/api/stats/timeseries${query({ window: win.window, bucket: win.bucket })}`),
      ])
      if (!alive || mine !== generation) return
      error.hidden = true
      renderStats(stats)
      renderSeries(series)
      status.textContent = `Last ${win.window}, ${win.bucket} buckets · updated ${new Date().toLocaleTimeString()}`
    } catch (e) {
      if (!alive) return
      error.textContent = `Cannot load the stats: ${e.message}`
      error.hidden = false
    }
  }

  function select(w) {
    win = w
    try {
      localStorage.setItem(WINDOW_KEY, w.window)
    } catch {}
    for (const b of picker.children) b.setAttribute('aria-pressed', String(b.dataset.testid === `window-${w.window}`))
    refresh()
  }
  selectWindow = (name) => {
    const w = WINDOWS.find((x) => x.window === name)
    if (w && w !== win) select(w)
  }

  const refreshSoon = throttle(refresh, 2000)
  const unsubscribe = on(['finished', 'connected'], () => refreshSoon())
  // Empty buckets move along with the clock even without traffic.
  const clock = setInterval(refreshSoon, 30_000)
  refresh()

  return () => {
    alive = false
    selectWindow = null
    unsubscribe()
    clearInterval(clock)
    for (const chart of charts) chart.destroy()
  }
}

let selectWindow = null

/** `#/?window=24h` typed while the overview is shown. */
export function update({ params }) {
  const wanted = params.get('window')
  if (wanted) selectWindow?.(wanted)
}
