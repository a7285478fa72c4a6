// The dashboard's shell: hash routing between the views, the theme, the event stream.
//
//   #/                overview (stats and charts)
//   #/live?…          live table (filters in the query)
//   #/logs/{id}       inspector
//   #/playground      chat playground

import { changeToken, startEvents } from './api.js'
import { h, replace } from './dom.js'
import * as overview from './overview.js'
import * as live from './live.js'
import * as inspector from './inspector.js'
import * as playground from './playground.js'

const main = document.getElementById('main')
let unmount = null
let currentKey = null

function route() {
  const hash = location.hash.replace(/^#/, '') || '/'
  const [path, search = ''] = hash.split('?')
  const params = new URLSearchParams(search)
  let match
  if (path === '/' || path === '') return { view: overview, name: 'overview', params, key: 'overview' }
  if (path === '/live') return { view: live, name: 'live', params, key: 'live' }
  if ((match = /^\/logs\/(\d+)$/.exec(path))) {
    return { view: inspector, name: 'live', params, id: Number(match[1]), key: `logs/${match[1]}` }
  }
  if (path === '/playground') return { view: playground, name: 'playground', params, key: 'playground' }
  return null
}

function render() {
  const target = route()
  const key = target?.key ?? 'missing'
  // A query change within one view (filters) is the view's own business.
  if (key === currentKey) {
    target?.view.update?.(target)
    return
  }
  currentKey = key
  if (unmount) {
    try {
      unmount()
    } catch (error) {
      console.error(error)
    }
    unmount = null
  }
  main.replaceChildren()
  for (const link of document.querySelectorAll('nav a[data-view]')) {
    if (link.dataset.view === target?.name) link.setAttribute('aria-current', 'page')
    else link.removeAttribute('aria-current')
  }
  if (!target) {
    replace(main, h('section', { class: 'panel' }, h('h1', null, 'Not found'), h('p', null, h('a', { href: '#/' }, 'Back to the overview'))))
    document.title = 'ollabridge'
    return
  }
  unmount = target.view.mount(main, target) ?? null
}

// Theme: prefers-color-scheme until the user picks one with the toggle.
const THEME_KEY = 'ollabridge.theme'
const darkQuery = matchMedia('(prefers-color-scheme: dark)')

function currentTheme() {
  return document.documentElement.dataset.theme ?? (darkQuery.matches ? 'dark' : 'light')
}

function showTheme() {
  const toggle = document.getElementById('theme-toggle')
  const next = currentTheme() === 'dark' ? 'light' : 'dark'
  toggle.setAttribute('aria-label', `Switch to ${next} theme`)
  toggle.title = `Switch to ${next} theme`
  toggle.dataset.theme = currentTheme()
  window.dispatchEvent(new CustomEvent('ollabridge:theme'))
}

document.getElementById('theme-toggle').addEventListener('click', () => {
  const next = currentTheme() === 'dark' ? 'light' : 'dark'
  document.documentElement.dataset.theme = next
  try {
    localStorage.setItem(THEME_KEY, next)
  } catch {}
  showTheme()
})
// Following the system until the user picks a theme.
darkQuery.addEventListener('change', () => {
  let chosen = null
  try {
    chosen = localStorage.getItem(THEME_KEY)
  } catch {}
  if (!chosen) document.documentElement.dataset.theme = darkQuery.matches ? 'dark' : 'light'
  showTheme()
})

document.getElementById('token-button').addEventListener('click', async () => {
  if (await changeToken()) location.reload()
})

window.addEventListener('hashchange', () => {
  render()
  main.focus({ preventScroll: true })
})

showTheme()
render()
startEvents()
