// Node client: one Session per process, commands as JSON lines on stdin, one reply line
// each on stdout (`{"error": ...}` on failure). Usage: node client.mjs
import readline from 'node:readline'
import WebSocket from 'ws'
import { Session } from './lib/session.js'

const session = new Session(WebSocket)

// A raw WebSocket (no Yjs): connect to `url` with `headers`, send `frames` (base64, binary)
// and `texts` once open, then report how the server closed: {code, reason, received}.
function raw ({ url, headers = {}, frames = [], texts = [], timeout_ms = 10000 }) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { headers, maxPayload: 64 * 1024 * 1024 })
    let received = 0
    const timer = setTimeout(() => { ws.terminate(); resolve({ error: `no close within ${timeout_ms} ms`, received }) }, timeout_ms)
    ws.on('open', () => {
      for (const f of frames) ws.send(Buffer.from(f, 'base64'))
      for (const t of texts) ws.send(t)
    })
    ws.on('message', () => { received++ })
    ws.on('unexpected-response', (_req, res) => {
      clearTimeout(timer)
      resolve({ http_status: res.statusCode, received })
    })
    ws.on('error', () => {})
    ws.on('close', (code, reason) => {
      clearTimeout(timer)
      resolve({ code, reason: reason.toString(), received })
    })
  })
}
const rl = readline.createInterface({ input: process.stdin })
let chain = Promise.resolve()
rl.on('line', (line) => {
  chain = chain.then(async () => {
    let reply
    try {
      const cmd = JSON.parse(line)
      reply = cmd.op === 'raw' ? await raw(cmd) : await session.run(cmd)
    } catch (e) {
      reply = { error: String(e) }
    }
    process.stdout.write(JSON.stringify(reply) + '\n')
  })
})
rl.on('close', () => chain.then(() => { session.close(); process.exit(0) }))
