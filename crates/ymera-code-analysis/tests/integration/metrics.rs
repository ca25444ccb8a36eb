//! Per-function metrics against values lizard 1.24.3 printed for the same
//! fixtures (`lizard tests/fixtures/metrics/*`).

use ymera_code_analysis::{Language, analyze_source};

use crate::common::fixture;

/// (qualified name, start, end, nloc, ccn, parameters) as lizard reports them.
type Expected = (&'static str, usize, usize, usize, usize, usize);

fn check(file: &str, language: Language, expected: &[Expected]) {
    let report = analyze_source(file, Some(language), &fixture(&format!("metrics/{file}")))
        .expect("analyses");
    let mut got: Vec<(String, usize, usize, usize, usize, usize)> = report
        .functions
        .iter()
        .map(|f| {
            (
                f.qualified_name.clone(),
                f.start_line,
                f.end_line,
                f.nloc,
                f.ccn,
                f.parameter_count,
            )
        })
        .collect();
    let mut want: Vec<(String, usize, usize, usize, usize, usize)> = expected
        .iter()
        .map(|e| (e.0.to_owned(), e.1, e.2, e.3, e.4, e.5))
        .collect();
    want.sort_by_key(|e| e.1);
    got.sort_by_key(|e| e.1);
    assert_eq!(got, want, "{file}");
}

#[test]
fn python_matches_lizard() {
    check(
        "sample.py",
        Language::Python,
        &[
            ("Service.handle", 5, 18, 13, 10, 5),
            ("Service.outer", 20, 25, 3, 2, 2),
            ("Service.outer.inner", 21, 24, 4, 2, 1),
            ("matcher", 28, 33, 6, 3, 1),
        ],
    );
}

#[test]
fn javascript_matches_lizard() {
    check(
        "sample.js",
        Language::JavaScript,
        &[
            ("classify", 1, 16, 16, 8, 2),
            ("handler", 18, 24, 7, 3, 1),
            ("Widget.render", 27, 32, 6, 2, 3),
        ],
    );
}

#[test]
fn java_matches_lizard() {
    check(
        "Sample.java",
        Language::Java,
        &[
            ("Sample.score", 4, 18, 15, 6, 2),
            ("Sample.name", 20, 29, 10, 3, 1),
        ],
    );
}

#[test]
fn go_matches_lizard() {
    check(
        "sample.go",
        Language::Go,
        &[
            ("Server.Handle", 7, 23, 17, 8, 3),
            ("Count", 25, 36, 8, 2, 1),
            ("anonymous__0", 27, 31, 5, 2, 1),
        ],
    );
}

#[test]
fn rust_matches_lizard() {
    check(
        "sample.rs",
        Language::Rust,
        &[
            ("Store.get", 8, 20, 13, 8, 3),
            ("Store.count", 22, 30, 9, 3, 1),
            ("helper", 33, 39, 5, 2, 1),
            ("helper.nested", 35, 37, 3, 2, 1),
        ],
    );
}

#[test]
fn file_and_request_totals() {
    let report =
        analyze_source("sample.py", None, &fixture("metrics/sample.py")).expect("analyses");
    assert_eq!(report.nloc, 27, "lizard's file NLOC");
    assert_eq!(report.summary.function_count, 4);
    assert_eq!(report.summary.total_ccn, 17);
    assert_eq!(report.summary.max_ccn, 10);
    assert!((report.summary.average_ccn - 4.25).abs() < 1e-9);
    assert_eq!(report.summary.rank, 'B');
}

#[test]
fn ranks_follow_radon() {
    use ymera_code_analysis::rank;
    let cases = [
        (1, 'A'),
        (5, 'A'),
        (6, 'B'),
        (10, 'B'),
        (11, 'C'),
        (20, 'C'),
        (21, 'D'),
        (30, 'D'),
        (31, 'E'),
        (40, 'E'),
        (41, 'F'),
    ];
    for (ccn, want) in cases {
        assert_eq!(rank(ccn), want, "ccn {ccn}");
    }
}

#[test]
fn conditions_in_strings_and_comments_do_not_count() {
    let src = "def f(x):\n    s = \"if a and b or c\"  # if x and y\n    return s\n";
    let report = analyze_source("a.py", None, src).expect("analyses");
    assert_eq!(report.functions[0].ccn, 1);
}

#[test]
fn rust_functions_inside_macros_match_lizard() {
    // `fn $name` is not a function to lizard; the others are (figures: lizard 1.24.3).
    check(
        "macros.rs",
        Language::Rust,
        &[
            ("remaining", 5, 7, 3, 1, 1),
            ("pick", 13, 18, 6, 4, 3),
            ("inside_invocation", 23, 27, 5, 2, 1),
            ("outside", 30, 30, 1, 1, 0),
            // Match arms and the `&&` of `$( … ) && *` inside a macro body.
            ("kind", 35, 41, 7, 3, 1),
            ("all", 42, 44, 3, 2, 1),
        ],
    );
}

#[test]
fn rust_trait_declarations_run_to_the_next_body_like_lizard() {
    // lizard: a bodiless `fn one(&self) -> usize;` runs on to the end of the
    // next `{ … }`, absorbing `two` and `after`; `three` absorbs `four`.
    check(
        "traits.rs",
        Language::Rust,
        &[("A.one", 2, 8, 6, 2, 1), ("B.three", 11, 14, 4, 1, 1)],
    );
}

#[test]
fn javascript_binding_candidates_follow_lizard() {
    // (source, CCN lizard 1.24.3 prints for `a`)
    let cases = [
        // `name = (…)`: decisions inside, and the one right after `)`, not counted.
        ("function a() { b = (x && y) || z; }", 1),
        ("function a() { b = (x) || z || w && v; }", 3),
        ("function a() { let b = (x) ?? z; }", 1),
        ("function a() { b = (x && y) ? 1 : 2; }", 1),
        ("function a() { b = (x) ? y || z : w; }", 2),
        (
            "function a(v) { var C = v && v.c,\n  p = (typeof C == 'f' && C.p) || o;\n  return p; }",
            2,
        ),
        // A member or element target is an ordinary assignment.
        ("function a() { b.c = (x && y); }", 2),
        ("function a() { b[0] = (x && y); }", 2),
        // An object key's `:` opens a candidate, a ternary's or a case's does not.
        ("function a() { o = { k: (x) || z, m: y || w }; }", 2),
        ("function a() { return c ? 1 : (x && y); }", 3),
        ("function a(v) { return v ? f(v) : (v === 0 ? v : 0); }", 3),
        ("function a() { switch (q) { case 1: (x && y); } }", 3),
    ];
    for (source, ccn) in cases {
        let report = analyze_source("a.js", None, source).expect("analyses");
        let f = report
            .functions
            .iter()
            .find(|f| f.name == "a")
            .expect("function a");
        assert_eq!(f.ccn, ccn, "{source}");
    }
}

#[test]
fn python_fstring_interpolations_are_code() {
    // (source, CCN lizard 1.24.3 prints for `a`): lizard re-reads every `{…}`
    // of an f-string as Python code (its issue #317); a plain string's braces
    // and the text around the interpolations stay opaque.
    let cases = [
        (
            "def a(d):\n    print(f\"mode {'on' if d else 'off'}\")\n",
            2,
        ),
        ("def a(x, y):\n    return f\"{x or y}://{x and y}\"\n", 3),
        ("def a(x, y):\n    return \"{x or y}\"\n", 1),
        ("def a(x, y):\n    return f\"{{x or y}} if {x}\"\n", 1),
        (
            "def a(x, y):\n    return f'''{x if y else f\"{y or x}\"}'''\n",
            3,
        ),
        ("def a(x):\n    return f\"{x!r:>10} or {x}\"\n", 1),
    ];
    for (source, ccn) in cases {
        let report = analyze_source("a.py", None, source).expect("analyses");
        let f = report
            .functions
            .iter()
            .find(|f| f.name == "a")
            .expect("function a");
        assert_eq!(f.ccn, ccn, "{source}");
    }
}

#[test]
fn a_line_counts_for_the_function_owning_its_first_token() {
    // `}()` closes the literal and goes on in `f`: lizard 1.24.3 counts the
    // line for the literal only (f 5 NLOC, anonymous__0 3).
    let src = "package p\n\nfunc f(v int) error {\n\tdefer func() {\n\t\tx()\n\t}()\n\ty(v)\n\treturn nil\n}\n";
    let report = analyze_source("a.go", None, src).expect("analyses");
    let nloc: Vec<(&str, usize)> = report
        .functions
        .iter()
        .map(|f| (f.qualified_name.as_str(), f.nloc))
        .collect();
    assert!(nloc.contains(&("f", 5)), "{nloc:?}");
    assert!(nloc.contains(&("anonymous__0", 3)), "{nloc:?}");
}
