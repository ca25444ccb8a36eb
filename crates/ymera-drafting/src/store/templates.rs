//! Document templates.

use sqlx::Row;
use ymera_core::Error;

use super::{DraftStore, Template, db, json_strings};

impl DraftStore {
    pub async fn set_template(&self, t: &Template) -> Result<Template, Error> {
        let row = sqlx::query(
            "INSERT INTO draft_templates (template_id, name, document_type, description, content, placeholders, created_at, updated_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$7)
             ON CONFLICT (template_id) DO UPDATE SET name=$2, document_type=$3, description=$4, content=$5, placeholders=$6, updated_at=$7
             RETURNING created_at",
        )
        .bind(&t.template_id)
        .bind(&t.name)
        .bind(&t.document_type)
        .bind(&t.description)
        .bind(&t.content)
        .bind(serde_json::json!(t.placeholders))
        .bind(t.updated_at)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        let mut t = t.clone();
        t.created_at = row.try_get("created_at").map_err(Error::internal)?;
        Ok(t)
    }

    /// Templates, by name.
    pub async fn templates(&self, document_type: Option<&str>) -> Result<Vec<Template>, Error> {
        let rows = sqlx::query(
            "SELECT * FROM draft_templates WHERE ($1::TEXT IS NULL OR document_type=$1) ORDER BY name, template_id LIMIT 1000",
        )
        .bind(document_type)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(template_from_row).collect()
    }

    /// One template, or 404.
    pub async fn template(&self, template_id: &str) -> Result<Template, Error> {
        let row = sqlx::query("SELECT * FROM draft_templates WHERE template_id=$1")
            .bind(template_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or_else(|| Error::not_found(format!("template {template_id} not found")))?;
        template_from_row(&row)
    }
}

fn template_from_row(row: &sqlx::postgres::PgRow) -> Result<Template, Error> {
    let get = |e: sqlx::Error| Error::internal(e);
    Ok(Template {
        template_id: row.try_get("template_id").map_err(get)?,
        name: row.try_get("name").map_err(get)?,
        document_type: row.try_get("document_type").map_err(get)?,
        description: row.try_get("description").map_err(get)?,
        content: row.try_get("content").map_err(get)?,
        placeholders: json_strings(row.try_get("placeholders").map_err(get)?),
        created_at: row.try_get("created_at").map_err(get)?,
        updated_at: row.try_get("updated_at").map_err(get)?,
    })
}
