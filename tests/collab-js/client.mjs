// Node client: one Session per process, commands as JSON lines on stdin, one reply line
// each on stdout (`{"error": ...}` on failure). Usage: node client.mjs
import readline from 'node:readline'
import WebSocket from 'ws'
import { Session } from './lib/session.js'

const session = new Session(WebSocket)
const rl = readline.createInterface({ input: process.stdin })
let chain = Promise.resolve()
rl.on('line', (line) => {
  chain = chain.then(async () => {
    let reply
    try {
      reply = await session.run(JSON.parse(line))
    } catch (e) {
      reply = { error: String(e) }
    }
    process.stdout.write(JSON.stringify(reply) + '\n')
  })
})
rl.on('close', () => chain.then(() => { session.close(); process.exit(0) }))
