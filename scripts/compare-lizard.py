"""Per-function comparison of ymera-code-analysis with lizard 1.24.3.

Usage: compare-lizard.py DUMP_BINARY CORPUS [language ...]
Functions are matched by (file, start line, order on that line).
"""
import collections
import glob
import json
import os
import subprocess
import sys

import lizard

DUMP, CORPUS = sys.argv[1], sys.argv[2]
WANTED = sys.argv[3:] or ["python", "javascript", "java", "go", "rust"]


def files_for(language):
    c = CORPUS
    if language == "python":
        return sorted(glob.glob(f"{c}/py/*/src/**/*.py", recursive=True) + glob.glob(f"{c}/py/*/tests/**/*.py", recursive=True))
    if language == "javascript":
        return sorted(f for f in glob.glob(f"{c}/js/package/**/*.js", recursive=True) if not f.endswith(".min.js"))
    if language == "go":
        base = glob.glob(f"{c}/x/go/usr/share/go-*/src")[0]
        out = []
        for pkg in ["net/http", "strings", "encoding/json", "fmt", "bufio", "sort", "time", "os", "go/parser", "regexp"]:
            out += glob.glob(f"{base}/{pkg}/*.go")
        return sorted(out)
    if language == "java":
        return sorted(glob.glob(f"{c}/x/javasrc/java.base/java/*/*.java"))
    if language == "rust":
        reg = glob.glob(os.path.expanduser("~/.cargo/registry/src/*/"))[0]
        out = []
        for crate in ["serde_json-1", "anyhow-1", "bytes-1", "chrono-0.4", "futures-util-0.3", "itoa-1", "uuid-1"]:
            dirs = sorted(glob.glob(f"{reg}/{crate}*/src"))
            if dirs:
                out += glob.glob(f"{dirs[-1]}/**/*.rs", recursive=True)
        return sorted(out)
    return []


def lizard_functions(paths):
    out = collections.defaultdict(list)
    for path in paths:
        info = lizard.analyze_file(path)
        for f in info.function_list:
            out[(path, f.start_line)].append(f)
    return out


def ours(paths):
    out = collections.defaultdict(list)
    for chunk in range(0, len(paths), 200):
        proc = subprocess.run([DUMP, *paths[chunk:chunk + 200]], capture_output=True, text=True, check=True)
        for line in proc.stdout.splitlines():
            f = json.loads(line)
            out[(f["file"], f["start_line"])].append(f)
    return out


rows = []
for language in WANTED:
    paths = files_for(language)
    theirs, mine = lizard_functions(paths), ours(paths)
    total = sum(len(v) for v in theirs.values())
    matched = ccn_ok = nloc_ok = param_ok = 0
    extra = sum(max(0, len(mine.get(k, [])) - len(v)) for k, v in theirs.items()) + sum(len(v) for k, v in mine.items() if k not in theirs)
    with open(f"{CORPUS}/mismatch-{language}.txt", "w") as report:
        for key, funcs in sorted(theirs.items()):
            candidates = mine.get(key, [])
            for i, f in enumerate(funcs):
                if i >= len(candidates):
                    report.write(f"MISSING {key[0]}:{key[1]} {f.name}\n")
                    continue
                m = candidates[i]
                matched += 1
                ccn_ok += m["ccn"] == f.cyclomatic_complexity
                nloc_ok += m["nloc"] == f.nloc
                param_ok += m["parameter_count"] == f.parameter_count
                if (m["ccn"], m["nloc"], m["parameter_count"]) != (f.cyclomatic_complexity, f.nloc, f.parameter_count):
                    report.write(
                        f"DIFF {key[0]}:{key[1]}-{f.end_line} {f.name}: ccn {m['ccn']} vs {f.cyclomatic_complexity}, "
                        f"nloc {m['nloc']} vs {f.nloc}, params {m['parameter_count']} vs {f.parameter_count} (ours end {m['end_line']})\n")
        for key, funcs in sorted(mine.items()):
            if key not in theirs:
                for m in funcs:
                    report.write(f"EXTRA {key[0]}:{key[1]} {m['name']}\n")
    pct = lambda n: 100.0 * n / matched if matched else 0.0
    rows.append((language, len(paths), total, matched, 100.0 * matched / total if total else 0.0, pct(ccn_ok), pct(nloc_ok), pct(param_ok), extra))

print(f"{'language':<11} {'files':>5} {'lizard fns':>10} {'matched':>8} {'recall%':>8} {'CCN=%':>7} {'NLOC=%':>7} {'PARAM=%':>8} {'extra':>6}")
for r in rows:
    print(f"{r[0]:<11} {r[1]:>5} {r[2]:>10} {r[3]:>8} {r[4]:>8.2f} {r[5]:>7.2f} {r[6]:>7.2f} {r[7]:>8.2f} {r[8]:>6}")
