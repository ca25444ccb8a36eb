#!/usr/bin/env python3
"""PostgreSQL connections of the shipped deployments stay under max_connections.

Every process of a storing service opens a pool of POSTGRES_POOL_SIZE connections
(default: DEFAULT_POOL_SIZE in crates/ymera-core/src/store.rs); code-analysis stores
nothing and opens none (crates/ymera-code-analysis/src/lib.rs clears POSTGRES_URL).
For each rendering of k8s/ and for docker-compose.yml this adds up

    Σ over storing Deployments: HPA maxReplicas (else replicas) × pool size
    + 2 per migration Job (`ymera migrate`)
    + superuser_reserved_connections (3, PostgreSQL's default)

and fails unless it is below the max_connections of the PostgreSQL shipped with it
(a `-c max_connections=N` argument, else PostgreSQL's default 100). A rendering
without a PostgreSQL of its own (production: an external server) is checked against
EXTERNAL_MAX_CONNECTIONS, the minimum deploy/README.md asks of that server.

usage: pg_pool.py ROOT --k8s NAME=RENDERED.yaml ... [--compose COMPOSE.yml]
"""

import re
import sys
from pathlib import Path

import yaml

PG_DEFAULT_MAX_CONNECTIONS = 100
SUPERUSER_RESERVED = 3
MIGRATE_CONNECTIONS = 2
EXTERNAL_MAX_CONNECTIONS = 200
STATELESS = {"code-analysis"}


def default_pool_size(root: Path) -> int:
    text = (root / "crates/ymera-core/src/store.rs").read_text()
    match = re.search(r"pub const DEFAULT_POOL_SIZE: u32 = (\d+);", text)
    if not match:
        raise SystemExit("DEFAULT_POOL_SIZE not found in crates/ymera-core/src/store.rs")
    return int(match.group(1))


def check_stateless(root: Path) -> None:
    text = (root / "crates/ymera-code-analysis/src/lib.rs").read_text()
    if "config.postgres_url = None" not in text:
        raise SystemExit("code-analysis no longer clears POSTGRES_URL: it would open a pool")


def service_of(name: str) -> str:
    return name.removeprefix("ymera-")


def max_connections_of(args) -> int | None:
    words = [str(a) for a in (args or [])]
    for i, word in enumerate(words):
        text = word
        if word == "-c" and i + 1 < len(words):
            text = words[i + 1]
        match = re.fullmatch(r"(?:-c)?max_connections=(\d+)", text)
        if match:
            return int(match.group(1))
    return None


def k8s_need(docs, default_pool: int):
    configmaps = {
        d["metadata"]["name"]: d.get("data") or {}
        for d in docs
        if d.get("kind") == "ConfigMap"
    }
    hpa_max = {
        d["spec"]["scaleTargetRef"]["name"]: d["spec"]["maxReplicas"]
        for d in docs
        if d.get("kind") == "HorizontalPodAutoscaler"
    }
    lines, need, postgres_max = [], 0, None
    for d in docs:
        kind = d.get("kind")
        if kind not in ("Deployment", "StatefulSet", "Job"):
            continue
        name = d["metadata"]["name"]
        pod = d["spec"]["template"]["spec"]
        for container in pod.get("containers", []):
            image = str(container.get("image", ""))
            if image.startswith("postgres"):
                found = max_connections_of(
                    (container.get("command") or []) + (container.get("args") or [])
                )
                postgres_max = found or PG_DEFAULT_MAX_CONNECTIONS
                continue
            env = {}
            for source in container.get("envFrom", []) or []:
                ref = (source.get("configMapRef") or {}).get("name")
                env.update(configmaps.get(ref, {}))
            for var in container.get("env", []) or []:
                if "value" in var:
                    env[var["name"]] = var["value"]
            if kind == "Job":
                command = " ".join(map(str, (container.get("command") or []) + (container.get("args") or [])))
                if "migrate" in command:
                    need += MIGRATE_CONNECTIONS
                    lines.append(f"  job {name}: {MIGRATE_CONNECTIONS}")
                continue
            if not name.startswith("ymera-"):
                continue
            service = service_of(name)
            pool = 0 if service in STATELESS else int(env.get("POSTGRES_POOL_SIZE", default_pool))
            replicas = hpa_max.get(name, d["spec"].get("replicas", 1))
            need += replicas * pool
            lines.append(f"  {name}: {replicas} × {pool} = {replicas * pool}")
    return need, postgres_max, lines


def compose_need(doc, default_pool: int):
    lines, need, postgres_max = [], 0, None
    for name, svc in (doc.get("services") or {}).items():
        image = str(svc.get("image", ""))
        command = svc.get("command") or []
        if isinstance(command, str):
            command = command.split()
        if image.startswith("postgres"):
            postgres_max = max_connections_of(command) or PG_DEFAULT_MAX_CONNECTIONS
            continue
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env if "=" in e)
        if "POSTGRES_URL" not in env and "DATABASE_URL" not in env:
            continue
        service = service_of(str(command[0]) if command else name)
        replicas = int((svc.get("deploy") or {}).get("replicas") or 1)
        if "migrate" in " ".join(map(str, command)):
            need += MIGRATE_CONNECTIONS
            lines.append(f"  {name}: {MIGRATE_CONNECTIONS} (migrate)")
            continue
        pool = 0 if service in STATELESS else int(env.get("POSTGRES_POOL_SIZE", default_pool))
        need += replicas * pool
        lines.append(f"  {name}: {replicas} × {pool} = {replicas * pool}")
    return need, postgres_max, lines


def main(argv) -> int:
    root = Path(argv[1])
    default_pool = default_pool_size(root)
    check_stateless(root)
    targets, compose = [], None
    args = argv[2:]
    while args:
        flag, value, args = args[0], args[1], args[2:]
        if flag == "--k8s":
            name, path = value.split("=", 1)
            targets.append((name, path))
        elif flag == "--compose":
            compose = value
        else:
            raise SystemExit(__doc__)
    failed = False
    results = []
    for name, path in targets:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
        need, pg_max, lines = k8s_need(docs, default_pool)
        results.append((f"k8s {name}", need, pg_max, lines))
    if compose:
        doc = yaml.safe_load(Path(compose).read_text())
        need, pg_max, lines = compose_need(doc, default_pool)
        results.append(("compose", need, pg_max, lines))
    for label, need, pg_max, lines in results:
        limit = pg_max if pg_max is not None else EXTERNAL_MAX_CONNECTIONS
        where = "shipped PostgreSQL" if pg_max is not None else "external PostgreSQL (deploy/README.md)"
        total = need + SUPERUSER_RESERVED
        ok = total < limit
        failed |= not ok
        print(
            f"{'ok' if ok else 'FAIL'} {label}: {need} pooled + {SUPERUSER_RESERVED} reserved = "
            f"{total} {'<' if ok else '>='} max_connections {limit} of the {where} "
            f"(pool default {default_pool})"
        )
        for line in lines:
            print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
