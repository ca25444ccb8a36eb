//! Export of a draft as Markdown, sanitised HTML, JSON or plain text.

use pulldown_cmark::{Event, Options, Parser, TagEnd, html};
use serde::{Deserialize, Serialize};

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// The Markdown source with a title heading.
    #[default]
    Markdown,
    /// HTML rendered from Markdown, sanitised with ammonia.
    Html,
    /// The draft as JSON.
    Json,
    /// Plain text: Markdown rendered, markup removed.
    Text,
}

impl ExportFormat {
    /// The MIME type of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Markdown => "text/markdown; charset=utf-8",
            ExportFormat::Html => "text/html; charset=utf-8",
            ExportFormat::Json => "application/json",
            ExportFormat::Text => "text/plain; charset=utf-8",
        }
    }
}

fn options() -> Options {
    Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_TASKLISTS
}

/// Markdown → HTML with nothing executable left: ammonia's allow-list drops
/// `<script>`, `<style>`, event-handler attributes, `javascript:` URLs.
pub fn to_html(markdown: &str) -> String {
    let mut raw = String::with_capacity(markdown.len() * 2);
    html::push_html(&mut raw, Parser::new_ext(markdown, options()));
    ammonia::Builder::default()
        .link_rel(Some("noopener noreferrer nofollow"))
        .clean(&raw)
        .to_string()
}

/// A standalone HTML document with an escaped title.
pub fn html_document(title: &str, markdown: &str) -> String {
    let title = escape(title);
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n<body>\n<h1>{title}</h1>\n{}</body></html>\n",
        to_html(markdown)
    )
}

/// Escapes text for HTML content and attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The text of the rendered Markdown, without markup.
pub fn to_text(markdown: &str) -> String {
    let mut out = String::with_capacity(markdown.len());
    for event in Parser::new_ext(markdown, options()) {
        match event {
            Event::Text(t) | Event::Code(t) => out.push_str(&t),
            Event::SoftBreak | Event::HardBreak => out.push('\n'),
            Event::End(
                TagEnd::Paragraph
                | TagEnd::Heading(_)
                | TagEnd::Item
                | TagEnd::CodeBlock
                | TagEnd::BlockQuote(_)
                | TagEnd::TableRow,
            ) => out.push_str("\n\n"),
            _ => {}
        }
    }
    let trimmed = out.trim_end();
    format!("{trimmed}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_markdown_loses_everything_executable() {
        let md = "# Hi\n\n<script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n[x](javascript:alert(1)) [y](JaVaScRiPt:alert(1))\n\n<a href=\"#\" onclick=\"evil()\">a</a>\n\n<iframe src=\"//evil\"></iframe><style>*{}</style>";
        let html = to_html(md).to_lowercase();
        for bad in [
            "<script",
            "onerror",
            "href=\"javascript",
            "onclick",
            "<iframe",
            "<style",
        ] {
            assert!(!html.contains(bad), "{bad} survived: {html}");
        }
        assert!(html.contains("<h1>hi</h1>"));
    }

    #[test]
    fn titles_are_escaped() {
        let doc = html_document("A <b>\"bold\"</b> & plan", "x");
        assert!(doc.contains("<title>A &lt;b&gt;&quot;bold&quot;&lt;/b&gt; &amp; plan</title>"));
    }

    #[test]
    fn text_drops_markup() {
        assert_eq!(
            to_text("# T\n\nSome *bold* text."),
            "T\n\nSome bold text.\n"
        );
    }
}
