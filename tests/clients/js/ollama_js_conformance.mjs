// The official `ollama` npm package against ollabridge.
//
// Usage: node ollama_js_conformance.mjs HOST MODEL LLAMA_URL SCRIPT_JSON
// HOST is a bridge over the tiny-chat llama-server at LLAMA_URL; SCRIPT_JSON says what the
// scripted model answers. Prints one line per check and exits non-zero on the first mismatch.
// Streams are read through the library's AbortableAsyncIterator, which throws when a stream
// ends without a `done: true` (or `status: "success"`) object.

import { readFileSync } from 'node:fs'
import { isDeepStrictEqual } from 'node:util'
import { Ollama } from 'ollama'

const [host, model, llamaUrl, scriptPath] = process.argv.slice(2)
const said = JSON.parse(readFileSync(scriptPath, 'utf8'))['tiny-chat']
const ollama = new Ollama({ host })
const version = JSON.parse(readFileSync(new URL('./node_modules/ollama/package.json', import.meta.url))).version
console.log(`# ollama-js ${version}`)

const weatherTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Get the current weather for a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
}
const hello = [{ role: 'user', content: 'Hi there' }]
const ask = [{ role: 'user', content: 'What is the weather in Paris?' }]
const expectedCall = [{ name: said.tool_call.name, arguments: said.tool_call.arguments }]

function fail(name, message) {
  console.log(`FAIL ${name}: ${message}`)
  process.exit(1)
}

function check(name, got, want) {
  if (!isDeepStrictEqual(got, want)) fail(name, `got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`)
  console.log(`ok ${name}`)
}

function checkThat(name, condition, detail) {
  if (!condition) fail(name, JSON.stringify(detail))
  console.log(`ok ${name}`)
}

function checkFinal(name, final) {
  check(`${name} done`, [final.done, final.done_reason], [true, 'stop'])
  const counts = [final.prompt_eval_count, final.eval_count, final.total_duration, final.eval_duration]
  checkThat(`${name} counts`, counts.every((n) => Number.isInteger(n) && n > 0), counts)
}

async function collect(iterator) {
  const parts = []
  for await (const part of iterator) parts.push(part)
  return parts
}

const calls = (parts) => parts.flatMap((p) => p.message.tool_calls ?? []).map((c) => ({ name: c.function.name, arguments: c.function.arguments }))
const sameVector = (got, want) => got.length === want.length && got.every((x, i) => Math.abs(x - want[i]) < 1e-6)

try {
  const props = await (await fetch(`${llamaUrl}/props`)).json()
  const servedCtx = props.default_generation_settings.n_ctx

  let parts = await collect(await ollama.chat({ model, messages: hello, stream: true }))
  check('chat stream text', parts.map((p) => p.message.content).join(''), said.text)
  check('chat stream one done, last', parts.map((p) => p.done), [...Array(parts.length - 1).fill(false), true])
  check('chat stream model echo', [...new Set(parts.map((p) => p.model))], [model])
  checkFinal('chat stream', parts.at(-1))

  let r = await ollama.chat({ model, messages: hello })
  check('chat text', [r.message.role, r.message.content], ['assistant', said.text])
  checkFinal('chat', r)

  parts = await collect(await ollama.chat({ model, messages: ask, tools: [weatherTool], stream: true }))
  check('tools stream calls', calls(parts), expectedCall)
  check('tools stream call before done', parts.filter((p) => p.message.tool_calls?.length).map((p) => p.done), [false])
  checkFinal('tools stream', parts.at(-1))

  r = await ollama.chat({ model, messages: ask, tools: [weatherTool] })
  check('tools calls', calls([r]), expectedCall)

  const answered = [
    ...ask,
    { role: 'assistant', content: '', tool_calls: [{ function: { name: 'get_weather', arguments: { city: 'Paris' } } }] },
    { role: 'tool', content: JSON.stringify({ weather: 'sunny' }), tool_name: 'get_weather' },
  ]
  parts = await collect(await ollama.chat({ model, messages: answered, tools: [weatherTool], stream: true }))
  check('tool result stream answer', parts.map((p) => p.message.content).join(''), said.after_tool)

  parts = await collect(await ollama.generate({ model, prompt: 'Once upon a time', stream: true }))
  check('generate stream text', parts.map((p) => p.response).join(''), said.text)
  checkFinal('generate stream', parts.at(-1))
  r = await ollama.generate({ model, prompt: 'Once upon a time' })
  check('generate text', r.response, said.text)

  const listed = (await ollama.list()).models.find((m) => m.model === `${model}:latest`)
  checkThat('list has model', listed && listed.name === listed.model, listed)

  const show = await ollama.show({ model })
  checkThat('show capabilities', ['completion', 'tools'].every((c) => show.capabilities?.includes(c)), show.capabilities)
  const arch = show.model_info['general.architecture']
  check('show context_length', show.model_info[`${arch}.context_length`], servedCtx)

  const running = (await ollama.ps()).models.find((m) => m.model === `${model}:latest`)
  checkThat('ps has model', running && !Number.isNaN(Date.parse(running.expires_at)), running)
  check('ps context_length', running.context_length, servedCtx)

  const direct = await (await fetch(`${llamaUrl}/v1/embeddings`, { method: 'POST', body: JSON.stringify({ input: ['Hi there', 'Paris'] }) })).json()
  const want = direct.data.map((d) => d.embedding)
  let e = await ollama.embed({ model, input: 'Hi there' })
  checkThat('embed string', e.embeddings.length === 1 && sameVector(e.embeddings[0], want[0]), e.embeddings.map((v) => v.length))
  e = await ollama.embed({ model, input: ['Hi there', 'Paris'] })
  checkThat('embed list', e.embeddings.length === 2 && e.embeddings.every((v, i) => v.length === 64 && sameVector(v, want[i])), e.embeddings.map((v) => v.length))

  // ollama-js sends the legacy `name` field here, and its iterator needs `status: "success"`.
  parts = await collect(await ollama.pull({ model, stream: true }))
  check('pull stream success', parts.at(-1).status, 'success')

  const v = (await ollama.version()).version
  checkThat('version', /^\d+\.\d+\.\d+$/.test(v), v)

  try {
    await ollama.chat({ model: 'no-such-model', messages: hello })
    fail('unknown model', 'no error')
  } catch (err) {
    check('unknown model error', [err.status_code, err.error], [404, "model 'no-such-model' not found"])
  }
} catch (err) {
  fail('exception', err.stack)
}
console.log('all checks passed')
