//! Every rule fires on a positive sample, and not on the same text inside a
//! string or a comment; `ymera: ignore[ID]` suppresses.

use ymera_code_analysis::{Language, rules};

use crate::common::{analyze, rule_ids};

use Language::{Go, Java, JavaScript as Js, Python as Py, Rust as Rs};

fn long_python_function() -> String {
    let mut s = String::from("def long():\n");
    for i in 0..62 {
        s.push_str(&format!("    x{i} = {i}\n"));
    }
    s
}

fn complex_python_function() -> String {
    let mut s = String::from("def branchy(x):\n");
    for i in 0..11 {
        s.push_str(&format!("    if x == {i}:\n        return {i}\n"));
    }
    s.push_str("    return -1\n");
    s
}

const NESTED: &str = "def deep(a):\n    if a:\n        for b in a:\n            while b:\n                if b > 1:\n                    if b > 2:\n                        return b\n";

fn samples() -> Vec<(Language, &'static str, String)> {
    let s = |l, id, code: &str| (l, id, code.to_owned());
    vec![
        s(Py, "B102", "exec(code)\n"),
        s(Py, "B307", "eval(expr)\n"),
        s(
            Py,
            "B602",
            "import subprocess\nsubprocess.run(cmd, shell=True)\n",
        ),
        s(Py, "B605", "import os\nos.system(cmd)\n"),
        s(
            Py,
            "B603",
            "import subprocess\nsubprocess.call(['/usr/bin/git', 'status'])\n",
        ),
        s(
            Py,
            "B607",
            "import subprocess\nsubprocess.call(['git', 'status'])\n",
        ),
        s(Py, "PY001", "secret = input('Enter your password: ')\n"),
        s(Py, "B105", "password = 'hunter2'\n"),
        s(
            Py,
            "B105",
            "def login(username, password):\n    if password == 'admin123':\n        return True\n    return False\n",
        ),
        s(Py, "B106", "connect(user='a', password='hunter2')\n"),
        s(Py, "B301", "import pickle\npickle.loads(data)\n"),
        s(Py, "B324", "import hashlib\nhashlib.md5(data)\n"),
        s(Py, "B506", "import yaml\nyaml.load(text)\n"),
        s(
            Py,
            "B608",
            "query = 'SELECT * FROM users WHERE id = ' + user_id\n",
        ),
        s(Py, "B501", "requests.get(url, verify=False, timeout=5)\n"),
        s(Py, "B113", "requests.get(url)\n"),
        s(Py, "B201", "app.run(debug=True)\n"),
        s(Py, "B103", "import os\nos.chmod(path, 0o777)\n"),
        s(Py, "B104", "server.bind(('0.0.0.0', 8080))\n"),
        s(Py, "B108", "f = open('/tmp/report.txt', 'w')\n"),
        s(
            Py,
            "B202",
            "import tarfile\ntarfile.open(p).extractall(dest)\n",
        ),
        s(Py, "B302", "import marshal\nmarshal.loads(data)\n"),
        s(Py, "B303", "from Crypto.Hash import MD5\nMD5.new(data)\n"),
        s(Py, "B304", "from Crypto.Cipher import DES\nDES.new(key)\n"),
        s(
            Py,
            "B305",
            "from cryptography.hazmat.primitives.ciphers import modes\nmodes.ECB()\n",
        ),
        s(Py, "B306", "import tempfile\nname = tempfile.mktemp()\n"),
        s(
            Py,
            "B308",
            "from django.utils.safestring import mark_safe\nmark_safe(html)\n",
        ),
        s(
            Py,
            "B310",
            "from urllib.request import urlopen\nurlopen(url)\n",
        ),
        s(Py, "B312", "import telnetlib as t\nt.Telnet(host)\n"),
        s(
            Py,
            "B313",
            "import xml.etree.cElementTree as ET\nET.fromstring(text)\n",
        ),
        s(
            Py,
            "B314",
            "import xml.etree.ElementTree as ET\nET.parse(path)\n",
        ),
        s(
            Py,
            "B315",
            "from xml.sax import expatreader\nexpatreader.create_parser()\n",
        ),
        s(
            Py,
            "B316",
            "from xml.dom import expatbuilder\nexpatbuilder.parseString(text)\n",
        ),
        s(
            Py,
            "B317",
            "import xml.sax\nxml.sax.parseString(text, handler)\n",
        ),
        s(
            Py,
            "B318",
            "from xml.dom import minidom\nminidom.parseString(text)\n",
        ),
        s(
            Py,
            "B319",
            "from xml.dom import pulldom\npulldom.parse(path)\n",
        ),
        s(Py, "B321", "from ftplib import FTP\nFTP(host)\n"),
        s(Py, "B323", "import ssl\nssl._create_unverified_context()\n"),
        s(Py, "B401", "import telnetlib\n"),
        s(Py, "B402", "from ftplib import FTP_TLS\n"),
        s(Py, "B411", "import xmlrpc.client\n"),
        s(Py, "B412", "from wsgiref.handlers import CGIHandler\n"),
        s(Py, "B413", "from Crypto.Cipher import AES\n"),
        s(Py, "B415", "import pyghmi\n"),
        s(Py, "B604", "spawn(command, shell=True)\n"),
        s(
            Py,
            "B701",
            "from jinja2 import Environment\nenv = Environment(loader=loader)\n",
        ),
        s(
            Py,
            "B704",
            "from markupsafe import Markup\nMarkup(f'<b>{name}</b>')\n",
        ),
        s(
            Py,
            "PERF001",
            "for i in range(len(items)):\n    print(items[i])\n",
        ),
        s(
            Py,
            "PERF002",
            "def process_data(data):\n    result = ''\n    for i in range(len(data)):\n        result = result + str(data[i]) + ','\n    return result\n",
        ),
        s(
            Py,
            "PERF003",
            "for line in lines:\n    re.compile(r'a+').match(line)\n",
        ),
        s(Py, "PERF004", "async def f():\n    time.sleep(1)\n"),
        s(Py, "SMELL001", "def f():\n    pass\n"),
        s(Py, "SMELL002", "try:\n    go()\nexcept:\n    log()\n"),
        s(
            Py,
            "SMELL003",
            "try:\n    go()\nexcept ValueError:\n    pass\n",
        ),
        s(Py, "SMELL004", "from os import *\n"),
        s(Py, "SMELL005", "def f(a, b, c, d, e, g):\n    return a\n"),
        (Py, "SMELL006", long_python_function()),
        (Py, "SMELL007", complex_python_function()),
        s(Py, "SMELL008", NESTED),
        s(Py, "SMELL009", "x = 1  # TODO: fix this\n"),
        s(Js, "JS001", "eval(code);\n"),
        s(Js, "JS002", "const f = new Function('a', body);\n"),
        s(Js, "JS003", "el.innerHTML = html;\n"),
        s(
            Js,
            "JS004",
            "const cp = require('child_process');\ncp.exec('ls ' + dir);\n",
        ),
        s(Js, "JS005", "const apiKey = 'sk-1234567890';\n"),
        s(Js, "PERF002", "for (const x of xs) {\n  s += 'a' + x;\n}\n"),
        s(
            Js,
            "PERF003",
            "for (const x of xs) {\n  new RegExp('a+').test(x);\n}\n",
        ),
        s(Js, "SMELL001", "function f() {}\n"),
        s(Js, "SMELL003", "try {\n  go();\n} catch (e) {}\n"),
        s(Js, "SMELL009", "let x = 1; // FIXME later\n"),
        s(
            Java,
            "JAVA001",
            "class A { void f(String c) throws Exception { Runtime.getRuntime().exec(c); } }\n",
        ),
        s(
            Java,
            "JAVA002",
            "class A { void f(java.sql.Statement s, String id) throws Exception { s.executeQuery(\"SELECT * FROM t WHERE id=\" + id); } }\n",
        ),
        s(
            Java,
            "JAVA003",
            "class A { void f() throws Exception { java.security.MessageDigest.getInstance(\"MD5\"); } }\n",
        ),
        s(
            Java,
            "JAVA004",
            "class A { Object f(java.io.InputStream in) throws Exception { return new ObjectInputStream(in).readObject(); } }\n",
        ),
        s(
            Java,
            "PERF002",
            "class A { String f(String[] xs) { String s = \"\"; for (String x : xs) { s += x + \",\"; } return s; } }\n",
        ),
        s(
            Java,
            "PERF003",
            "class A { void f(String[] xs) { for (String x : xs) { java.util.regex.Pattern.compile(\"a+\"); } } }\n",
        ),
        s(Java, "SMELL001", "class A { void f() {} }\n"),
        s(
            Java,
            "SMELL003",
            "class A { void f() { try { g(); } catch (Exception e) { } } }\n",
        ),
        s(Java, "SMELL004", "import java.util.*;\nclass A {}\n"),
        s(
            Go,
            "GO001",
            "package p\nimport \"os/exec\"\nfunc f(c string) { exec.Command(\"sh\", \"-c\", c).Run() }\n",
        ),
        s(
            Go,
            "GO002",
            "package p\nimport \"fmt\"\nfunc f(id string) string { return fmt.Sprintf(\"SELECT * FROM t WHERE id = %s\", id) }\n",
        ),
        s(
            Go,
            "GO003",
            "package p\nimport \"crypto/md5\"\nfunc f(b []byte) { md5.Sum(b) }\n",
        ),
        s(
            Go,
            "GO004",
            "package p\nimport \"crypto/tls\"\nvar c = &tls.Config{InsecureSkipVerify: true}\n",
        ),
        s(
            Go,
            "PERF002",
            "package p\nfunc f(xs []string) string {\n\ts := \"\"\n\tfor _, x := range xs {\n\t\ts += x + \",\"\n\t}\n\treturn s\n}\n",
        ),
        s(
            Go,
            "PERF003",
            "package p\nimport \"regexp\"\nfunc f(xs []string) {\n\tfor _, x := range xs {\n\t\tregexp.MustCompile(\"a+\").MatchString(x)\n\t}\n}\n",
        ),
        s(Go, "SMELL001", "package p\nfunc f() {}\n"),
        s(
            Go,
            "SMELL004",
            "package p\nimport . \"fmt\"\nfunc f() { Println() }\n",
        ),
        s(Rs, "RS001", "fn f(p: *const u8) -> u8 { unsafe { *p } }\n"),
        s(
            Rs,
            "RS002",
            "use std::process::Command;\nfn f(c: &str) { Command::new(\"sh\").arg(\"-c\").arg(c).status().ok(); }\n",
        ),
        s(Rs, "RS003", "fn f(x: Option<u8>) -> u8 { x.unwrap() }\n"),
        s(
            Rs,
            "PERF003",
            "fn f(xs: &[&str]) { for x in xs { regex::Regex::new(\"a+\").ok(); } }\n",
        ),
        s(
            Rs,
            "PERF004",
            "async fn f() { std::thread::sleep(std::time::Duration::from_secs(1)); }\n",
        ),
        s(Rs, "SMELL001", "fn f() {}\n"),
        s(
            Rs,
            "SMELL004",
            "use std::collections::*;\nfn f() -> u8 { 1 }\n",
        ),
    ]
}

/// The same text as a string literal and as comments, in the language.
fn inert(language: Language, code: &str, with_comments: bool) -> String {
    let literal = serde_json::to_string(code).expect("json string");
    let comment = |prefix: &str| {
        code.lines()
            .map(|l| format!("{prefix} {l}\n"))
            .collect::<String>()
    };
    let comments = if with_comments {
        match language {
            Language::Python => comment("#"),
            _ => comment("//"),
        }
    } else {
        String::new()
    };
    match language {
        Language::Python => format!("snippet_text = {literal}\n{comments}"),
        Language::JavaScript => format!("const snippetText = {literal};\n{comments}"),
        Language::Java => {
            format!("class Holder {{\n    String snippetText = {literal};\n{comments}}}\n")
        }
        Language::Go => format!("package p\n\nvar snippetText = {literal}\n{comments}"),
        Language::Rust => format!("const SNIPPET_TEXT: &str = {literal};\n{comments}"),
    }
}

#[test]
fn every_rule_fires_on_its_positive_sample() {
    for (language, id, code) in samples() {
        let report = analyze(language, &code);
        assert!(
            rule_ids(&report).iter().any(|r| r == id),
            "{id} ({language}) did not fire on:\n{code}\ngot {:?}",
            rule_ids(&report)
        );
        let finding = report
            .findings
            .iter()
            .find(|f| f.rule_id == id)
            .expect("found");
        assert!(finding.line >= 1 && finding.column >= 1);
        assert!(!finding.message.is_empty() && !finding.suggestion.is_empty());
    }
}

#[test]
fn no_rule_fires_inside_strings_or_comments() {
    for (language, id, code) in samples() {
        // The TODO rule is about comments: only the string form must stay quiet.
        let text = inert(language, &code, id != "SMELL009");
        let report = analyze(language, &text);
        assert!(
            report.findings.is_empty(),
            "{id} ({language}) fired on inert text:\n{text}\ngot {:?}",
            rule_ids(&report)
        );
    }
}

#[test]
fn every_catalogued_rule_has_a_sample() {
    let sampled: Vec<&str> = samples().iter().map(|s| s.1).collect();
    for rule in rules() {
        assert!(
            sampled.contains(&rule.id),
            "rule {} has no positive sample",
            rule.id
        );
    }
    assert!(
        rules().len() >= 30,
        "at least 30 rules, got {}",
        rules().len()
    );
}

#[test]
fn catalogue_ids_are_unique_and_python_security_uses_bandit_ids() {
    let mut ids: Vec<&str> = rules().iter().map(|r| r.id).collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len());
    for id in [
        "B102", "B307", "B602", "B605", "B105", "B106", "B301", "B324", "B506", "B608", "B501",
        "B113", "B201",
    ] {
        assert!(ids.contains(&id), "{id}");
    }
}

#[test]
fn ignore_comment_suppresses_only_the_named_rule() {
    let report = analyze(Py, "eval(x)  # ymera: ignore[B307]\n");
    assert!(rule_ids(&report).is_empty());
    let report = analyze(Py, "eval(x)  # ymera: ignore[B102]\n");
    assert_eq!(rule_ids(&report), vec!["B307"]);
    let report = analyze(Js, "eval(code); // ymera: ignore[JS001]\n");
    assert!(rule_ids(&report).is_empty());
    let report = analyze(
        Rs,
        "fn f(x: Option<u8>) -> u8 { x.unwrap() } // ymera: ignore[RS003]\n",
    );
    assert!(rule_ids(&report).is_empty());
}

#[test]
fn python_nosec_is_honoured_like_bandit() {
    // Each case checked with bandit 1.9.4 (`bandit -f custom`): what it still reports.
    let cases: [(&str, &[&str]); 11] = [
        (
            "import subprocess\nsubprocess.run(cmd, shell=True)  # nosec\n",
            &[],
        ),
        (
            "import subprocess\nsubprocess.run(cmd, shell=True)  # nosec B602\n",
            &[],
        ),
        (
            "import subprocess\nsubprocess.run(cmd, shell=True)  # nosec B605\n",
            &["B602"],
        ),
        (
            "import subprocess\nsubprocess.run(cmd, shell=True)  # nosec: subprocess_popen_with_shell_equals_true\n",
            &[],
        ),
        // A comment on any line of the call counts.
        (
            "import subprocess\nsubprocess.run(\n    cmd,\n    shell=True,  # nosec B602\n)\n",
            &[],
        ),
        // bandit keeps only the last id of `A,B` written without a space.
        ("eval(x)  # nosec B307,B602\n", &["B307"]),
        ("eval(x)  # nosec B602,B307\n", &[]),
        ("password = 'hunter2'  # nosec\n", &[]),
        // Inside a string it is not a comment.
        ("x = '# nosec'; eval(y)\n", &["B307"]),
        ("eval(x)  # noqa: S307 # nosec\n", &[]),
        // Words that are not test ids or names leave a blanket nosec.
        ("eval(x)  # nosec: reviewed\n", &[]),
    ];
    for (source, expected) in cases {
        let report = analyze(Py, source);
        assert_eq!(rule_ids(&report), expected.to_vec(), "{source}");
    }
    // `nosec` speaks of bandit's tests only: smells stay, `ymera: ignore` still works.
    let code = "try:\n    f()\nexcept:  # nosec\n    pass\n";
    assert!(
        rule_ids(&analyze(Py, code))
            .iter()
            .any(|id| id == "SMELL002")
    );
    let code = "try:\n    f()\nexcept:  # nosec # ymera: ignore[SMELL002, SMELL003]\n    pass\n";
    assert!(rule_ids(&analyze(Py, code)).is_empty());
}

#[test]
fn rust_unwrap_is_fine_in_tests() {
    let code = "#[test]\nfn t() { Some(1).unwrap(); }\n#[cfg(test)]\nmod tests {\n    fn h() { Some(1).expect(\"x\"); }\n}\n";
    assert!(rule_ids(&analyze(Rs, code)).is_empty());
}

#[test]
fn safe_variants_stay_quiet() {
    let quiet = [
        (Py, "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)\n"),
        (
            Py,
            "import hashlib\nhashlib.sha256(data)\nhashlib.md5(data, usedforsecurity=False)\n",
        ),
        (Py, "requests.get(url, timeout=5)\n"),
        (
            Py,
            "import os\nos.chmod(path, 0o600)\nos.chmod(path, 0o644)\n",
        ),
        (
            Py,
            "def f():\n    \"/tmp is a docstring\"\n    return b'/tmp/x'\n",
        ),
        (
            Py,
            "import tarfile\ntarfile.open(p).extractall(dest, filter='data')\n",
        ),
        (
            Py,
            "from jinja2 import Environment, select_autoescape\nEnvironment(autoescape=select_autoescape())\nEnvironment(autoescape=True)\n",
        ),
        (
            Py,
            "from markupsafe import Markup\nMarkup('<b>static</b>')\n",
        ),
        (Py, "run(cmd, shell=None)\n"),
        (
            Py,
            "import getpass\nsecret = getpass.getpass('Password: ')\n",
        ),
        (
            Py,
            "name = input('Your name: ')\nx = input(password_prompt)\n",
        ),
        (Py, "import ssl\nssl.create_default_context()\n"),
        (
            Py,
            "cursor.execute('SELECT * FROM users WHERE id = %s', (user_id,))\n",
        ),
        (
            Go,
            "package p\nimport \"os/exec\"\nfunc f() { exec.Command(\"ls\", \"-l\").Run() }\n",
        ),
        (
            Java,
            "class A { void f() throws Exception { java.security.MessageDigest.getInstance(\"SHA-256\"); } }\n",
        ),
    ];
    for (language, code) in quiet {
        assert!(
            rule_ids(&analyze(language, code)).is_empty(),
            "{code}: {:?}",
            rule_ids(&analyze(language, code))
        );
    }
}

#[test]
fn findings_carry_cwe_and_positions() {
    let report = analyze(
        Py,
        "import os\n\ndef run(cmd):\n    return os.system(cmd)\n",
    );
    let finding = report
        .findings
        .iter()
        .find(|f| f.rule_id == "B605")
        .expect("B605");
    assert_eq!(finding.cwe.as_deref(), Some("CWE-78"));
    assert_eq!((finding.line, finding.column), (4, 12));
}

#[test]
fn the_seeds_subprocess_and_password_prompt_patterns_are_reported_like_bandit() {
    // Checked against bandit 1.9.4: B603 on every subprocess call without a
    // true shell=, B607 when the program is a literal relative name (also in
    // an argument list, and for os.exec*/os.spawn*), both LOW.
    let ids = |code: &str| rule_ids(&analyze(Py, code));
    assert_eq!(
        ids("import subprocess\nsubprocess.call(['git', 'status'])\n"),
        vec!["B603", "B607"]
    );
    assert_eq!(
        ids("import subprocess\nsubprocess.run(['ls'], shell=False)\n"),
        vec!["B603", "B607"]
    );
    assert_eq!(
        ids(
            "import subprocess\nsubprocess.run(['/bin/ls'])\nsubprocess.run(['./ls'])\nsubprocess.run(argv)\n"
        ),
        vec!["B603", "B603", "B603"]
    );
    assert_eq!(
        ids("import subprocess\nsubprocess.call('ls', shell=True)\n"),
        vec!["B607", "B602"]
    );
    assert_eq!(ids("import os\nos.execvp('sh', ['sh'])\n"), vec!["B607"]);
    assert_eq!(
        ids("from subprocess import call\ncall(['make'])  # nosec B603\n"),
        vec!["B607"]
    );
    let report = analyze(Py, "import subprocess\nsubprocess.call(['git'])\n");
    for f in &report.findings {
        assert_eq!(f.severity.name(), "low", "{f:?}");
        assert_eq!(f.line, 2);
    }
    // The seed's `input\(.*password`: a prompt that asks for a password.
    assert_eq!(ids("pw = input(\"Password: \")\n"), vec!["PY001"]);
    assert_eq!(
        ids("pw = input(prompt='Enter the ' 'PASSPHRASE')\n"),
        vec!["PY001"]
    );
    let report = analyze(Py, "pw = input('password?')\n");
    assert_eq!(report.findings[0].severity.name(), "medium");
    assert_eq!(report.findings[0].cwe.as_deref(), Some("CWE-549"));
}

#[test]
fn python_calls_resolve_import_aliases_like_bandit() {
    let cases = [
        (
            "from subprocess import Popen as P\nP(cmd, shell=True)\n",
            "B602",
        ),
        ("import pickle as pk\npk.loads(blob)\n", "B301"),
        ("from hashlib import md5\nmd5(data)\n", "B324"),
        ("import hashlib\nhashlib.new('SHA1')\n", "B324"),
        ("from os import system\nsystem(cmd)\n", "B605"),
        ("from requests import get\nget(url)\n", "B113"),
        (
            "import six.moves.urllib.request as r\nr.urlretrieve(url)\n",
            "B310",
        ),
        ("from .compat import urlopen\n", "none"),
    ];
    for (code, id) in cases {
        let ids = rule_ids(&analyze(Py, code));
        if id == "none" {
            assert!(ids.is_empty(), "{code}: {ids:?}");
        } else {
            assert!(
                ids.iter().any(|r| r == id),
                "{code}: expected {id}, got {ids:?}"
            );
        }
    }
    // A name that is not imported stays unqualified.
    assert!(rule_ids(&analyze(Py, "md5(data)\nloads(blob)\n")).is_empty());
}

#[test]
fn python_findings_sit_on_bandits_lines() {
    // shell=/debug= findings are reported on the keyword's line, as bandit does.
    let report = analyze(
        Py,
        "import subprocess\nsubprocess.run(\n    cmd,\n    shell=True,\n)\napp.run(\n    debug=True)\n",
    );
    let line = |id: &str| {
        report
            .findings
            .iter()
            .find(|f| f.rule_id == id)
            .map(|f| f.line)
    };
    assert_eq!(line("B602"), Some(4));
    assert_eq!(line("B201"), Some(7));
    // A true-ish shell value that is not a literal counts (bandit's has_shell).
    assert_eq!(
        rule_ids(&analyze(
            Py,
            "import subprocess\nsubprocess.call(c, shell=use_shell)\n"
        )),
        vec!["B602"]
    );
    // chmod: 0o755 (group/other execute) is flagged, 0o700 is not.
    assert_eq!(
        rule_ids(&analyze(
            Py,
            "import os\nos.chmod(p, 0o755)\nos.chmod(p, 0o700)\n"
        )),
        vec!["B103"]
    );
    // tarfile: members= a call is bandit's LOW (not flagged); a variable is MEDIUM.
    let tar = "import tarfile\nt = tarfile.open(p)\nt.extractall(members=safe(t))\nt.extractall(members=ms)\n";
    let report = analyze(Py, tar);
    assert_eq!(
        report
            .findings
            .iter()
            .filter(|f| f.rule_id == "B202")
            .map(|f| f.line)
            .collect::<Vec<_>>(),
        vec![4]
    );
    // f-string pieces are strings too: f"{root}/tmp" is not a /tmp path, f"/tmp/{name}" is.
    assert_eq!(
        rule_ids(&analyze(Py, "a = f\"{root}/x\"\nb = f\"/tmp/{name}\"\n")),
        vec!["B108"]
    );
}
