//! Templates: `drafting.template.set` and `template.list`, and filling a
//! template's `{{placeholders}}` for `drafting.create`.

use std::collections::BTreeMap;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use ymera_core::Error;
use ymera_core::error::Violation;
use ymera_core::runtime::{Call, OrEmpty};

use super::{Read, Shared, Write, check_id, check_size, check_title};
use crate::store::Template;

/// `drafting.template.set` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSetRequest {
    #[serde(default)]
    template_id: Option<String>,
    name: String,
    #[serde(default)]
    document_type: Option<String>,
    #[serde(default)]
    description: Option<String>,
    content: String,
}

/// `drafting.template.list` request (an empty body is `{}`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TemplateListRequest {
    #[serde(default)]
    document_type: Option<String>,
}

/// `drafting.template.list` reply.
#[derive(Debug, Serialize)]
pub struct TemplateListReply {
    templates: Vec<Template>,
}

/// The placeholder names of a template, in order of first use.
fn placeholders(content: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = content;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let name = after[..end].trim();
        if !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
            && !out.iter().any(|n| n == name)
        {
            out.push(name.to_owned());
        }
        rest = &after[end + 2..];
    }
    out
}

/// The template's content with every placeholder replaced; 422 naming
/// each missing variable.
pub(super) fn fill_template(
    content: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, Error> {
    let names = placeholders(content);
    let missing: Vec<Violation> = names
        .iter()
        .filter(|n| !vars.contains_key(*n))
        .map(|n| Violation::new(format!("/variables/{n}"), "the template needs this value"))
        .collect();
    if !missing.is_empty() {
        return Err(Error::validation(missing));
    }
    let mut out = content.to_owned();
    for name in names {
        let value = vars.get(&name).map(String::as_str).unwrap_or_default();
        out = out.replace(&format!("{{{{{name}}}}}"), value);
        out = out.replace(&format!("{{{{ {name} }}}}"), value);
    }
    Ok(out)
}

pub(super) async fn set(
    state: Shared,
    _call: Call<Write>,
    body: TemplateSetRequest,
) -> Result<Template, Error> {
    let id = body
        .template_id
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    check_id("/template_id", &id)?;
    check_title(&body.name)
        .map_err(|_| Error::validation(vec![Violation::new("/name", "1-500 characters")]))?;
    check_size(&body.content)?;
    let now = Utc::now();
    let t = Template {
        template_id: id,
        name: body.name,
        document_type: body.document_type.unwrap_or_else(|| "document".to_owned()),
        description: body.description,
        placeholders: placeholders(&body.content),
        content: body.content,
        created_at: now,
        updated_at: now,
    };
    state.store.set_template(&t).await
}

pub(super) async fn list(
    state: Shared,
    _call: Call<Read>,
    OrEmpty(body): OrEmpty<TemplateListRequest>,
) -> Result<TemplateListReply, Error> {
    let templates = state.store.templates(body.document_type.as_deref()).await?;
    Ok(TemplateListReply { templates })
}
