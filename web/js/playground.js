// Playground (#/playground): chat with a model through the same Ollama API clients
// use (/ollama/api/chat on the admin listener, logged with client_key "dashboard"),
// streamed (NDJSON) and rendered as tokens arrive. Thinking toggle, tools as JSON,
// image attachments; the conversation (tool calls included) is kept for follow-ups,
// also across views until the page is reloaded.

import { api, modelNames, readNdjson } from './api.js'
import { h, replace, thumbnails } from './dom.js'
import { formatMs, formatRate } from './format.js'

// Kept while the page lives, so switching views does not lose the conversation.
const state = {
  model: '',
  think: false,
  tools: '',
  role: 'user',
  messages: [],
  /** Per assistant message index: {chunks, stats}. */
  meta: new Map(),
  images: [],
}

const EXAMPLE_TOOLS = JSON.stringify([
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'Get the current weather for a city',
      parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    },
  },
], null, 2)

function parseTools(text) {
  if (!text.trim()) return null
  let tools
  try {
    tools = JSON.parse(text)
  } catch (e) {
    throw new Error(`Tools: not valid JSON (${e.message})`)
  }
  if (!Array.isArray(tools)) tools = [tools]
  for (const tool of tools) {
    if (!tool || typeof tool !== 'object' || !(tool.function?.name || tool.name)) {
      throw new Error('Tools: each tool needs {"type": "function", "function": {"name": …}}')
    }
  }
  return tools.map((t) => (t.function ? { type: 'function', ...t } : { type: 'function', function: t }))
}

function readImage(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader()
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ''))
    reader.onerror = () => reject(reader.error)
    reader.readAsDataURL(file)
  })
}

let running = null

export function mount(main) {
  document.title = 'Playground · ollabridge'
  let alive = true

  const modelSelect = h('select', { id: 'pg-model', testid: 'pg-model' }, h('option', { value: '' }, 'loading models…'))
  const think = h('input', { id: 'pg-think', testid: 'pg-think', type: 'checkbox', checked: state.think })
  const tools = h('textarea', { id: 'pg-tools', testid: 'pg-tools', rows: 8, spellcheck: 'false', placeholder: '[{"type": "function", "function": {"name": …, "parameters": {…}}}]', value: state.tools })
  const exampleTools = h('button', { type: 'button', class: 'link-button', testid: 'pg-tools-example' }, 'Insert an example tool')
  const imageInput = h('input', { id: 'pg-image', testid: 'pg-image', type: 'file', accept: 'image/*', multiple: true })
  const attached = h('div', { class: 'attached', testid: 'pg-attached' })
  const roleSelect = h('select', { id: 'pg-role', testid: 'pg-role', 'aria-label': 'Send as' },
    h('option', { value: 'user' }, 'user'), h('option', { value: 'system' }, 'system'), h('option', { value: 'tool' }, 'tool result'))
  roleSelect.value = state.role
  const input = h('textarea', { id: 'pg-input', testid: 'pg-input', rows: 3, placeholder: 'Message (Enter sends, Shift+Enter for a new line)' })
  const send = h('button', { type: 'submit', class: 'primary', testid: 'pg-send' }, 'Send')
  const stop = h('button', { type: 'button', class: 'secondary', testid: 'pg-stop', hidden: true }, 'Stop')
  const clear = h('button', { type: 'button', class: 'secondary', testid: 'pg-clear' }, 'New chat')
  const error = h('p', { class: 'error', role: 'alert', testid: 'pg-error', hidden: true })
  const log = h('div', { class: 'chat', testid: 'pg-messages', 'aria-live': 'polite' })

  function showError(text) {
    error.textContent = text ?? ''
    error.hidden = !text
  }

  function lastToolCall() {
    for (let i = state.messages.length - 1; i >= 0; i--) {
      const calls = state.messages[i].tool_calls
      if (calls?.length) return calls.at(-1)
    }
    return null
  }

  function messageElement(message, index) {
    const meta = state.meta.get(index)
    const el = h('article', {
      class: `message role-${message.role}`,
      testid: 'pg-message',
      dataset: { role: message.role, index: String(index), chunks: String(meta?.chunks ?? 0), done: String(!meta?.streaming) },
    })
    fill(el, message, meta)
    return el
  }

  function fill(el, message, meta) {
    replace(
      el,
      h('header', null, h('span', { class: 'role' }, message.role === 'tool' ? 'tool result' : message.role),
        message.tool_name ? h('code', { class: 'muted' }, message.tool_name) : null,
        meta?.streaming ? h('span', { class: 'spinner', 'aria-label': 'answering' }) : null),
      message.thinking
        ? h('details', { class: 'thinking', testid: 'pg-thinking', open: meta?.streaming && !message.content },
          h('summary', null, 'Thinking'), h('div', { class: 'text' }, message.thinking))
        : null,
      message.content ? h('div', { class: 'text', testid: 'pg-content' }, message.content) : null,
      thumbnails(message.images, 'pg-message-image'),
      (message.tool_calls ?? []).map((call) => h('div', { class: 'tool-call', testid: 'pg-tool-call' },
        h('div', { class: 'tool-call-head' }, h('span', { class: 'tag' }, 'tool call'), h('code', { testid: 'pg-tool-call-name' }, call.function?.name ?? '?')),
        h('pre', { class: 'code', testid: 'pg-tool-call-args' }, JSON.stringify(call.function?.arguments ?? {}, null, 2)))),
      meta?.error ? h('p', { class: 'error', testid: 'pg-message-error' }, meta.error) : null,
      meta?.stats ? h('p', { class: 'muted small', testid: 'pg-stats' }, meta.stats) : null,
    )
    el.dataset.chunks = String(meta?.chunks ?? 0)
    el.dataset.done = String(!meta?.streaming)
  }

  function renderLog() {
    if (state.messages.length === 0) {
      replace(log, h('p', { class: 'muted empty' }, 'Pick a model and say something. Requests go through the Ollama API like any client\'s and show up in the live table.'))
      return
    }
    replace(log, state.messages.map(messageElement))
    log.scrollTop = log.scrollHeight
  }

  function renderAttached() {
    replace(attached, state.images.length
      ? [thumbnails(state.images, 'pg-attached-image'),
          h('button', { type: 'button', class: 'link-button', onclick: () => { state.images = []; renderAttached() } }, 'Remove images')]
      : null)
  }

  async function sendMessage() {
    if (running) return
    showError(null)
    const model = modelSelect.value
    if (!model) return showError('Pick a model first.')
    let toolList
    try {
      toolList = parseTools(tools.value)
    } catch (e) {
      return showError(e.message)
    }
    const text = input.value
    const role = roleSelect.value
    if (!text.trim() && state.images.length === 0 && role !== 'tool') {
      if (state.messages.length === 0 || state.messages.at(-1).role === 'assistant') return showError('Type a message first.')
    }
    if (text.trim() || state.images.length || role === 'tool') {
      const message = { role, content: text }
      if (state.images.length && role === 'user') message.images = state.images
      if (role === 'tool') {
        const call = lastToolCall()
        if (call?.function?.name) message.tool_name = call.function.name
      }
      state.messages.push(message)
      state.images = []
      input.value = ''
      renderAttached()
    }
    // A system message alone is a setting, not a question.
    if (role === 'system') {
      renderLog()
      return
    }

    const assistant = { role: 'assistant', content: '' }
    const index = state.messages.length
    // A failed turn that said nothing is shown, not sent back.
    const history = state.messages.filter((m, i) => !(state.meta.get(i)?.error && !m.content && !m.tool_calls))
    state.messages.push(assistant)
    const meta = { chunks: 0, streaming: true }
    state.meta.set(index, meta)
    renderLog()
    const element = log.querySelector(`[data-index="${index}"]`)

    const body = { model, messages: history, stream: true }
    if (think.checked) body.think = true
    if (toolList) body.tools = toolList
    const controller = new AbortController()
    running = controller
    send.disabled = true
    stop.hidden = false
    const startedAt = performance.now()
    let firstAt = null
    try {
      const response = await api('/ollama/api/chat', { method: 'POST', body, signal: controller.signal, raw: true })
      await readNdjson(response.body, (chunk) => {
        if (chunk.error) throw new Error(chunk.error)
        const m = chunk.message ?? {}
        if (m.content || m.thinking) firstAt ??= performance.now()
        if (m.content) assistant.content += m.content
        if (m.thinking) assistant.thinking = (assistant.thinking ?? '') + m.thinking
        if (m.tool_calls?.length) assistant.tool_calls = [...(assistant.tool_calls ?? []), ...m.tool_calls]
        meta.chunks++
        if (chunk.done) {
          const seconds = (chunk.eval_duration ?? 0) / 1e9
          meta.stats = [
            chunk.done_reason ? `done: ${chunk.done_reason}` : null,
            chunk.eval_count != null ? `${chunk.eval_count} tokens` : null,
            firstAt != null ? `first token ${formatMs(firstAt - startedAt)}` : null,
            `total ${formatMs(performance.now() - startedAt)}`,
            seconds > 0 && chunk.eval_count ? `${formatRate(chunk.eval_count / seconds)} tok/s` : null,
          ].filter(Boolean).join(' · ')
        }
        if (alive && element?.isConnected) fill(element, assistant, meta)
        if (alive) log.scrollTop = log.scrollHeight
      })
    } catch (e) {
      meta.error = e.name === 'AbortError' ? 'Stopped.' : `Failed: ${e.message}`
    } finally {
      meta.streaming = false
      running = null
      if (alive) {
        send.disabled = false
        stop.hidden = true
        if (element?.isConnected) fill(element, assistant, meta)
        if (assistant.tool_calls?.length) roleSelect.value = 'tool'
        else if (roleSelect.value === 'tool') roleSelect.value = 'user'
        state.role = roleSelect.value
      }
    }
  }

  const form = h('form', { class: 'composer', onsubmit: (e) => { e.preventDefault(); sendMessage() } },
    h('div', { class: 'composer-row' }, roleSelect, input),
    h('div', { class: 'composer-row end' }, attached,
      h('label', { class: 'secondary file-button' }, 'Attach image', imageInput), clear, stop, send),
  )

  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault()
      sendMessage()
    }
  })
  stop.addEventListener('click', () => running?.abort())
  clear.addEventListener('click', () => {
    running?.abort()
    state.messages = []
    state.meta = new Map()
    roleSelect.value = 'user'
    state.role = 'user'
    showError(null)
    renderLog()
    input.focus()
  })
  exampleTools.addEventListener('click', () => {
    tools.value = EXAMPLE_TOOLS
    state.tools = tools.value
  })
  imageInput.addEventListener('change', async () => {
    try {
      for (const file of imageInput.files) state.images.push(await readImage(file))
    } catch (e) {
      showError(`Cannot read the image: ${e.message}`)
    }
    imageInput.value = ''
    renderAttached()
  })
  modelSelect.addEventListener('change', () => { state.model = modelSelect.value })
  think.addEventListener('change', () => { state.think = think.checked })
  tools.addEventListener('input', () => { state.tools = tools.value })
  roleSelect.addEventListener('change', () => { state.role = roleSelect.value })

  replace(
    main,
    h('section', { class: 'view', testid: 'playground' },
      h('div', { class: 'view-head' }, h('h1', null, 'Playground')),
      h('div', { class: 'playground' },
        h('div', { class: 'panel chat-panel' }, log, error, form),
        h('aside', { class: 'panel settings', 'aria-label': 'Chat settings' },
          h('label', { class: 'field' }, h('span', null, 'Model'), modelSelect),
          h('label', { class: 'check' }, think, h('span', null, 'Thinking (think: true)')),
          h('label', { class: 'field' }, h('span', null, 'Tools (JSON array)'), tools),
          exampleTools,
        ),
      ),
    ),
  )
  renderLog()
  renderAttached()

  modelNames()
    .then((names) => {
      if (!alive) return
      replace(modelSelect, names.length ? names.map((n) => h('option', { value: n }, n)) : h('option', { value: '' }, 'no models'))
      modelSelect.value = names.includes(state.model) ? state.model : (names[0] ?? '')
      state.model = modelSelect.value
    })
    .catch((e) => showError(`Cannot list the models: ${e.message}`))

  input.focus()
  return () => {
    alive = false
  }
}
