"""Live check: a real Alertmanager (deploy/alertmanager/alertmanager.yml, its
webhook URLs pointed at a listener on loopback) receives a firing critical
alert through its API and delivers it to the webhook listener.

usage: alertmanager_live.py ALERTMANAGER_BINARY CONFIG
"""
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    binary, config = sys.argv[1], sys.argv[2]
    received = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append((self.path, json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    hook = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    tmp = tempfile.mkdtemp(prefix="ymera-am-")
    text = open(config).read()
    text = re.sub(r"http://alert-webhook:9095", f"http://127.0.0.1:{hook.server_port}", text)
    # Deliver at once rather than after the production group_wait.
    text = re.sub(r"group_wait: \S+", "group_wait: 0s", text)
    conf = os.path.join(tmp, "alertmanager.yml")
    open(conf, "w").write(text)
    port = free_port()
    log = open(os.path.join(tmp, "am.log"), "wb")
    proc = subprocess.Popen([binary, f"--config.file={conf}", f"--storage.path={tmp}/data",
                             f"--web.listen-address=127.0.0.1:{port}",
                             "--cluster.listen-address="],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(base + "/-/ready", timeout=1)
                break
            except Exception:  # noqa: BLE001 - not listening yet
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("alertmanager did not become ready:\n" + open(log.name).read()[-2000:])
                time.sleep(0.2)
        alert = [{"labels": {"alertname": "YmeraServiceDown", "severity": "critical",
                             "service": "communication", "team": "ymera"},
                  "annotations": {"summary": "check-deploy live alert",
                                  "runbook_url": "https://example.invalid/ymera/blob/main/deploy/RUNBOOK.md#ymeraservicedown"}}]
        req = urllib.request.Request(base + "/api/v2/alerts", data=json.dumps(alert).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(req, timeout=5)
        deadline = time.monotonic() + 20
        while not received and time.monotonic() < deadline:
            time.sleep(0.1)
        if not received:
            raise SystemExit("no webhook delivery within 20 s:\n" + open(log.name).read()[-2000:])
        path, body = received[0]
        names = [a["labels"]["alertname"] for a in body.get("alerts", [])]
        if path != "/alerts/critical" or body.get("status") != "firing" or names != ["YmeraServiceDown"]:
            raise SystemExit(f"unexpected delivery to {path}: {json.dumps(body)[:500]}")
        print(f"delivered to {path} (receiver {body.get('receiver')}): {names}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        hook.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
