// Headless Chromium client: serves page/index.html + the esbuild bundle on 127.0.0.1,
// launches Chromium (CHROMIUM, default /usr/bin/chromium) through puppeteer-core and
// forwards the same stdin JSON-line commands as client.mjs to window.collab in the page.
import http from 'node:http'
import fs from 'node:fs'
import path from 'node:path'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'
import * as esbuild from 'esbuild'
import puppeteer from 'puppeteer-core'

const here = path.dirname(fileURLToPath(import.meta.url))
const bundle = await esbuild.build({
  entryPoints: [path.join(here, 'page/client.js')],
  bundle: true,
  format: 'esm',
  write: false,
  logLevel: 'silent'
})
const js = bundle.outputFiles[0].contents
const html = fs.readFileSync(path.join(here, 'page/index.html'))
const server = http.createServer((req, res) => {
  if (req.url === '/client.js') {
    res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' })
    res.end(js)
  } else {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
    res.end(html)
  }
})
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
const origin = `http://127.0.0.1:${server.address().port}`

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // DevTools over a pipe, not a port: Chromium exits when the pipe closes, so a
  // test that kills this process (kill_on_drop) leaves no browser behind.
  pipe: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run']
})
const page = await browser.newPage()
const logs = []
page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`))
page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`))
await page.goto(`${origin}/`)
await page.waitForFunction(() => window.collab !== undefined, { timeout: 15000 })
const ua = await page.evaluate(() => navigator.userAgent)
process.stdout.write(JSON.stringify({ ready: true, user_agent: ua }) + '\n')

const shutdown = async () => {
  await browser.close().catch(() => {})
  server.close()
  process.exit(0)
}
const rl = readline.createInterface({ input: process.stdin })
let chain = Promise.resolve()
rl.on('line', (line) => {
  chain = chain.then(async () => {
    let reply
    try {
      const cmd = JSON.parse(line)
      if (cmd.op === 'logs') {
        reply = { logs }
      } else {
        reply = await page.evaluate((c) => window.collab.run(c), cmd)
      }
    } catch (e) {
      reply = { error: String(e) }
    }
    process.stdout.write(JSON.stringify(reply) + '\n')
  })
})
rl.on('close', () => chain.then(shutdown))
process.on('SIGTERM', shutdown)
