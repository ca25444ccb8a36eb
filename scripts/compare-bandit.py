"""Recall of ymera-code-analysis against bandit 1.9.4's HIGH/MEDIUM findings,
and its LOW B603/B607 (the seed's plain `subprocess.call(...)`).

Usage: compare-bandit.py DUMP_BINARY CORPUS FIXTURES_DIR
A bandit finding is found when we report the same test id in the same file on
the same line (bandit's `line_number`); when no finding of ours starts on that
line, one of ours whose line range contains it counts (bandit and tree-sitter
sometimes anchor a multi-line expression differently). Each finding of ours
is used once.
"""
import collections
import glob
import json
import os
import subprocess
import sys
import tempfile

DUMP, CORPUS, FIXTURES = sys.argv[1], sys.argv[2], sys.argv[3]
TARGET = 90.0
# bandit LOW tests compared too: the seed's `subprocess\.call` pattern.
LOW_COMPARED = {"B603", "B607"}
# Our Python security rules that are no bandit test (counted, not compared).
NOT_BANDIT = {"PY001": "input() asking for a password"}


def files():
    out = []
    # Whole sdists: sources, tests, docs and examples (requests, flask, pip with
    # its vendored packages, setuptools, werkzeug).
    for pattern in ["py/*/**/*.py", "bandit/*/**/*.py"]:
        out += glob.glob(f"{CORPUS}/{pattern}", recursive=True)
    out += glob.glob(f"{FIXTURES}/**/*.py", recursive=True)
    return sorted(set(os.path.realpath(p) for p in out))


def bandit(paths):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out = tmp.name
    bandit_bin = os.path.join(os.path.dirname(sys.executable), "bandit")
    proc = subprocess.run([bandit_bin, "-q", "-f", "json", "-o", out, *paths], capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        sys.exit(f"bandit failed: {proc.stderr}")
    with open(out) as f:
        data = json.load(f)
    os.unlink(out)
    return data


def ours(paths):
    found = []
    for chunk in range(0, len(paths), 200):
        proc = subprocess.run([DUMP, *paths[chunk:chunk + 200]], capture_output=True, text=True, check=True)
        found += [json.loads(line) for line in proc.stdout.splitlines()]
    return found


paths = files()
implemented = set(subprocess.run([DUMP, "--rules"], capture_output=True, text=True, check=True).stdout.split())
report = bandit(paths)
theirs = [r for r in report["results"]
          if r["issue_severity"] in ("HIGH", "MEDIUM") or r["test_id"] in LOW_COMPARED]
mine = collections.defaultdict(list)  # (file, test id) -> [finding]
all_ours = ours(paths)
for f in all_ours:
    mine[(os.path.realpath(f["file"]), f["rule_id"])].append(f)

per_id = collections.defaultdict(lambda: [0, 0])  # test id -> [bandit, matched]
misses = []
used = set()
# Exact lines first, then containing ranges, so a range match never steals an exact one.
pending = []
for r in theirs:
    key = (os.path.realpath(r["filename"]), r["test_id"])
    per_id[r["test_id"]][0] += 1
    hit = next((i for i, f in enumerate(mine.get(key, [])) if (key, i) not in used and f["line"] == r["line_number"]), None)
    if hit is None:
        pending.append((r, key))
    else:
        used.add((key, hit))
        per_id[r["test_id"]][1] += 1
by_range = 0
for r, key in pending:
    hit = next((i for i, f in enumerate(mine.get(key, []))
                if (key, i) not in used and f["line"] <= r["line_number"] <= f["end_line"]), None)
    if hit is None:
        misses.append(r)
    else:
        used.add((key, hit))
        per_id[r["test_id"]][1] += 1
        by_range += 1

# Ours with a bandit id that matched no HIGH/MEDIUM bandit finding (informational).
extra = collections.Counter(k[1] for k, fs in mine.items() for i, _ in enumerate(fs)
                            if (k, i) not in used and k[1].startswith("B"))
with open(f"{CORPUS}/bandit-misses.txt", "w") as out:
    for r in sorted(misses, key=lambda r: (r["test_id"], r["filename"], r["line_number"])):
        out.write(f"{r['test_id']} {r['issue_severity']} {r['filename']}:{r['line_number']} {r['code'].strip().splitlines()[0] if r['code'].strip() else ''}\n")

print(f"files: {len(paths)}; bandit 1.9.4 HIGH/MEDIUM findings and LOW {'/'.join(sorted(LOW_COMPARED))}: {len(theirs)}")
print(f"{'test id':<8} {'bandit':>6} {'found':>6} {'recall%':>8} {'ours extra':>10}  rule in catalogue")
total = found = impl_total = impl_found = 0
for tid in sorted(per_id):
    n, m = per_id[tid]
    total += n
    found += m
    if tid in implemented:
        impl_total += n
        impl_found += m
    print(f"{tid:<8} {n:>6} {m:>6} {100.0 * m / n:>8.2f} {extra.get(tid, 0):>10}  {'yes' if tid in implemented else 'no'}")
overall = 100.0 * found / total if total else 100.0
for rid, what in NOT_BANDIT.items():
    hits = [f for f in all_ours if f["rule_id"] == rid]
    planted = sum(1 for f in hits if os.path.realpath(f["file"]).startswith(os.path.realpath(FIXTURES)))
    print(f"{rid:<8} (no bandit test: {what}): ours {len(hits)}, of them {planted} planted; "
          f"{'rule in catalogue' if rid in implemented else 'NOT in catalogue'}")
impl = 100.0 * impl_found / impl_total if impl_total else 100.0
print(f"overall recall (all HIGH/MEDIUM, LOW {'/'.join(sorted(LOW_COMPARED))}): {found}/{total} = {overall:.2f}%")
print(f"matched on bandit's exact line: {found - by_range}; inside our finding's line range: {by_range}")
print(f"recall for the test ids we implement: {impl_found}/{impl_total} = {impl:.2f}%")
print(f"target ≥ {TARGET:.0f}% overall: {'met' if overall >= TARGET else 'NOT met'}")
sys.exit(0 if overall >= TARGET else 1)
