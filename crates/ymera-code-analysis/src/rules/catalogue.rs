//! The rule catalogue: every rule's stable id and metadata.

use serde::Serialize;

use crate::language::Language;
use crate::report::{Category, Confidence, Severity};

/// A rule's metadata, as served by `code-analysis.rules`.
#[derive(Debug, Clone, Serialize)]
pub struct RuleInfo {
    pub id: &'static str,
    pub name: &'static str,
    pub languages: &'static [Language],
    pub category: Category,
    pub severity: Severity,
    pub confidence: Confidence,
    pub cwe: Option<&'static str>,
    pub description: &'static str,
    pub suggestion: &'static str,
}

use Category::{Performance as P, Security as S, Smell as M};
use Confidence::{High as CH, Low as CL, Medium as CM};
use Language::{Go as GO, Java as JAVA, JavaScript as JS, Python as PY, Rust as RS};
use Severity::{High as H, Low as L, Medium as MED};

const ALL: &[Language] = &[PY, JS, JAVA, GO, RS];

macro_rules! rule {
    ($id:literal, $name:literal, $langs:expr, $cat:expr, $sev:expr, $conf:expr, $cwe:expr, $desc:literal, $sugg:literal) => {
        RuleInfo {
            id: $id,
            name: $name,
            languages: $langs,
            category: $cat,
            severity: $sev,
            confidence: $conf,
            cwe: $cwe,
            description: $desc,
            suggestion: $sugg,
        }
    };
}

static RULES: &[RuleInfo] = &[
    // Python security (bandit ids)
    rule!(
        "B102",
        "exec-used",
        &[PY],
        S,
        MED,
        CH,
        Some("CWE-78"),
        "Use of exec() runs arbitrary code.",
        "Avoid exec(); dispatch to known functions instead."
    ),
    rule!(
        "B307",
        "eval-used",
        &[PY],
        S,
        MED,
        CH,
        Some("CWE-78"),
        "Use of eval() runs arbitrary code.",
        "Use ast.literal_eval() for data, or explicit parsing."
    ),
    rule!(
        "B602",
        "subprocess-shell-true",
        &[PY],
        S,
        H,
        CH,
        Some("CWE-78"),
        "subprocess call with shell=True is open to shell injection.",
        "Pass an argument list and keep shell=False."
    ),
    rule!(
        "B605",
        "start-process-with-shell",
        &[PY],
        S,
        H,
        CH,
        Some("CWE-78"),
        "os.system/os.popen start a process through the shell.",
        "Use subprocess.run([...]) with an argument list."
    ),
    rule!(
        "B105",
        "hardcoded-password-string",
        &[PY],
        S,
        L,
        CM,
        Some("CWE-259"),
        "Possible hardcoded password assigned or compared to a string literal.",
        "Load secrets from the environment or a secret store."
    ),
    rule!(
        "B106",
        "hardcoded-password-funcarg",
        &[PY],
        S,
        L,
        CM,
        Some("CWE-259"),
        "Possible hardcoded password passed as a keyword argument.",
        "Load secrets from the environment or a secret store."
    ),
    rule!(
        "B301",
        "pickle",
        &[PY],
        S,
        MED,
        CH,
        Some("CWE-502"),
        "pickle can execute arbitrary code while loading untrusted data.",
        "Use json or another data-only format for untrusted input."
    ),
    rule!(
        "B324",
        "hashlib-insecure-hash",
        &[PY],
        S,
        H,
        CH,
        Some("CWE-327"),
        "MD5/SHA-1 are broken for security purposes.",
        "Use hashlib.sha256() or better, or pass usedforsecurity=False for non-security use."
    ),
    rule!(
        "B506",
        "yaml-load",
        &[PY],
        S,
        MED,
        CH,
        Some("CWE-20"),
        "yaml.load without a SafeLoader can build arbitrary objects.",
        "Use yaml.safe_load() or Loader=yaml.SafeLoader."
    ),
    rule!(
        "B608",
        "hardcoded-sql-expressions",
        &[PY],
        S,
        MED,
        CL,
        Some("CWE-89"),
        "SQL query built from strings is open to SQL injection.",
        "Use parameterised queries (cursor.execute(sql, params))."
    ),
    rule!(
        "B501",
        "request-with-no-cert-validation",
        &[PY],
        S,
        H,
        CH,
        Some("CWE-295"),
        "HTTP request with verify=False disables TLS certificate checks.",
        "Keep certificate verification on (verify=True or a CA bundle path)."
    ),
    rule!(
        "B113",
        "request-without-timeout",
        &[PY],
        S,
        MED,
        CL,
        Some("CWE-400"),
        "HTTP request without a timeout can hang forever.",
        "Pass timeout=<seconds> to every requests call."
    ),
    rule!(
        "B201",
        "flask-debug-true",
        &[PY],
        S,
        H,
        CM,
        Some("CWE-94"),
        "Flask app run with debug=True exposes the Werkzeug debugger.",
        "Never enable debug mode outside local development; read it from configuration."
    ),
    // More bandit tests (plugins and blacklists)
    rule!(
        "B103",
        "set-bad-file-permissions",
        &[PY],
        S,
        MED,
        CH,
        Some("CWE-732"),
        "chmod sets a permissive mode (group/other write or execute).",
        "Use the narrowest mode that works (e.g. 0o600 or 0o644)."
    ),
    rule!(
        "B104",
        "hardcoded-bind-all-interfaces",
        &[PY],
        S,
        MED,
        CM,
        Some("CWE-605"),
        "Possible binding to all interfaces (\"0.0.0.0\").",
        "Bind to a specific interface, or read the address from configuration."
    ),
    rule!(
        "B108",
        "hardcoded-tmp-directory",
        &[PY],
        S,
        MED,
        CM,
        Some("CWE-377"),
        "Probable insecure use of a hard-coded temporary file or directory.",
        "Use the tempfile module (mkstemp, TemporaryDirectory)."
    ),
    rule!(
        "B202",
        "tarfile-unsafe-members",
        &[PY],
        S,
        H,
        CH,
        Some("CWE-22"),
        "tarfile.extractall without member validation allows path traversal.",
        "Pass filter='data' (Python 3.12+) or members= a function that vets each member."
    ),
    rule!(
        "B302",
        "marshal",
        &[PY],
        S,
        MED,
        CH,
        Some("CWE-502"),
        "marshal can be unsafe when loading untrusted data.",
        "Use json or another data-only format for untrusted input."
    ),
    rule!(
        "B303",
        "insecure-hash-function",
        &[PY],
        S,
        MED,
        CH,
        Some("CWE-327"),
        "Use of an insecure MD2, MD4, MD5 or SHA-1 hash function.",
        "Use SHA-256 or better."
    ),
    rule!(
        "B304",
        "insecure-cipher",
        &[PY],
        S,
        H,
        CH,
        Some("CWE-327"),
        "Use of an insecure cipher (ARC2, ARC4, Blowfish, DES, XOR, CAST5, IDEA, SEED, TripleDES).",
        "Use AES (e.g. AES-GCM) or ChaCha20-Poly1305."
    ),
    rule!(
        "B305",
        "insecure-cipher-mode",
        &[PY],
        S,
        MED,
        CH,
        Some("CWE-327"),
        "Use of the insecure ECB cipher mode.",
        "Use an authenticated mode such as GCM."
    ),
    rule!(
        "B306",
        "mktemp-q",
        &[PY],
        S,
        MED,
        CH,
        Some("CWE-377"),
        "tempfile.mktemp is insecure (race between name and creation).",
        "Use tempfile.mkstemp() or NamedTemporaryFile."
    ),
    rule!(
        "B308",
        "mark-safe",
        &[PY],
        S,
        MED,
        CH,
        Some("CWE-79"),
        "mark_safe may expose cross-site scripting.",
        "Escape untrusted data; use format_html()."
    ),
    rule!(
        "B310",
        "urllib-urlopen",
        &[PY],
        S,
        MED,
        CH,
        Some("CWE-22"),
        "urlopen accepts file:/ and custom schemes.",
        "Check the URL scheme (http/https only) before opening it."
    ),
    rule!(
        "B312",
        "telnetlib",
        &[PY],
        S,
        H,
        CH,
        Some("CWE-319"),
        "Telnet sends everything in clear text.",
        "Use SSH or another encrypted protocol."
    ),
    rule!(
        "B313",
        "xml-bad-celementtree",
        &[PY],
        S,
        MED,
        CH,
        Some("CWE-20"),
        "xml.etree.cElementTree is vulnerable to XML attacks on untrusted data.",
        "Use defusedxml, or call defusedxml.defuse_stdlib()."
    ),
    rule!(
        "B314",
        "xml-bad-elementtree",
        &[PY],
        S,
        MED,
        CH,
        Some("CWE-20"),
        "xml.etree.ElementTree is vulnerable to XML attacks on untrusted data.",
        "Use defusedxml, or call defusedxml.defuse_stdlib()."
    ),
    rule!(
        "B315",
        "xml-bad-expatreader",
        &[PY],
        S,
        MED,
        CH,
        Some("CWE-20"),
        "xml.sax.expatreader is vulnerable to XML attacks on untrusted data.",
        "Use defusedxml, or call defusedxml.defuse_stdlib()."
    ),
    rule!(
        "B316",
        "xml-bad-expatbuilder",
        &[PY],
        S,
        MED,
        CH,
        Some("CWE-20"),
        "xml.dom.expatbuilder is vulnerable to XML attacks on untrusted data.",
        "Use defusedxml, or call defusedxml.defuse_stdlib()."
    ),
    rule!(
        "B317",
        "xml-bad-sax",
        &[PY],
        S,
        MED,
        CH,
        Some("CWE-20"),
        "xml.sax is vulnerable to XML attacks on untrusted data.",
        "Use defusedxml, or call defusedxml.defuse_stdlib()."
    ),
    rule!(
        "B318",
        "xml-bad-minidom",
        &[PY],
        S,
        MED,
        CH,
        Some("CWE-20"),
        "xml.dom.minidom is vulnerable to XML attacks on untrusted data.",
        "Use defusedxml, or call defusedxml.defuse_stdlib()."
    ),
    rule!(
        "B319",
        "xml-bad-pulldom",
        &[PY],
        S,
        MED,
        CH,
        Some("CWE-20"),
        "xml.dom.pulldom is vulnerable to XML attacks on untrusted data.",
        "Use defusedxml, or call defusedxml.defuse_stdlib()."
    ),
    rule!(
        "B321",
        "ftplib",
        &[PY],
        S,
        H,
        CH,
        Some("CWE-319"),
        "FTP sends everything, credentials included, in clear text.",
        "Use SFTP or FTPS."
    ),
    rule!(
        "B323",
        "unverified-context",
        &[PY],
        S,
        MED,
        CH,
        Some("CWE-295"),
        "ssl._create_unverified_context disables certificate checks.",
        "Use ssl.create_default_context()."
    ),
    rule!(
        "B401",
        "import-telnetlib",
        &[PY],
        S,
        H,
        CH,
        Some("CWE-319"),
        "Import of telnetlib: Telnet is clear text.",
        "Use SSH or another encrypted protocol."
    ),
    rule!(
        "B402",
        "import-ftplib",
        &[PY],
        S,
        H,
        CH,
        Some("CWE-319"),
        "Import of ftplib: FTP is clear text.",
        "Use SFTP or FTPS."
    ),
    rule!(
        "B411",
        "import-xmlrpclib",
        &[PY],
        S,
        H,
        CH,
        Some("CWE-20"),
        "XML-RPC parsing of untrusted data is vulnerable to XML attacks.",
        "Call defusedxml.xmlrpc.monkey_patch() first."
    ),
    rule!(
        "B412",
        "import-httpoxy",
        &[PY],
        S,
        H,
        CH,
        Some("CWE-20"),
        "CGI handlers are exposed to httpoxy (the Proxy header).",
        "Avoid CGI; use a WSGI server."
    ),
    rule!(
        "B413",
        "import-pycrypto",
        &[PY],
        S,
        H,
        CH,
        Some("CWE-327"),
        "pycrypto is unmaintained and has known vulnerabilities.",
        "Use pyca/cryptography."
    ),
    rule!(
        "B415",
        "import-pyghmi",
        &[PY],
        S,
        H,
        CH,
        Some("CWE-319"),
        "IPMI (pyghmi) is a clear-text protocol.",
        "Use an encrypted management protocol."
    ),
    rule!(
        "B604",
        "any-other-function-with-shell-equals-true",
        &[PY],
        S,
        MED,
        CL,
        Some("CWE-78"),
        "Function call with shell=True: possible shell injection.",
        "Pass an argument list and keep shell=False."
    ),
    rule!(
        "B701",
        "jinja2-autoescape-false",
        &[PY],
        S,
        H,
        CH,
        Some("CWE-94"),
        "jinja2 Environment without autoescape exposes cross-site scripting.",
        "Pass autoescape=True or select_autoescape()."
    ),
    rule!(
        "B704",
        "markupsafe-markup-xss",
        &[PY],
        S,
        MED,
        CH,
        Some("CWE-79"),
        "markupsafe.Markup on dynamic content does no escaping (cross-site scripting).",
        "Build Markup from a literal and interpolate data into it, or use escape()."
    ),
    // JavaScript security
    rule!(
        "JS001",
        "eval-used",
        &[JS],
        S,
        H,
        CH,
        Some("CWE-95"),
        "Use of eval() runs arbitrary code.",
        "Parse data with JSON.parse() or dispatch to known functions."
    ),
    rule!(
        "JS002",
        "new-function",
        &[JS],
        S,
        H,
        CH,
        Some("CWE-95"),
        "new Function() compiles a string into code.",
        "Avoid building code from strings; use closures."
    ),
    rule!(
        "JS003",
        "inner-html-assignment",
        &[JS],
        S,
        H,
        CM,
        Some("CWE-79"),
        "Assigning HTML (innerHTML/outerHTML/document.write) is open to cross-site scripting.",
        "Use textContent, or sanitise with a vetted library (DOMPurify)."
    ),
    rule!(
        "JS004",
        "child-process-exec-injection",
        &[JS],
        S,
        H,
        CM,
        Some("CWE-78"),
        "child_process exec with a concatenated or template command is open to shell injection.",
        "Use execFile/spawn with an argument array."
    ),
    rule!(
        "JS005",
        "hardcoded-secret",
        &[JS],
        S,
        MED,
        CM,
        Some("CWE-798"),
        "Possible hardcoded credential in a string literal.",
        "Load secrets from the environment or a secret store."
    ),
    // Java security
    rule!(
        "JAVA001",
        "runtime-exec",
        &[JAVA],
        S,
        H,
        CM,
        Some("CWE-78"),
        "Runtime.exec() runs an external command.",
        "Use ProcessBuilder with a fixed argument list; never pass user input to a shell."
    ),
    rule!(
        "JAVA002",
        "sql-concatenation",
        &[JAVA],
        S,
        H,
        CM,
        Some("CWE-89"),
        "SQL built by string concatenation is passed to a query method.",
        "Use PreparedStatement with ? placeholders."
    ),
    rule!(
        "JAVA003",
        "weak-message-digest",
        &[JAVA],
        S,
        MED,
        CH,
        Some("CWE-327"),
        "MessageDigest with MD5/SHA-1 is broken for security purposes.",
        "Use SHA-256 or stronger."
    ),
    rule!(
        "JAVA004",
        "object-input-stream",
        &[JAVA],
        S,
        H,
        CM,
        Some("CWE-502"),
        "ObjectInputStream deserialises arbitrary objects.",
        "Avoid Java serialisation for untrusted data, or use an ObjectInputFilter allow-list."
    ),
    // Go security
    rule!(
        "GO001",
        "exec-shell-command",
        &[GO],
        S,
        H,
        CH,
        Some("CWE-78"),
        "exec.Command runs a shell with -c.",
        "Run the program directly with an argument list."
    ),
    rule!(
        "GO002",
        "sql-sprintf",
        &[GO],
        S,
        H,
        CM,
        Some("CWE-89"),
        "SQL built with fmt.Sprintf is open to SQL injection.",
        "Use placeholders (db.Query(sql, args...))."
    ),
    rule!(
        "GO003",
        "weak-hash",
        &[GO],
        S,
        MED,
        CH,
        Some("CWE-328"),
        "crypto/md5 or crypto/sha1 is broken for security purposes.",
        "Use crypto/sha256 or stronger."
    ),
    rule!(
        "GO004",
        "insecure-skip-verify",
        &[GO],
        S,
        H,
        CH,
        Some("CWE-295"),
        "TLS config with InsecureSkipVerify: true disables certificate checks.",
        "Keep verification on; configure RootCAs instead."
    ),
    // Rust security
    rule!(
        "RS001",
        "unsafe-block",
        &[RS],
        S,
        MED,
        CH,
        Some("CWE-119"),
        "unsafe block: memory safety rests on manual invariants.",
        "Prefer a safe abstraction; document the invariants in a // SAFETY: comment."
    ),
    rule!(
        "RS002",
        "command-shell",
        &[RS],
        S,
        H,
        CM,
        Some("CWE-78"),
        "Command::new(\"sh\") with -c runs a shell command line.",
        "Run the program directly with .arg()/.args()."
    ),
    rule!(
        "RS003",
        "unwrap-outside-tests",
        &[RS],
        M,
        L,
        CH,
        Some("CWE-248"),
        "unwrap()/expect() panics on error outside tests.",
        "Propagate the error with ? or handle it."
    ),
    // Performance
    rule!(
        "PERF001",
        "range-len",
        &[PY],
        P,
        L,
        CH,
        None,
        "Iterating over range(len(x)) instead of the sequence.",
        "Iterate directly, or use enumerate(x) when the index is needed."
    ),
    rule!(
        "PERF002",
        "string-concat-in-loop",
        &[PY, JS, JAVA, GO],
        P,
        MED,
        CM,
        None,
        "String built by concatenation inside a loop (quadratic copying).",
        "Collect parts and join once (str.join, Array.join, StringBuilder, strings.Builder)."
    ),
    rule!(
        "PERF003",
        "regex-compile-in-loop",
        ALL,
        P,
        MED,
        CH,
        None,
        "Regular expression compiled inside a loop.",
        "Compile the pattern once, outside the loop."
    ),
    rule!(
        "PERF004",
        "blocking-sleep-in-async",
        &[PY, RS],
        P,
        H,
        CH,
        None,
        "Blocking sleep inside async code stalls the event loop.",
        "Use asyncio.sleep() / tokio::time::sleep().await."
    ),
    // Smells
    rule!(
        "SMELL001",
        "empty-function",
        ALL,
        M,
        L,
        CM,
        None,
        "Function body is empty.",
        "Implement it, or raise/return an explicit 'not implemented' error."
    ),
    rule!(
        "SMELL002",
        "bare-except",
        &[PY],
        M,
        MED,
        CH,
        Some("CWE-396"),
        "Bare except: catches everything, including KeyboardInterrupt and SystemExit.",
        "Catch the specific exceptions you expect."
    ),
    rule!(
        "SMELL003",
        "swallowed-exception",
        &[PY, JS, JAVA],
        M,
        MED,
        CH,
        Some("CWE-390"),
        "Exception caught and silently ignored.",
        "Handle the error or at least log it."
    ),
    rule!(
        "SMELL004",
        "wildcard-import",
        &[PY, JAVA, GO, RS],
        M,
        L,
        CH,
        None,
        "Wildcard import hides where names come from.",
        "Import the names you use explicitly."
    ),
    rule!(
        "SMELL005",
        "too-many-parameters",
        ALL,
        M,
        L,
        CH,
        None,
        "Function has more than 5 parameters.",
        "Group related parameters into a struct/object."
    ),
    rule!(
        "SMELL006",
        "long-function",
        ALL,
        M,
        MED,
        CH,
        None,
        "Function has more than 60 lines of code (NLOC).",
        "Split it into smaller functions."
    ),
    rule!(
        "SMELL007",
        "high-complexity",
        ALL,
        M,
        MED,
        CH,
        None,
        "Function has cyclomatic complexity above 10.",
        "Break it down into smaller functions; simplify conditions."
    ),
    rule!(
        "SMELL008",
        "deep-nesting",
        ALL,
        M,
        MED,
        CH,
        None,
        "Control flow nested deeper than 4 levels.",
        "Return early, or extract the inner blocks into functions."
    ),
    rule!(
        "SMELL009",
        "todo-comment",
        ALL,
        M,
        L,
        CH,
        None,
        "TODO/FIXME comment left in the code.",
        "Resolve it or track it in the issue tracker."
    ),
];

/// The rule catalogue (for the `code-analysis.rules` endpoint).
pub fn rules() -> &'static [RuleInfo] {
    RULES
}

pub(crate) fn rule(id: &str) -> Option<&'static RuleInfo> {
    RULES.iter().find(|r| r.id == id)
}
