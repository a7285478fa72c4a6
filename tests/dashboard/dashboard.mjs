// The web dashboard in Debian's chromium, driven with playwright-core, against a real
// ollabridge over the llama-server bench (tests/dashboard.rs starts both).
//
// Environment:
//   OLLABRIDGE_URL               the Ollama port, e.g. http://127.0.0.1:11434
//   OLLABRIDGE_ADMIN_URL         the admin listener (serves the dashboard)
//   OLLABRIDGE_ADMIN_TOKEN       its admin.token
//   OLLABRIDGE_CHROMIUM          the chromium binary
//   OLLABRIDGE_MODEL             the tiny-chat model's client name
//   OLLABRIDGE_SCRIPT_JSON       what the scripted models say (script.json)
//   OLLABRIDGE_SLOW_MARKER       text that makes the bench answer slowly (one SSE event per 300 ms)
//   OLLABRIDGE_SCREENSHOTS       where to save screenshots
//   OLLABRIDGE_DOCS_SCREENSHOTS  optional: also copy the main ones there (docs/screenshots)
//
// Prints `ok <check>` per check and `all checks passed` at the end; on the first
// failure prints `FAIL <check>: ...`, saves a screenshot `failure-<check>.png` and exits 1.

import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { Ollama } from 'ollama'
import { chromium } from 'playwright-core'

const here = dirname(fileURLToPath(import.meta.url))
const repo = join(here, '..', '..')

function env(name) {
  const value = process.env[name]
  if (!value) {
    console.log(`FAIL setup: ${name} is not set`)
    process.exit(2)
  }
  return value
}

const ollamaUrl = env('OLLABRIDGE_URL')
const adminUrl = env('OLLABRIDGE_ADMIN_URL')
const token = env('OLLABRIDGE_ADMIN_TOKEN')
const chromiumPath = env('OLLABRIDGE_CHROMIUM')
const model = env('OLLABRIDGE_MODEL')
const said = JSON.parse(readFileSync(env('OLLABRIDGE_SCRIPT_JSON'), 'utf8'))['tiny-chat']
const slowMarker = env('OLLABRIDGE_SLOW_MARKER')
const shots = env('OLLABRIDGE_SCREENSHOTS')
const docsShots = process.env.OLLABRIDGE_DOCS_SCREENSHOTS
mkdirSync(shots, { recursive: true })
for (const old of readdirSync(shots)) if (old.endsWith('.png')) rmSync(join(shots, old))

const weatherTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Get the current weather for a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
}
const expectedArguments = said.tool_call.arguments
// A 16×16 red PNG.
const RED_PNG =
  'iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAAFklEQVR4nGM4YWNDEmIY1TCqYfhqAACrxkAQIqaBzAAAAABJRU5ErkJggg=='

let page = null
let current = 'setup'

async function screenshot(name) {
  if (!page) return
  await page.screenshot({ path: join(shots, `${name}.png`), animations: 'disabled' })
  if (docsShots && !name.startsWith('failure-') && !name.endsWith('-extra')) {
    mkdirSync(docsShots, { recursive: true })
    copyFileSync(join(shots, `${name}.png`), join(docsShots, `${name}.png`))
  }
}

async function check(name, fn) {
  current = name
  try {
    await fn()
  } catch (error) {
    console.log(`FAIL ${name}: ${error?.stack ?? error}`)
    await screenshot(`failure-${name.replace(/[^a-z0-9]+/gi, '-')}`).catch(() => {})
    process.exit(1)
  }
  console.log(`ok ${name}`)
}

/** Waits until `locator` (the first match) has exactly `text` (whitespace-trimmed). */
async function expectText(locator, text, timeout = 15_000) {
  const deadline = Date.now() + timeout
  let got
  for (;;) {
    got = await locator
      .first()
      .textContent({ timeout: Math.max(deadline - Date.now(), 1) })
      .catch(() => undefined)
    if (got?.trim() === text) return
    if (Date.now() > deadline) {
      throw new Error(`expected text ${JSON.stringify(text)}, got ${got === undefined ? '(no element)' : JSON.stringify(got)}`)
    }
    // Polled: the page updates as events and answers arrive.
    await page.waitForTimeout(50)
  }
}

async function expectAttribute(locator, name, value, timeout = 15_000) {
  const handle = await locator.elementHandle({ timeout })
  try {
    await page.waitForFunction(([el, n, v]) => el.getAttribute(n) === v, [handle, name, value], { timeout })
  } catch (error) {
    throw new Error(`expected ${name}=${JSON.stringify(value)}, got ${JSON.stringify(await handle.getAttribute(name))}`)
  }
}

async function admin(path, init = {}) {
  const response = await fetch(`${adminUrl}${path}`, {
    ...init,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', ...(init.headers ?? {}) },
  })
  const text = await response.text()
  assert.ok(response.ok, `${path}: ${response.status} ${text}`)
  return JSON.parse(text)
}

/** Polls the log API until `predicate(rows)` holds (rows are written a moment after the answer). */
async function waitForRows(predicate, what, timeout = 15_000) {
  const deadline = Date.now() + timeout
  for (;;) {
    const { logs } = await admin('/api/logs?limit=100')
    const found = predicate(logs)
    if (found) return found
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(logs.slice(0, 5))}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

const errors = []

// 1. The vendored uPlot is the npm package's, byte for byte.
await check('web/vendor matches the uplot npm package', () => {
  const pkg = JSON.parse(readFileSync(join(here, 'node_modules/uplot/package.json'), 'utf8'))
  const pinned = JSON.parse(readFileSync(join(here, 'package.json'), 'utf8')).dependencies.uplot
  assert.equal(pkg.version, pinned, 'installed uplot is the pinned one (npm ci)')
  for (const [vendored, original] of [
    ['uPlot.esm.js', 'dist/uPlot.esm.js'],
    ['uPlot.min.css', 'dist/uPlot.min.css'],
    ['LICENSE', 'LICENSE'],
  ]) {
    const a = readFileSync(join(repo, 'web/vendor', vendored))
    const b = readFileSync(join(here, 'node_modules/uplot', original))
    assert.ok(a.equals(b), `web/vendor/${vendored} differs from uplot ${pkg.version} ${original}: copy it again`)
  }
})

const browser = await chromium.launch({
  executablePath: chromiumPath,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
})
const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: 'light', deviceScaleFactor: 1 })
page = await context.newPage()
page.setDefaultTimeout(15_000)
page.on('pageerror', (error) => errors.push(`pageerror: ${error.message}`))
page.on('console', (message) => {
  // The browser reports each 401 of the token check itself as a failed resource load.
  if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
    errors.push(`console: ${message.text()}`)
  }
})
const testid = (id) => page.getByTestId(id)

try {
  // 2. Without a token the page asks for one; a wrong one is refused; the right one is kept.
  await check('token prompt without a token', async () => {
    await page.goto(`${adminUrl}/#/live`)
    await testid('token-dialog').waitFor({ state: 'visible' })
    assert.equal(await testid('token-error').isHidden(), true, 'no error shown before a token was tried')
    assert.equal(await page.evaluate(() => document.activeElement?.dataset.testid), 'token-input')
    await screenshot('token-prompt-extra')
  })
  await check('a wrong token is refused', async () => {
    await testid('token-input').fill('not-the-token')
    await testid('token-submit').click()
    await page.locator('[data-testid="token-error"]', { hasText: 'invalid admin token' }).waitFor()
    await testid('token-dialog').waitFor({ state: 'visible' })
  })
  await check('the right token opens the dashboard', async () => {
    await testid('token-input').fill(token)
    await testid('token-input').press('Enter')
    await testid('token-dialog').waitFor({ state: 'hidden' })
    await expectAttribute(testid('live-status'), 'data-state', 'live')
    assert.equal(await page.evaluate(() => localStorage.getItem('ollabridge.adminToken')), token)
  })

  // 3. Traffic from the ollama npm client while the live table watches.
  await page.evaluate(() => {
    window.__seen = { inflight: 0, maxTokens: 0 }
    const list = document.querySelector('[data-testid="inflight"]')
    new MutationObserver(() => {
      for (const row of list.querySelectorAll('[data-testid="inflight-row"]')) {
        window.__seen.inflight++
        const tokens = Number(row.querySelector('[data-testid="inflight-tokens"]')?.textContent ?? 0)
        window.__seen.maxTokens = Math.max(window.__seen.maxTokens, tokens)
      }
    }).observe(list, { childList: true, subtree: true, characterData: true })
  })
  const ollama = new Ollama({ host: ollamaUrl })
  await check('ollama client: plain chat', async () => {
    const answer = await ollama.chat({ model, messages: [{ role: 'user', content: 'Hi there' }] })
    assert.equal(answer.message.content, said.text)
  })
  await check('ollama client: chat with tools', async () => {
    const answer = await ollama.chat({ model, messages: [{ role: 'user', content: 'What is the weather in Paris?' }], tools: [weatherTool] })
    assert.deepEqual(answer.message.tool_calls.map((c) => [c.function.name, c.function.arguments]), [[said.tool_call.name, expectedArguments]])
  })
  await check('a slow streamed chat shows in flight with a growing token count', async () => {
    const watching = Promise.all([
      page.waitForFunction(() => window.__seen.maxTokens >= 2, null, { timeout: 20_000 }),
      page.locator('[data-testid="log-row"].running').first().waitFor({ timeout: 20_000 }),
    ])
    let text = ''
    const stream = await ollama.chat({ model, messages: [{ role: 'user', content: `Hi there, ${slowMarker}` }], stream: true })
    for await (const part of stream) text += part.message.content
    assert.equal(text, said.text)
    await watching
    await testid('inflight').getByText('Nothing running.').waitFor()
  })

  let plainId
  let toolId
  await check('live table shows the rows', async () => {
    const rows = testid('log-row')
    const plain = rows.filter({ has: page.locator('[data-testid="row-prompt"]', { hasText: /^Hi there$/ }) })
    const tool = rows.filter({ has: page.locator('[data-testid="row-prompt"]', { hasText: /^What is the weather in Paris\?$/ }) })
    const slow = rows.filter({ has: page.locator('[data-testid="row-prompt"]', { hasText: new RegExp(`^Hi there, ${slowMarker}$`) }) })
    for (const row of [plain, tool, slow]) {
      await expectText(row.getByTestId('row-model'), model)
      await expectText(row.getByTestId('row-endpoint'), '/api/chat')
      await expectText(row.getByTestId('row-status'), '200')
    }
    await expectText(plain.getByTestId('row-answer'), said.text)
    await expectText(slow.getByTestId('row-answer'), said.text)
    await expectText(tool.getByTestId('row-answer'), '')
    plainId = Number(await plain.getAttribute('data-id'))
    toolId = Number(await tool.getAttribute('data-id'))
    const api = await admin('/api/logs?limit=3')
    assert.deepEqual(api.logs.map((r) => r.id).sort(), [plainId, toolId, Number(await slow.getAttribute('data-id'))].sort())
  })

  // 4. The inspector: conversation, answer, tool call, timings, raw bodies, curl.
  await check('inspector shows the scripted answer', async () => {
    await testid('log-row').and(page.locator(`[data-id="${plainId}"]`)).click()
    await page.waitForURL(`**/#/logs/${plainId}`)
    await expectText(testid('answer-text'), said.text)
    await expectText(testid('conversation').locator('[data-role="user"] [data-testid="message-content"]'), 'Hi there')
    await expectText(testid('insp-model'), model)
    await expectText(testid('insp-backend'), 'openai')
    await expectText(testid('insp-backend-model'), 'tiny-chat')
    await expectText(testid('insp-status'), '200')
    await testid('timing-bar').waitFor()
    const detail = await admin(`/api/logs/${plainId}`)
    await expectText(testid('insp-prompt-tokens'), String(detail.prompt_tokens))
    await expectText(testid('insp-completion-tokens'), String(detail.completion_tokens))
    assert.equal(typeof detail.request_body, 'object', 'store_bodies keeps the request body')
    await testid('raw-request').locator('summary').click()
    assert.deepEqual(JSON.parse(await testid('raw-request').locator('pre').textContent()), detail.request_body)
    await testid('raw-backend-request').waitFor()
    await testid('raw-backend-response').waitFor()
  })
  await check('copy as curl repeats the request', async () => {
    await page.evaluate((url) => localStorage.setItem('ollabridge.ollamaUrl', url), ollamaUrl)
    await testid('copy-curl').click()
    const command = await testid('curl-command').textContent()
    const detail = await admin(`/api/logs/${plainId}`)
    const body = JSON.stringify(detail.request_body)
    assert.equal(command, `curl '${ollamaUrl}/api/chat' \\\n  -H 'Content-Type: application/json' \\\n  -d '${body.replaceAll("'", `'\\''`)}'`)
    const { stdout } = await promisify(execFile)('sh', ['-c', command.replace('curl ', 'curl -sS ')])
    assert.equal(JSON.parse(stdout).message.content, said.text)
  })
  await check('inspector shows the tool call (opened with the keyboard)', async () => {
    await testid('back-to-live').click()
    const row = page.locator(`[data-testid="log-row"][data-id="${toolId}"]`)
    await row.focus()
    await page.keyboard.press('Enter')
    await page.waitForURL(`**/#/logs/${toolId}`)
    await expectText(testid('answer').getByTestId('tool-call-name'), said.tool_call.name)
    assert.deepEqual(JSON.parse(await testid('answer').getByTestId('tool-call-args').textContent()), expectedArguments)
    await expectText(testid('tool-offered-name'), 'get_weather')
    await expectText(testid('conversation').locator('[data-role="user"] [data-testid="message-content"]'), 'What is the weather in Paris?')
    await screenshot('inspector')
  })

  // 5. Replay: side by side, and a second row linked to the original.
  let replayId
  await check('replay shows both answers and links a new row', async () => {
    await page.goto(`${adminUrl}/#/logs/${plainId}`)
    await testid('replay-button').click()
    await expectText(testid('replay-original-text'), said.text)
    await expectText(testid('replay-answer-text'), said.text)
    await expectText(testid('replay-status'), '200')
    await testid('replay-row-link').waitFor()
    replayId = Number((await testid('replay-row-link').textContent()).replace('#', ''))
    assert.ok(replayId > plainId, `replay row ${replayId}`)
    await expectText(testid('replays').getByTestId('replay-link'), `#${replayId}`)
    await screenshot('replay')
    await testid('replay-row-link').click()
    await page.waitForURL(`**/#/logs/${replayId}`)
    await expectText(testid('replay-of-link'), `#${plainId}`)
    await expectText(testid('answer-text'), said.text)
    const detail = await admin(`/api/logs/${replayId}`)
    assert.equal(detail.replay_of, plainId)
    assert.deepEqual((await admin(`/api/logs/${plainId}`)).replays, [replayId])
  })
  await check('the replay row is in the live table, marked', async () => {
    await testid('back-to-live').click()
    const row = page.locator(`[data-testid="log-row"][data-id="${replayId}"]`)
    await expectText(row.getByTestId('row-replay-of'), `↻ #${plainId}`)
    await expectText(row.getByTestId('row-answer'), said.text)
  })

  // 6. Star: survives a reload, and the starred filter shows it.
  await check('a star survives a reload', async () => {
    await page.goto(`${adminUrl}/#/logs/${toolId}`)
    const star = testid('inspector').getByTestId('star-toggle').first()
    await expectAttribute(star, 'aria-pressed', 'false')
    await star.click()
    await expectAttribute(star, 'aria-pressed', 'true')
    await page.reload()
    await expectAttribute(testid('inspector').getByTestId('star-toggle').first(), 'aria-pressed', 'true')
    assert.deepEqual((await admin('/api/logs?starred=true')).logs.map((r) => r.id), [toolId])
  })
  await check('the starred filter shows only the starred row', async () => {
    await testid('back-to-live').click()
    await testid('filter-starred').check()
    await page.waitForURL('**/#/live?starred=true')
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="log-row"]').length === 1)
    const row = testid('log-row')
    assert.equal(Number(await row.getAttribute('data-id')), toolId)
    await expectAttribute(row.getByTestId('star-toggle'), 'aria-pressed', 'true')
    await page.reload()
    await expect1Row(toolId)
    assert.equal(await testid('filter-starred').isChecked(), true)
    await testid('filter-starred').uncheck()
    await page.waitForURL('**/#/live')
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="log-row"]').length > 1)
    await screenshot('live')
  })

  // 7. Playground: streamed answer, then a tool call and its result in the same conversation.
  await check('playground streams the scripted answer', async () => {
    await testid('nav-playground').click()
    await testid('pg-model').selectOption(model)
    await testid('pg-think').check()
    await testid('pg-input').fill('Hi')
    await testid('pg-send').click()
    const answer = page.locator('[data-testid="pg-message"][data-role="assistant"][data-index="1"]')
    await answer.and(page.locator('[data-done="true"]')).waitFor()
    await expectText(answer.getByTestId('pg-content'), said.text)
    const chunks = Number(await answer.getAttribute('data-chunks'))
    assert.ok(chunks > 2, `rendered as it streamed (${chunks} chunks)`)
  })
  await check('playground keeps tool calls in the conversation', async () => {
    await testid('pg-tools').fill(JSON.stringify([weatherTool], null, 2))
    await testid('pg-input').fill('What is the weather in Paris?')
    await testid('pg-input').press('Enter')
    const call = page.locator('[data-testid="pg-message"][data-role="assistant"][data-index="3"]')
    await call.and(page.locator('[data-done="true"]')).waitFor()
    await expectText(call.getByTestId('pg-tool-call-name'), said.tool_call.name)
    assert.deepEqual(JSON.parse(await call.getByTestId('pg-tool-call-args').textContent()), expectedArguments)
    assert.equal(await testid('pg-role').inputValue(), 'tool')
    await testid('pg-input').fill('{"sky": "sunny", "temperature_c": 22}')
    await testid('pg-send').click()
    const after = page.locator('[data-testid="pg-message"][data-role="assistant"][data-index="5"]')
    await after.and(page.locator('[data-done="true"]')).waitFor()
    await expectText(after.getByTestId('pg-content'), said.after_tool)
    await screenshot('playground')
  })
  await check('playground requests are logged as the dashboard', async () => {
    const row = await waitForRows((logs) => logs.find((r) => r.response_preview === said.after_tool), 'the tool-result row')
    const detail = await admin(`/api/logs/${row.id}`)
    assert.equal(detail.client_key, 'dashboard')
    assert.deepEqual(detail.prompt.map((m) => m.role), ['user', 'assistant', 'user', 'assistant', 'tool'])
    assert.equal(detail.prompt[3].tool_calls[0].function.name, said.tool_call.name)
    assert.equal(detail.request_body.think, true)
    assert.equal(detail.request_body.stream, true)
    assert.deepEqual(detail.request_body.tools, [weatherTool])
  })
  await check('playground attaches images', async () => {
    await testid('pg-clear').click()
    await testid('pg-think').uncheck()
    await testid('pg-tools').fill('')
    await testid('pg-image').setInputFiles({ name: 'red.png', mimeType: 'image/png', buffer: Buffer.from(RED_PNG, 'base64') })
    await testid('pg-attached').getByTestId('pg-attached-image').waitFor()
    await testid('pg-input').fill('What is in this picture?')
    await testid('pg-send').click()
    const user = page.locator('[data-testid="pg-message"][data-role="user"][data-index="0"]')
    assert.equal(await user.getByTestId('pg-message-image').getAttribute('src'), `data:image/png;base64,${RED_PNG}`)
    // The tiny model has no vision projector: llama-server refuses the image, and says so.
    const answer = page.locator('[data-testid="pg-message"][data-role="assistant"][data-index="1"]')
    await answer.and(page.locator('[data-done="true"]')).waitFor()
    assert.match(await answer.getByTestId('pg-message-error').textContent(), /^Failed: .*image/)
    const row = await waitForRows((logs) => logs.find((r) => r.prompt_preview?.includes('What is in this picture?')), 'the image row')
    assert.equal(row.status_code, 400)
    await page.goto(`${adminUrl}/#/logs/${row.id}`)
    const thumb = testid('conversation').getByTestId('message-image')
    assert.equal(await thumb.getAttribute('src'), `data:image/png;base64,${RED_PNG}`)
    assert.equal(await thumb.evaluate((img) => img.complete && img.naturalWidth), 16)
  })

  // 8. Overview: the numbers are the API's, the charts are drawn; both themes.
  await check('overview shows the stats and charts', async () => {
    await testid('nav-overview').click()
    await testid('window-15m').click()
    await expectAttribute(testid('window-15m'), 'aria-pressed', 'true')
    await page.waitForURL('**/#/?window=15m')
    const stats = await admin('/api/stats?window=15m')
    await expectText(testid('stat-requests-value'), String(stats.overall.count))
    await expectText(testid('model-stats').locator(`[data-model="${model}"] th`), model)
    await page.waitForFunction(() => document.querySelectorAll('.chart .uplot canvas').length === 3)
    await screenshot('overview')
  })
  await check('dark theme, kept across a reload', async () => {
    await testid('theme-toggle').click()
    await page.waitForFunction(() => document.documentElement.dataset.theme === 'dark')
    await page.reload()
    await page.waitForFunction(() => document.documentElement.dataset.theme === 'dark')
    await page.waitForFunction(() => document.querySelectorAll('.chart .uplot canvas').length === 3)
    const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor)
    assert.equal(background, 'rgb(15, 18, 23)')
    await screenshot('overview-dark')
    await page.goto(`${adminUrl}/#/logs/${plainId}`)
    await testid('replay-button').waitFor()
    await screenshot('inspector-dark-extra')
    await testid('theme-toggle').click()
    await page.waitForFunction(() => document.documentElement.dataset.theme === 'light')
  })

  // 9. Phone width: nothing wider than the screen but the table, which scrolls in its box.
  await check('usable at phone width', async () => {
    await page.setViewportSize({ width: 390, height: 844 })
    await page.goto(`${adminUrl}/#/live`)
    await testid('log-row').first().waitFor()
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)
    assert.ok(overflow <= 0, `page is ${overflow}px wider than the screen`)
    await screenshot('live-phone-extra')
    await page.goto(`${adminUrl}/#/playground`)
    await testid('pg-input').waitFor()
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth))
    await page.setViewportSize({ width: 1280, height: 800 })
  })

  await check('no script errors in the page', () => {
    assert.deepEqual(errors, [])
  })
} finally {
  await browser.close()
}

async function expect1Row(id) {
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="log-row"]').length === 1)
  assert.equal(Number(await testid('log-row').getAttribute('data-id')), id)
}

console.log('all checks passed')
