//! bandit's inline suppression, read the way bandit 1.9.4 reads it
//! (`bandit/core/manager.py`, `_parse_nosec_comment`; `core/tester.py`):
//!
//! - a comment containing `#`, optional whitespace and `nosec` (case matters),
//!   then an optional `:`, whitespace and a list of tests up to the next `#`;
//! - the list is split into runs of `ID[,ID…]` (a run ends at a space: of
//!   `B602,B607` only the last, `B607`, counts — bandit's regex keeps the last
//!   repetition); each item is a bandit test id (`B602`, exact case) or a test
//!   name (`subprocess_popen_with_shell_equals_true`); anything else is dropped;
//! - no valid test left (`# nosec`, `# nosec: look here`, `# nosec b602`) is a
//!   blanket suppression of every bandit test on the line;
//! - a finding is checked against the comment on its own line and against the
//!   first line of its node's line range that has one (the union of both).
//!
//! Only findings of rules that carry a bandit id (`B…`) are suppressed, since
//! those are the tests `nosec` speaks of; `ymera: ignore[RULE]` covers the rest.

use std::collections::{BTreeMap, BTreeSet};

use crate::syntax::Syntax;
use crate::tokens::is_comment_kind;

/// bandit 1.9.4's tests and blacklist entries: (name, id).
const BANDIT_TESTS: &[(&str, &str)] = &[
    ("assert_used", "B101"),
    ("exec_used", "B102"),
    ("set_bad_file_permissions", "B103"),
    ("hardcoded_bind_all_interfaces", "B104"),
    ("hardcoded_password_string", "B105"),
    ("hardcoded_password_funcarg", "B106"),
    ("hardcoded_password_default", "B107"),
    ("hardcoded_tmp_directory", "B108"),
    ("try_except_pass", "B110"),
    ("try_except_continue", "B112"),
    ("request_without_timeout", "B113"),
    ("flask_debug_true", "B201"),
    ("tarfile_unsafe_members", "B202"),
    ("pickle", "B301"),
    ("marshal", "B302"),
    ("md5", "B303"),
    ("ciphers", "B304"),
    ("cipher_modes", "B305"),
    ("mktemp_q", "B306"),
    ("eval", "B307"),
    ("mark_safe", "B308"),
    ("urllib_urlopen", "B310"),
    ("random", "B311"),
    ("telnetlib", "B312"),
    ("xml_bad_cElementTree", "B313"),
    ("xml_bad_ElementTree", "B314"),
    ("xml_bad_expatreader", "B315"),
    ("xml_bad_expatbuilder", "B316"),
    ("xml_bad_sax", "B317"),
    ("xml_bad_minidom", "B318"),
    ("xml_bad_pulldom", "B319"),
    ("ftplib", "B321"),
    ("unverified_context", "B323"),
    ("hashlib_insecure_functions", "B324"),
    ("import_telnetlib", "B401"),
    ("import_ftplib", "B402"),
    ("import_pickle", "B403"),
    ("import_subprocess", "B404"),
    ("import_xml_etree", "B405"),
    ("import_xml_sax", "B406"),
    ("import_xml_expat", "B407"),
    ("import_xml_minidom", "B408"),
    ("import_xml_pulldom", "B409"),
    ("import_xmlrpclib", "B411"),
    ("import_httpoxy", "B412"),
    ("import_pycrypto", "B413"),
    ("import_pyghmi", "B415"),
    ("request_with_no_cert_validation", "B501"),
    ("ssl_with_bad_version", "B502"),
    ("ssl_with_bad_defaults", "B503"),
    ("ssl_with_no_version", "B504"),
    ("weak_cryptographic_key", "B505"),
    ("yaml_load", "B506"),
    ("ssh_no_host_key_verification", "B507"),
    ("snmp_insecure_version", "B508"),
    ("snmp_weak_cryptography", "B509"),
    ("paramiko_calls", "B601"),
    ("subprocess_popen_with_shell_equals_true", "B602"),
    ("subprocess_without_shell_equals_true", "B603"),
    ("any_other_function_with_shell_equals_true", "B604"),
    ("start_process_with_a_shell", "B605"),
    ("start_process_with_no_shell", "B606"),
    ("start_process_with_partial_path", "B607"),
    ("hardcoded_sql_expressions", "B608"),
    ("linux_commands_wildcard_injection", "B609"),
    ("django_extra_used", "B610"),
    ("django_rawsql_used", "B611"),
    ("logging_config_insecure_listen", "B612"),
    ("trojansource", "B613"),
    ("pytorch_load", "B614"),
    ("huggingface_unsafe_download", "B615"),
    ("jinja2_autoescape_false", "B701"),
    ("use_of_mako_templates", "B702"),
    ("django_mark_safe", "B703"),
    ("markupsafe_markup_xss", "B704"),
];

/// A test id or name from a nosec list, as bandit resolves it.
fn resolve(item: &str) -> Option<&'static str> {
    if item == "B001" {
        return Some("B001");
    }
    BANDIT_TESTS
        .iter()
        .find(|(name, id)| *id == item || *name == item)
        .map(|(_, id)| *id)
}

/// What a comment says: `None` without `nosec`, an empty set for a blanket
/// `nosec`, else the bandit test ids it names.
pub(crate) fn parse(comment: &str) -> Option<BTreeSet<&'static str>> {
    let tests = comment.match_indices('#').find_map(|(at, _)| {
        let rest = comment.get(at + 1..)?.trim_start();
        let rest = rest.strip_prefix("nosec")?;
        let rest = rest.strip_prefix(':').unwrap_or(rest).trim_start();
        Some(rest.split('#').next().unwrap_or(""))
    })?;
    let mut ids = BTreeSet::new();
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut rest = tests;
    while let Some(c) = rest.chars().next() {
        if !is_word(c) {
            rest = rest.get(c.len_utf8()..).unwrap_or("");
            continue;
        }
        // One run: ITEM(,ITEM)*,? — bandit keeps the run's last item.
        let mut last = "";
        loop {
            let len = rest.find(|c: char| !is_word(c)).unwrap_or(rest.len());
            if len == 0 {
                break;
            }
            // `B\d+` is tried before `[a-z\d_]+`: `B602x` is `B602`, then `x`.
            let digits = rest.get(1..).map_or(0, |r| {
                r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len())
            });
            let len = if rest.starts_with(['B', 'b']) && digits > 0 {
                1 + digits
            } else {
                len
            };
            last = rest.get(..len).unwrap_or("");
            rest = rest.get(len..).unwrap_or("");
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            }
        }
        if let Some(id) = resolve(last) {
            ids.insert(id);
        }
    }
    Some(ids)
}

/// The nosec comments of a Python file per 0-based line.
pub(crate) fn lines(syntax: &Syntax<'_>) -> BTreeMap<usize, BTreeSet<&'static str>> {
    let mut map = BTreeMap::new();
    for (node, &kind) in syntax.nodes.iter().zip(&syntax.kinds) {
        if is_comment_kind(kind)
            && let Some(ids) = parse(syntax.text(*node))
        {
            map.insert(node.start_position().row, ids);
        }
    }
    map
}

/// Whether bandit would drop a finding of `rule` on `row..=end_row`.
pub(crate) fn suppresses(
    nosec: &BTreeMap<usize, BTreeSet<&'static str>>,
    rule: &str,
    row: usize,
    end_row: usize,
) -> bool {
    if nosec.is_empty() || resolve(rule).is_none() {
        return false;
    }
    let own = nosec.get(&row);
    let range = nosec
        .range(row..=end_row.max(row))
        .next()
        .map(|(_, ids)| ids);
    match (own, range) {
        (None, None) => false,
        (own, range) => {
            let ids: BTreeSet<&str> = own.into_iter().chain(range).flatten().copied().collect();
            ids.is_empty() || ids.contains(rule)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn reads_comments_like_bandit() {
        let ids = |c: &str| parse(c).map(|s| s.into_iter().collect::<Vec<_>>());
        assert_eq!(ids("# a comment"), None);
        assert_eq!(ids("# NOSEC"), None);
        assert_eq!(ids("# nosec"), Some(vec![]));
        assert_eq!(ids("#nosec"), Some(vec![]));
        assert_eq!(ids("# noqa # nosec B602"), Some(vec!["B602"]));
        assert_eq!(ids("# nosec: B602, B607"), Some(vec!["B602", "B607"]));
        assert_eq!(ids("# nosec B602,B607"), Some(vec!["B607"]));
        assert_eq!(
            ids("# nosec B602, start_process_with_a_shell"),
            Some(vec!["B602", "B605"])
        );
        assert_eq!(ids("# nosec b602"), Some(vec![]));
        assert_eq!(ids("# nosec: reviewed by ops"), Some(vec![]));
        assert_eq!(ids("# nosec B602 # reviewed"), Some(vec!["B602"]));
        assert_eq!(ids("# nosecurity"), Some(vec![]));
        assert_eq!(ids("# nosec B602x"), Some(vec![]));
    }
}
