// Browser entry point, bundled by esbuild into dist/client.js: the same Session as the
// node client, over the browser's own WebSocket, exposed as window.collab.
import { Session } from '../lib/session.js'

window.collab = new Session(WebSocket)
