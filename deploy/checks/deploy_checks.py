#!/usr/bin/env python3
"""Consistency checks behind scripts/check-deploy (run with the repo's .venv).

Subcommands (each prints a line per problem and exits 1 if there is any):

  metrics ROOT PROMQL_OUT
      Every `ymera_*` metric used by the alert rules and the Grafana
      dashboards is in deploy/METRICS.md (histogram series `_bucket`, `_sum`,
      `_count` count as their histogram), and every label matched in a
      selector of such a metric is one the catalogue lists. Writes the
      dashboard queries as a rule file to PROMQL_OUT, so that `promtool check
      rules` parses them (Grafana variables replaced by plain values).
  compose ROOT COMPOSE_CONFIG_YAML
      On `docker-compose config` output: each container running the Ymera
      image runs a known binary, sets only variables of deploy/ENVIRONMENT.md,
      uses a NATS user defined in deploy/nats-accounts.conf with the same
      password the NATS container substitutes; Prometheus scrapes each service.
  k8s ROOT RENDERED.yaml [--core-out FILE] [--require-secrets]
      On `kubectl kustomize` output: the same binary/variable rules for every
      container using the Ymera image (env, envFrom ConfigMap/Secret keys);
      every service Deployment has /health liveness, /ready readiness,
      requests and limits, runAsNonRoot, readOnlyRootFilesystem, drop ALL, a
      spread constraint or anti-affinity, and a Service, an autoscaling/v2
      HPA on CPU, a PDB and a NetworkPolicy that select it; NetworkPolicy
      egress only to NATS/PostgreSQL/Redis/OTLP/DNS; the NATS StatefulSet
      has 3 replicas and a headless Service. ServiceMonitors (a CRD that
      kubernetes-validate has no schema for) are checked structurally here;
      all other objects are written to --core-out for kubernetes-validate.
  bins CARGO_METADATA.json
      Each binary named in the Dockerfile/compose/k8s is a bin target of its
      crate (crates not written yet are listed as pending).
  dockerfile ROOT
      Parses Dockerfile with the BuildKit parser (PyPI `dockerfile`):
      multi-stage, a dependency layer before the sources are copied, every
      binary built, a minimal non-root final stage without build tools.
  grafana ROOT
      Provisioning files parse, dashboards have unique uids and use only the
      provisioned datasource uid (or the ${datasource} variable).
"""

import json
import os
import re
import sys

import yaml

BINARIES = {"ymera", "ymera-communication", "ymera-config", "ymera-drafting",
            "ymera-code-analysis", "ymera-security", "ymera-gateway"}
SERVICES = ["communication", "config", "drafting", "code-analysis", "security", "gateway"]
# Labels Prometheus or the scrape setup attach to every series.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "container", "endpoint", "le"}

problems = []


def problem(msg):
    problems.append(msg)
    print(f"  FAIL {msg}")


def finish(ok_msg):
    if problems:
        print(f"  {len(problems)} problem(s)")
        return 1
    print(f"  {ok_msg}")
    return 0


# --------------------------------------------------------------------------
# catalogues

def read_metrics_catalogue(root):
    cat = {}
    for line in open(os.path.join(root, "deploy/METRICS.md")):
        m = re.match(r"^\|\s*`(ymera_[a-z0-9_]+)`\s*\|\s*(\w+)\s*\|([^|]*)\|", line)
        if m:
            cat[m.group(1)] = {"type": m.group(2), "labels": set(re.findall(r"`([a-z_]+)`", m.group(3)))}
    return cat


def read_env_catalogue(root):
    names, section = set(), False
    for line in open(os.path.join(root, "deploy/ENVIRONMENT.md")):
        if line.startswith("## "):
            section = line.strip() == "## Variables the Ymera binaries read"
        elif section:
            m = re.match(r"^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|", line)
            if m:
                names.add(m.group(1))
    # DESIGN §5: a secret X may be given as X_FILE. The secrets are the names
    # the catalogue's introduction lists before "may instead be given as".
    intro = open(os.path.join(root, "deploy/ENVIRONMENT.md")).read().split("## ")[0]
    listed = intro.split("may instead be given as")[0]
    names |= {f"{n}_FILE" for n in re.findall(r"`([A-Z][A-Z0-9_]*)`", listed)}
    return names


def nats_users(root):
    """user -> password variable, from deploy/nats-accounts.conf."""
    text = open(os.path.join(root, "deploy/nats-accounts.conf")).read()
    return dict(re.findall(r'user:\s*"([^"]+)"\s*,?\s*password:\s*\$([A-Z0-9_]+)', text))


# --------------------------------------------------------------------------
# metrics

METRIC_RE = re.compile(r"\bymera_[a-z0-9_]+\b")
SELECTOR_RE = re.compile(r"\b(ymera_[a-z0-9_]+)\s*\{([^}]*)\}")


def base_metric(name, cat):
    if name in cat:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and cat.get(name[: -len(suffix)], {}).get("type") == "histogram":
            return name[: -len(suffix)]
    return None


def check_expr(where, expr, cat, used):
    for name in set(METRIC_RE.findall(expr)):
        base = base_metric(name, cat)
        if base is None:
            problem(f"{where}: metric {name} is not in deploy/METRICS.md")
            continue
        used.add(base)
        if cat[base]["type"] == "histogram" and name == base:
            problem(f"{where}: histogram {name} used without _bucket/_sum/_count")
    for name, matchers in SELECTOR_RE.findall(expr):
        base = base_metric(name, cat)
        if base is None:
            continue
        for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers):
            if label not in cat[base]["labels"] | TARGET_LABELS:
                problem(f"{where}: {name} has no label {label!r} in deploy/METRICS.md")


def grafana_exprs(dashboard):
    def walk(panels):
        for p in panels:
            yield from walk(p.get("panels", []))
            for t in p.get("targets", []):
                if t.get("expr"):
                    yield p.get("title", "?"), t["expr"]
    yield from walk(dashboard.get("panels", []))
    for var in dashboard.get("templating", {}).get("list", []):
        q = var.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if isinstance(q, str) and "ymera_" in q:
            yield f"variable {var.get('name')}", q


def cmd_metrics(root, promql_out):
    cat = read_metrics_catalogue(root)
    if len(cat) < 20:
        problem(f"deploy/METRICS.md: only {len(cat)} metrics parsed; table format changed?")
    used = set()
    rules_dir = os.path.join(root, "deploy/prometheus/rules")
    n_rules = 0
    for fn in sorted(os.listdir(rules_dir)):
        if not fn.endswith((".yml", ".yaml")):
            continue
        for group in yaml.safe_load(open(os.path.join(rules_dir, fn)))["groups"]:
            for rule in group["rules"]:
                n_rules += 1
                name = rule.get("alert") or rule.get("record")
                check_expr(f"rules/{fn}:{name}", rule["expr"], cat, used)
                for ann in rule.get("annotations", {}).values():
                    check_expr(f"rules/{fn}:{name} annotation", ann, cat, used)
    dash_dir = os.path.join(root, "deploy/grafana/dashboards")
    recording = []
    n_queries = 0
    for fn in sorted(os.listdir(dash_dir)):
        if not fn.endswith(".json"):
            continue
        dash = json.load(open(os.path.join(dash_dir, fn)))
        for title, expr in grafana_exprs(dash):
            n_queries += 1
            check_expr(f"dashboards/{fn} [{title}]", expr, cat, used)
            plain = (expr.replace("$__rate_interval", "1m").replace("$__interval", "1m")
                     .replace("$__range", "1h").replace("$service", ".+"))
            if plain.startswith("label_values("):
                continue
            recording.append({"record": f"dashboard:query_{len(recording)}", "expr": plain})
    with open(promql_out, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": recording}]}, f, sort_keys=False)
    return finish(f"{n_rules} rules and {n_queries} dashboard queries use {len(used)} catalogued metrics "
                  f"({len(cat) - len(used)} catalogued but unused)")


# --------------------------------------------------------------------------
# compose

def as_env_dict(env):
    if env is None:
        return {}
    if isinstance(env, list):
        out = {}
        for item in env:
            k, _, v = item.partition("=")
            out[k] = v
        return out
    return {k: ("" if v is None else str(v)) for k, v in env.items()}


def as_argv(cmd):
    if cmd is None:
        return []
    return cmd if isinstance(cmd, list) else cmd.split()


def cmd_compose(root, config_file):
    env_names = read_env_catalogue(root)
    users = nats_users(root)
    cfg = yaml.safe_load(open(config_file))
    services = cfg["services"]
    nats_env = as_env_dict(services.get("nats", {}).get("environment"))
    ymera = {n: s for n, s in services.items() if "build" in s or str(s.get("image", "")).split(":")[0].endswith("ymera")}
    missing = (set(SERVICES) | {"migrate"}) - set(ymera)
    if missing:
        problem(f"compose: services missing or not on the Ymera image: {sorted(missing)}")
    for name, svc in sorted(ymera.items()):
        argv = as_argv(svc.get("command")) or as_argv(svc.get("entrypoint"))
        binary = os.path.basename(argv[0]) if argv else ""
        if binary not in BINARIES:
            problem(f"compose {name}: command {argv} does not start with one of {sorted(BINARIES)}")
        env = as_env_dict(svc.get("environment"))
        for var in sorted(set(env) - env_names):
            problem(f"compose {name}: sets {var}, which is not in deploy/ENVIRONMENT.md")
        if svc.get("env_file"):
            problem(f"compose {name}: env_file hides variables from this check; use environment")
        if name in SERVICES:
            if binary != f"ymera-{name}":
                problem(f"compose {name}: runs {binary}, expected ymera-{name}")
            user = env.get("NATS_USER")
            if user not in users:
                problem(f"compose {name}: NATS_USER={user!r} is not a user in deploy/nats-accounts.conf")
            elif nats_env.get(users[user]) != env.get("NATS_PASSWORD"):
                problem(f"compose {name}: NATS_PASSWORD differs from {users[user]} given to the nats container")
            deps = svc.get("depends_on", {})
            if not isinstance(deps, dict) or deps.get("migrate", {}).get("condition") != "service_completed_successfully":
                problem(f"compose {name}: must depend on migrate with condition service_completed_successfully")
            for infra in ("nats", "postgres"):
                if not isinstance(deps, dict) or deps.get(infra, {}).get("condition") != "service_healthy":
                    problem(f"compose {name}: must depend on {infra} with condition service_healthy")
    for var in users.values():
        if var not in nats_env:
            problem(f"compose nats: {var} (used by deploy/nats-accounts.conf) is not set")
    for infra in ("nats", "postgres", "redis"):
        if "healthcheck" not in services.get(infra, {}):
            problem(f"compose {infra}: no healthcheck")
    for traced in ("otel-collector", "jaeger"):
        if "tracing" not in services.get(traced, {}).get("profiles", []):
            problem(f"compose {traced}: must be in profile `tracing`")
    prom = yaml.safe_load(open(os.path.join(root, "deploy/prometheus/prometheus.yml")))
    targets = {t for job in prom.get("scrape_configs", []) for sc in job.get("static_configs", []) for t in sc.get("targets", [])}
    for name in SERVICES:
        if f"{name}:8080" not in targets:
            problem(f"prometheus.yml: no scrape target {name}:8080")
    return finish(f"{len(ymera)} containers on the Ymera image: binaries, environment and NATS users consistent")


# --------------------------------------------------------------------------
# kubernetes

EGRESS_PEERS = {"nats", "postgresql", "redis", "opentelemetry-collector", "kube-dns"}


def is_ymera_image(image):
    """ymera, ymera:tag, registry/path/ymera:tag, …@sha256:…"""
    last = image.split("@")[0].split("/")[-1]
    return last.split(":")[0] == "ymera"


def pod_spec(obj):
    kind = obj["kind"]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return obj["spec"]["template"]["spec"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if kind == "Pod":
        return obj["spec"]
    return None


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def cmd_k8s(root, rendered, core_out=None, require_secrets=False):
    env_names = read_env_catalogue(root)
    users = nats_users(root)
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    named = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    label = os.path.relpath(rendered)

    # Split CRDs (ServiceMonitor) from core objects.
    custom = [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
    if core_out:
        with open(core_out, "w") as f:
            yaml.safe_dump_all([d for d in docs if d not in custom], f, sort_keys=False)

    # Ymera containers: binary and environment.
    n_containers = 0
    for d in docs:
        spec = pod_spec(d)
        if not spec:
            continue
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            if not is_ymera_image(c.get("image", "")):
                continue
            n_containers += 1
            where = f"{label} {d['kind']}/{d['metadata']['name']} container {c['name']}"
            argv = c.get("command") or []
            if not argv or os.path.basename(argv[0]) not in BINARIES:
                problem(f"{where}: command {argv} does not start with one of {sorted(BINARIES)}")
            for e in c.get("env", []):
                if e["name"] not in env_names:
                    problem(f"{where}: sets {e['name']}, which is not in deploy/ENVIRONMENT.md")
            for ef in c.get("envFrom", []):
                ref = ef.get("configMapRef") or ef.get("secretRef")
                kind = "ConfigMap" if "configMapRef" in ef else "Secret"
                src = named.get((kind, ref["name"]))
                if src is None:
                    if kind == "ConfigMap" or require_secrets:
                        problem(f"{where}: envFrom {kind} {ref['name']} is not in the rendered output")
                    continue
                keys = set(src.get("data", {})) | set(src.get("stringData", {}))
                for key in sorted(keys - env_names):
                    problem(f"{where}: envFrom {kind} {ref['name']} sets {key}, not in deploy/ENVIRONMENT.md")
            env = {e["name"]: e for e in c.get("env", [])}
            user = env.get("NATS_USER", {}).get("value")
            if d["kind"] == "Deployment":
                if user not in users:
                    problem(f"{where}: NATS_USER={user!r} is not a user in deploy/nats-accounts.conf")
                key = env.get("NATS_PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef", {}).get("key")
                if key != user:
                    problem(f"{where}: NATS_PASSWORD must come from ymera-nats-credentials key {user!r}")

    # Service Deployments: hardening and companions.
    deployments = [d for d in by_kind.get("Deployment", [])
                   if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "service"]
    # A canary track (k8s/overlays/canary) adds `ymera-<service>-canary`
    # Deployments labelled app.kubernetes.io/track=canary beside the stable ones.
    def is_canary(d):
        return d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/track") == "canary"
    stable_by_name = {d["metadata"]["name"]: d for d in deployments if not is_canary(d)}
    names = sorted(stable_by_name)
    if names != sorted(f"ymera-{s}" for s in SERVICES):
        problem(f"{label}: service Deployments are {names}")
    for d in deployments:
        name = d["metadata"]["name"]
        where = f"{label} Deployment/{name}"
        labels = d["spec"]["template"]["metadata"]["labels"]
        spec = d["spec"]["template"]["spec"]
        psc = spec.get("securityContext", {})
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/health":
                problem(f"{where}: livenessProbe must GET /health")
            if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/ready":
                problem(f"{where}: readinessProbe must GET /ready")
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(kind, {}):
                        problem(f"{where}: resources.{kind}.{r} missing")
            if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                problem(f"{where}: runAsNonRoot not set")
            if not sc.get("readOnlyRootFilesystem"):
                problem(f"{where}: readOnlyRootFilesystem not set")
            if sc.get("allowPrivilegeEscalation") is not False:
                problem(f"{where}: allowPrivilegeEscalation must be false")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                problem(f"{where}: capabilities must drop ALL")
        if not spec.get("topologySpreadConstraints") and not spec.get("affinity", {}).get("podAntiAffinity"):
            problem(f"{where}: no topologySpreadConstraints or podAntiAffinity")
        if not any(selects(s["spec"].get("selector"), labels) for s in by_kind.get("Service", [])):
            problem(f"{where}: no Service selects it")
        hpas = [h for h in by_kind.get("HorizontalPodAutoscaler", []) if h["spec"]["scaleTargetRef"]["name"] == name]
        if is_canary(d):
            # Same queue group as the stable track (same name label, same
            # binary), a fixed size for its traffic share, no HPA.
            stable = stable_by_name.get(name.removesuffix("-canary"))
            replicas = d["spec"].get("replicas")
            if not name.endswith("-canary") or stable is None:
                problem(f"{where}: a canary Deployment must be <stable Deployment>-canary")
            elif labels.get("app.kubernetes.io/name") != stable["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name"):
                problem(f"{where}: app.kubernetes.io/name differs from {stable['metadata']['name']} (not the same queue group)")
            elif [c.get("command") for c in spec["containers"]] != [c.get("command") for c in stable["spec"]["template"]["spec"]["containers"]]:
                problem(f"{where}: runs another command than {stable['metadata']['name']}")
            if not isinstance(replicas, int) or replicas < 1:
                problem(f"{where}: a canary sets replicas (its traffic share), got {replicas!r}")
            if hpas:
                problem(f"{where}: a canary has a fixed size, not an HPA")
        elif not hpas or hpas[0]["apiVersion"] != "autoscaling/v2":
            problem(f"{where}: no autoscaling/v2 HorizontalPodAutoscaler")
        elif not any(m.get("resource", {}).get("name") == "cpu" for m in hpas[0]["spec"].get("metrics", [])):
            problem(f"{where}: HPA does not scale on CPU")
        elif d["spec"].get("replicas") is not None:
            problem(f"{where}: sets replicas although an HPA owns the count")
        if not any(selects(p["spec"]["selector"].get("matchLabels"), labels) for p in by_kind.get("PodDisruptionBudget", [])):
            problem(f"{where}: no PodDisruptionBudget selects it")
        pols = [p for p in by_kind.get("NetworkPolicy", []) if selects(p["spec"]["podSelector"].get("matchLabels"), labels)]
        if not pols:
            problem(f"{where}: no NetworkPolicy selects it")
        for p in pols:
            if "Egress" not in p["spec"].get("policyTypes", []):
                problem(f"{where}: NetworkPolicy {p['metadata']['name']} does not restrict egress")
            for rule in p["spec"].get("egress", []):
                for peer in rule.get("to", []):
                    if "ipBlock" in peer:
                        continue  # managed databases outside the cluster (overlay patch)
                    ml = peer.get("podSelector", {}).get("matchLabels", {})
                    target = ml.get("app.kubernetes.io/name") or ml.get("k8s-app")
                    if target not in EGRESS_PEERS:
                        problem(f"{where}: NetworkPolicy {p['metadata']['name']} allows egress to {peer}")

    # NATS cluster.
    nats = named.get(("StatefulSet", "nats"))
    if nats is None:
        problem(f"{label}: no StatefulSet nats")
    else:
        if nats["spec"].get("replicas") != 3:
            problem(f"{label}: StatefulSet nats must have 3 replicas")
        # Streams and buckets at R3, set, not guessed: a service that starts
        # while the cluster is still forming must not create them at R1.
        config = named.get(("ConfigMap", "ymera-config")) or next(
            (d for d in by_kind.get("ConfigMap", []) if d["metadata"]["name"].startswith("ymera-config")), None)
        js_replicas = (config or {}).get("data", {}).get("YMERA_JS_REPLICAS")
        if js_replicas != "3":
            problem(f"{label}: ConfigMap ymera-config must set YMERA_JS_REPLICAS=3 for the 3-server cluster, has {js_replicas!r}")
        headless = named.get(("Service", nats["spec"]["serviceName"]))
        if headless is None or headless["spec"].get("clusterIP") != "None":
            problem(f"{label}: StatefulSet nats serviceName must be a headless Service")
        env = {e["name"]: e for e in nats["spec"]["template"]["spec"]["containers"][0].get("env", [])}
        for user, var in users.items():
            ref = env.get(var, {}).get("valueFrom", {}).get("secretKeyRef", {})
            if ref.get("key") != user:
                problem(f"{label}: nats container must read {var} from secret key {user!r}")
    creds = [d for d in by_kind.get("Secret", []) if d["metadata"]["name"].startswith("ymera-nats-credentials")]
    for s in creds:
        missing = set(users) - set(s.get("data", {}))
        if missing:
            problem(f"{label}: Secret {s['metadata']['name']} lacks keys {sorted(missing)}")
    if not any(d["kind"] == "Job" and is_ymera_image(pod_spec(d)["containers"][0]["image"]) and
               pod_spec(d)["containers"][0].get("command", [])[-1:] == ["migrate"] for d in docs):
        problem(f"{label}: no migration Job running `ymera migrate`")

    # ServiceMonitor: structural (the CRD schema is not available offline).
    for sm in custom:
        if sm["kind"] == "AlertmanagerConfig":
            # Structural: same receivers as deploy/alertmanager/alertmanager.yml.
            am = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "../alertmanager/alertmanager.yml")))
            want = sorted(r["name"] for r in am["receivers"])
            got = sorted(r["name"] for r in sm["spec"].get("receivers", []))
            if got != want or sm["spec"]["route"].get("receiver") != am["route"]["receiver"]:
                problem(f"{label}: AlertmanagerConfig receivers {got} differ from deploy/alertmanager ({want})")
            continue
        if sm["kind"] != "ServiceMonitor":
            problem(f"{label}: unexpected custom resource {sm['kind']}")
            continue
        sel = sm["spec"]["selector"].get("matchLabels", {})
        svcs = [s for s in by_kind.get("Service", []) if selects(sel, s["metadata"].get("labels", {}))]
        if sorted(s["metadata"]["name"] for s in svcs) != sorted(f"ymera-{x}" for x in SERVICES):
            problem(f"{label}: ServiceMonitor {sm['metadata']['name']} selects {[s['metadata']['name'] for s in svcs]}")
        for ep in sm["spec"].get("endpoints", []):
            for s in svcs:
                if ep.get("port") not in {p.get("name") for p in s["spec"]["ports"]}:
                    problem(f"{label}: ServiceMonitor port {ep.get('port')} is not a port name of {s['metadata']['name']}")
            if ep.get("path", "/metrics") != "/metrics":
                problem(f"{label}: ServiceMonitor path must be /metrics")
        if sm["metadata"].get("namespace") != (deployments[0]["metadata"].get("namespace") if deployments else None):
            problem(f"{label}: ServiceMonitor is not in the services' namespace")
    extra = f", {len(custom)} ServiceMonitor checked structurally" if custom else ""
    return finish(f"{len(docs)} objects, {n_containers} Ymera containers, {len(deployments)} service Deployments{extra}")


# --------------------------------------------------------------------------
# Dockerfile

def cmd_dockerfile(root):
    import dockerfile  # PyPI `dockerfile`: BuildKit's own parser

    cmds = dockerfile.parse_file(os.path.join(root, "Dockerfile"))
    stages, current = [], None
    for c in cmds:
        if c.cmd.upper() == "FROM":
            vals = list(c.value)
            name = vals[2] if len(vals) >= 3 and vals[1].upper() == "AS" else None
            current = {"image": vals[0], "name": name, "cmds": []}
            stages.append(current)
        elif current is not None:
            current["cmds"].append(c)
    if len(stages) < 2:
        problem("Dockerfile: not multi-stage")
        return finish("")
    names = {s["name"] for s in stages if s["name"]}
    for s in stages:
        for c in s["cmds"]:
            for flag in c.flags:
                if flag.startswith("--from=") and flag[7:] not in names:
                    problem(f"Dockerfile line {c.start_line}: COPY {flag} names no stage")
    builder = next((s for s in stages if any(c.cmd.upper() == "RUN" and "cargo build" in " ".join(c.value) for c in s["cmds"])), None)
    if builder is None:
        problem("Dockerfile: no stage runs cargo build")
    else:
        seq = builder["cmds"]
        idx_copy_all = next((i for i, c in enumerate(seq) if c.cmd.upper() == "COPY" and list(c.value)[:1] == ["."]), None)
        idx_deps = next((i for i, c in enumerate(seq) if c.cmd.upper() == "RUN" and
                         ("cargo chef cook" in " ".join(c.value) or "cargo fetch" in " ".join(c.value)
                          or "--locked" in " ".join(c.value) and "cargo build" in " ".join(c.value))), None)
        if idx_deps is None or idx_copy_all is None or idx_deps > idx_copy_all:
            problem("Dockerfile: no dependency-cache layer (cargo chef cook / manifest-only build) before `COPY . .`")
        build = " ".join(" ".join(c.value) for c in seq if c.cmd.upper() == "RUN" and "cargo build" in " ".join(c.value))
        for b in sorted(BINARIES):
            if not re.search(rf"--bin\s+{re.escape(b)}(\s|$)", build):
                problem(f"Dockerfile: cargo build does not build --bin {b}")
    final = stages[-1]
    image = final["image"]
    if not ("distroless" in image or "slim" in image or image == "scratch"):
        problem(f"Dockerfile: final stage {image} is neither distroless nor slim")
    users = [" ".join(c.value) for c in final["cmds"] if c.cmd.upper() == "USER"]
    if not users or users[-1].split(":")[0] in ("0", "root"):
        problem("Dockerfile: final stage does not switch to a non-root USER")
    elif not users[-1].split(":")[0].isdigit():
        problem("Dockerfile: final USER should be numeric (runAsNonRoot verification)")
    for c in final["cmds"]:
        text = " ".join(c.value)
        if c.cmd.upper() == "RUN" and re.search(r"apt-get install|apk add|cargo|gcc|make", text):
            problem(f"Dockerfile line {c.start_line}: final stage installs or runs build tools")
    ignore = open(os.path.join(root, ".dockerignore")).read().split()
    if not any(p.strip("/") == "target" for p in ignore):
        problem(".dockerignore: target/ not excluded")
    return finish(f"{len(stages)} stages, final {image} as user {users[-1] if users else '?'}")


# --------------------------------------------------------------------------
# Grafana

def cmd_grafana(root):
    prov = os.path.join(root, "deploy/grafana/provisioning")
    ds_uids = set()
    for sub in ("datasources", "dashboards"):
        for fn in sorted(os.listdir(os.path.join(prov, sub))):
            doc = yaml.safe_load(open(os.path.join(prov, sub, fn)))
            if doc.get("apiVersion") != 1:
                problem(f"grafana provisioning {sub}/{fn}: apiVersion must be 1")
            for ds in doc.get("datasources", []):
                ds_uids.add(ds.get("uid"))
            for p in doc.get("providers", []):
                if p.get("options", {}).get("path") != "/etc/grafana/dashboards":
                    problem(f"grafana provider {p.get('name')}: path is not the compose mount /etc/grafana/dashboards")
    uids = set()
    dash_dir = os.path.join(root, "deploy/grafana/dashboards")
    n_panels = 0
    for fn in sorted(os.listdir(dash_dir)):
        if not fn.endswith(".json"):
            continue
        dash = json.load(open(os.path.join(dash_dir, fn)))
        if dash.get("uid") in uids:
            problem(f"dashboards/{fn}: duplicate uid {dash.get('uid')}")
        uids.add(dash.get("uid"))
        ids = set()

        def walk(panels):
            for p in panels:
                yield p
                yield from walk(p.get("panels", []))
        for p in walk(dash.get("panels", [])):
            n_panels += 1
            if p.get("id") in ids:
                problem(f"dashboards/{fn}: duplicate panel id {p.get('id')}")
            ids.add(p.get("id"))
            for t in [p] + p.get("targets", []):
                uid = (t.get("datasource") or {}).get("uid")
                if uid and uid not in ds_uids and uid != "${datasource}" and not uid.startswith("-- "):
                    problem(f"dashboards/{fn} panel {p.get('title')}: datasource uid {uid} is not provisioned")
    return finish(f"{len(uids)} dashboard(s), {n_panels} panels, datasources {sorted(ds_uids)}")


def cmd_dedupe(out, files):
    """Write the distinct objects of several renderings to one file. Overlays
    repeat most base objects; the namespace does not affect validation."""
    seen, keep = set(), []
    for fn in files:
        for d in yaml.safe_load_all(open(fn)):
            if not d:
                continue
            key = json.dumps({**d, "metadata": {k: v for k, v in d["metadata"].items() if k != "namespace"}},
                             sort_keys=True)
            if key not in seen:
                seen.add(key)
                keep.append(d)
    with open(out, "w") as f:
        yaml.safe_dump_all(keep, f, sort_keys=False)
    print(f"  {len(keep)} distinct objects from {len(files)} renderings")
    return 0


def cmd_bins(metadata_file):
    """The binaries the Dockerfile builds against `cargo metadata --no-deps`:
    a crate with bin targets must provide its binary under exactly that name;
    a crate (or its main.rs) not written yet is reported as pending, not as a
    failure."""
    meta = json.load(open(metadata_file))
    bins = {p["name"]: {t["name"] for t in p["targets"] if "bin" in t["kind"]} for p in meta["packages"]}
    expected = {"ymera-cli": "ymera", **{f"ymera-{s}": f"ymera-{s}" for s in SERVICES}}
    pending = []
    for crate, binary in expected.items():
        if not bins.get(crate):  # crate or its main.rs not written yet
            pending.append(crate)
        elif binary not in bins[crate]:
            problem(f"crate {crate} has bin targets {sorted(bins[crate])}, the Dockerfile and manifests expect {binary}")
    note = f" (pending, no bin target yet: {', '.join(pending)})" if pending else ""
    return finish(f"{len(expected) - len(pending)} of {len(expected)} binaries present with the expected names{note}")


def main(argv):
    cmd, root = argv[1], argv[2]
    if cmd == "bins":
        return cmd_bins(argv[2])
    if cmd == "dedupe":
        return cmd_dedupe(argv[2], argv[3:])
    if cmd == "metrics":
        return cmd_metrics(root, argv[3])
    if cmd == "compose":
        return cmd_compose(root, argv[3])
    if cmd == "k8s":
        core_out = argv[argv.index("--core-out") + 1] if "--core-out" in argv else None
        return cmd_k8s(root, argv[3], core_out, "--require-secrets" in argv)
    if cmd == "dockerfile":
        return cmd_dockerfile(root)
    if cmd == "grafana":
        return cmd_grafana(root)
    print(f"unknown subcommand {cmd}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except (yaml.YAMLError, json.JSONDecodeError, OSError, KeyError, TypeError) as e:
        print(f"  FAIL {type(e).__name__}: {e}")
        sys.exit(1)
