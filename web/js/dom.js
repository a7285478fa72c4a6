// Building DOM without innerHTML: every piece of text goes in as a text node.

const PROPERTIES = new Set(['value', 'checked', 'disabled', 'selected', 'open', 'hidden', 'multiple', 'required'])

/**
 * h('div', {class: 'x', testid: 'y', onclick: fn}, child, 'text', [more])
 * Strings become text nodes; null/false children and attributes are skipped.
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag)
  let value
  for (const [key, v] of Object.entries(props ?? {})) {
    if (v == null || v === false) continue
    if (key === 'class') el.className = v
    else if (key === 'testid') el.dataset.testid = v
    else if (key === 'dataset') Object.assign(el.dataset, v)
    else if (key === 'text') el.textContent = v
    else if (key === 'value') value = v
    else if (key.startsWith('on') && typeof v === 'function') el.addEventListener(key.slice(2), v)
    else if (PROPERTIES.has(key)) el[key] = v
    else el.setAttribute(key, v === true ? '' : String(v))
  }
  append(el, children)
  // After the children: a <select> takes a value only once it has its options.
  if (value !== undefined) el.value = value
  return el
}

export function append(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child == null || child === false) continue
    el.append(child instanceof Node ? child : String(child))
  }
  return el
}

/** Replaces the element's children. */
export function replace(el, ...children) {
  el.replaceChildren()
  return append(el, children)
}

/** A <pre> with JSON pretty-printed (or the text as it is when it is not JSON). */
export function jsonBlock(value, testid) {
  return h('pre', { class: 'code', testid }, prettyJson(value))
}

export function prettyJson(value) {
  if (typeof value === 'string') {
    try {
      return JSON.stringify(JSON.parse(value), null, 2)
    } catch {
      return value
    }
  }
  return JSON.stringify(value, null, 2)
}

const IMAGE_SIGNATURES = [
  ['iVBORw0KGgo', 'image/png'],
  ['/9j/', 'image/jpeg'],
  ['R0lGOD', 'image/gif'],
  ['UklGR', 'image/webp'],
  ['Qk', 'image/bmp'],
]

/** A data: URL for a base64 image as Ollama clients send it, or null when it is not one. */
export function imageUrl(base64) {
  if (typeof base64 !== 'string') return null
  let data = base64.trim()
  const prefixed = /^data:(image\/[a-z0-9.+-]+);base64,/i.exec(data)
  let type = prefixed?.[1]
  if (prefixed) data = data.slice(prefixed[0].length)
  data = data.replace(/\s+/g, '')
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(data)) return null
  type ??= IMAGE_SIGNATURES.find(([sig]) => data.startsWith(sig))?.[1] ?? 'image/png'
  return `data:${type};base64,${data}`
}

export function thumbnails(images, testid = 'image') {
  if (!Array.isArray(images) || images.length === 0) return null
  return h(
    'div',
    { class: 'thumbs' },
    images.map((img, i) => {
      const src = imageUrl(img)
      if (!src) return h('span', { class: 'muted' }, `[image ${i + 1}: not base64]`)
      return h('img', { src, alt: `attached image ${i + 1}`, title: `Image ${i + 1}`, testid, loading: 'lazy' })
    }),
  )
}

export function debounce(fn, ms) {
  let timer
  return (...args) => {
    clearTimeout(timer)
    timer = setTimeout(() => fn(...args), ms)
  }
}

/** Runs fn at most once per `ms`, trailing call included. */
export function throttle(fn, ms) {
  let last = 0
  let timer = null
  return () => {
    const wait = last + ms - Date.now()
    if (wait <= 0 && !timer) {
      last = Date.now()
      fn()
    } else if (!timer) {
      timer = setTimeout(() => {
        timer = null
        last = Date.now()
        fn()
      }, Math.max(wait, 0))
    }
  }
}

export const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
