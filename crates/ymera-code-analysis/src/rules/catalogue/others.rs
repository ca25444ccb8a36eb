//! Security rules of JavaScript, Java, Go and Rust, and the performance and
//! smell rules of every language.

use super::*;

pub(super) static OTHERS: &[RuleInfo] = &[
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
