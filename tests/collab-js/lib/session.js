// One collaborating client: a stock Y.Doc + y-websocket WebsocketProvider, driven by
// commands (the same in node and in the browser page). Every command returns a JSON-able
// value or throws; `run` turns that into the reply line the Rust tests read.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

const TEXT = 'content'

export class Session {
  constructor (WebSocketImpl) {
    this.WS = WebSocketImpl
    this.doc = null
    this.provider = null
    this.closes = [] // close events from the server: {code, reason}
    this.statuses = []
  }

  text () {
    return this.doc ? this.doc.getText(TEXT).toString() : null
  }

  // {url, room, params, awareness?} -> resolves once synced (or rejects with the close reason)
  // keepDoc: connect the Y.Doc of the previous connection (default: a new one).
  connect ({ url, room, params = {}, awareness = null, timeout_ms = 10000, keepDoc = false }) {
    if (this.provider) this.provider.destroy()
    if (!keepDoc || !this.doc) this.doc = new Y.Doc()
    this.closes = []
    this.statuses = []
    this.provider = new WebsocketProvider(url, room, this.doc, {
      params,
      WebSocketPolyfill: this.WS,
      disableBc: true,
      maxBackoffTime: 500
    })
    if (awareness) this.provider.awareness.setLocalState(awareness)
    this.provider.on('status', (e) => this.statuses.push(e.status))
    this.provider.on('connection-close', (e) => {
      if (e) this.closes.push({ code: e.code, reason: e.reason })
    })
    return this.waitSynced({ timeout_ms })
  }

  waitSynced ({ timeout_ms = 10000 }) {
    const p = this.provider
    return new Promise((resolve, reject) => {
      if (p.synced) return resolve({ synced: true, text: this.text() })
      const timer = setTimeout(() => {
        cleanup()
        reject(new Error(`not synced within ${timeout_ms} ms; closes: ${JSON.stringify(this.closes)}`))
      }, timeout_ms)
      const onSync = (s) => {
        if (!s) return
        cleanup()
        resolve({ synced: true, text: this.text() })
      }
      const onClosed = (e) => {
        cleanup()
        reject(new Error(`closed ${e.code}: ${e.reason}`))
      }
      const cleanup = () => {
        clearTimeout(timer)
        p.off('sync', onSync)
        p.off('closed', onClosed)
      }
      p.on('sync', onSync)
      p.on('closed', onClosed)
    })
  }

  // Resolves with the first close the server sends ({code, reason}).
  waitClosed ({ timeout_ms = 10000 }) {
    return new Promise((resolve, reject) => {
      const started = Date.now()
      const poll = () => {
        if (this.closes.length > 0) return resolve(this.closes[0])
        if (Date.now() - started > timeout_ms) return reject(new Error(`no close within ${timeout_ms} ms`))
        setTimeout(poll, 20)
      }
      poll()
    })
  }

  insert ({ index, text }) {
    const t = this.doc.getText(TEXT)
    t.insert(index === undefined ? t.length : index, text)
    return { text: this.text() }
  }

  // Waits until the text equals `text` (or contains every string of `contains`).
  waitText ({ text = null, contains = [], timeout_ms = 10000 }) {
    return new Promise((resolve, reject) => {
      const started = Date.now()
      const poll = () => {
        const now = this.text()
        const ok = text !== null ? now === text : contains.every((c) => now.includes(c))
        if (ok) return resolve({ text: now })
        if (Date.now() - started > timeout_ms) {
          return reject(new Error(`text is ${JSON.stringify(now)} after ${timeout_ms} ms`))
        }
        setTimeout(poll, 20)
      }
      poll()
    })
  }

  // `count` random edits, one every `interval_ms`: inserts of ASCII and non-ASCII characters
  // (never inside a surrogate pair) and, one time in four, a deletion of one code point.
  async burst ({ count = 50, interval_ms = 5, seed = 1 }) {
    let x = seed >>> 0 || 1
    const rand = (n) => {
      x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0
      return x % n
    }
    const alphabet = ['a', 'b', 'é', 'ü', '—', '世', '界', '🎉', '𝄞', ' ']
    const t = this.doc.getText(TEXT)
    for (let i = 0; i < count; i++) {
      const points = Array.from(t.toString())
      const at = rand(points.length + 1)
      const offset = points.slice(0, at).join('').length
      if (points.length > 0 && rand(4) === 0 && at < points.length) {
        t.delete(offset, points[at].length)
      } else {
        t.insert(offset, alphabet[rand(alphabet.length)])
      }
      await new Promise((resolve) => setTimeout(resolve, interval_ms))
    }
    return { text: this.text() }
  }

  setAwareness ({ state }) {
    this.provider.awareness.setLocalState(state)
    return { client_id: this.doc.clientID }
  }

  // The awareness states this client knows of other clients.
  peers () {
    const out = []
    this.provider.awareness.getStates().forEach((state, id) => {
      if (id !== this.doc.clientID) out.push({ client_id: id, state })
    })
    return { peers: out }
  }

  // Records the wall-clock time (µs since the epoch) of every remote update the doc applies.
  recordUpdates () {
    this.records = []
    this.doc.on('update', (_update, origin) => {
      if (origin === this.provider) this.records.push(Math.round((performance.timeOrigin + performance.now()) * 1000))
    })
    return { recording: true }
  }

  takeRecords () {
    const records = this.records || []
    this.records = []
    return { records }
  }

  status () {
    return {
      connected: this.provider.wsconnected,
      synced: this.provider.synced,
      statuses: this.statuses,
      closes: this.closes,
      client_id: this.doc.clientID
    }
  }

  close () {
    if (this.provider) this.provider.destroy()
    this.provider = null
    return { closed: true }
  }

  async run (cmd) {
    const { op, ...args } = cmd
    const fn = {
      connect: () => this.connect(args),
      waitSynced: () => this.waitSynced(args),
      waitClosed: () => this.waitClosed(args),
      insert: () => this.insert(args),
      text: () => ({ text: this.text() }),
      waitText: () => this.waitText(args),
      setAwareness: () => this.setAwareness(args),
      burst: () => this.burst(args),
      peers: () => this.peers(),
      status: () => this.status(),
      recordUpdates: () => this.recordUpdates(),
      takeRecords: () => this.takeRecords(),
      close: () => this.close()
    }[op]
    if (!fn) return { error: `unknown op ${op}` }
    try {
      return await fn()
    } catch (e) {
      return { error: String(e && e.message ? e.message : e) }
    }
  }
}
