// A real Yjs client driven over stdin/stdout (one JSON object per line), so
// the Rust acceptance test can relay its updates to drafting.collab.update.
//   {"op":"apply","update":"<base64 v1>"}        -> {"ok":true}
//   {"op":"insert","index":N,"text":"..."}        -> {"update":"<base64 v1>"}
//   {"op":"delete","index":N,"length":M}          -> {"update":"<base64 v1>"}
//   {"op":"state"}                                -> {"text":"...","state_vector":"<base64>"}
import * as Y from 'yjs';
import readline from 'node:readline';

const doc = new Y.Doc();
const text = doc.getText('content');
let pending = [];
doc.on('update', (update, origin) => {
  if (origin !== 'remote') pending.push(update);
});
const b64 = (u8) => Buffer.from(u8).toString('base64');
const unb64 = (s) => new Uint8Array(Buffer.from(s, 'base64'));
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  let msg;
  try { msg = JSON.parse(line); } catch (e) { out({ error: String(e) }); return; }
  try {
    switch (msg.op) {
      case 'apply':
        Y.applyUpdate(doc, unb64(msg.update), 'remote');
        out({ ok: true });
        break;
      case 'insert':
      case 'delete': {
        pending = [];
        if (msg.op === 'insert') text.insert(msg.index, msg.text);
        else text.delete(msg.index, msg.length);
        out({ update: b64(Y.mergeUpdates(pending)) });
        pending = [];
        break;
      }
      case 'state':
        out({ text: text.toString(), state_vector: b64(Y.encodeStateVector(doc)) });
        break;
      default:
        out({ error: `unknown op ${msg.op}` });
    }
  } catch (e) {
    out({ error: String(e) });
  }
});
