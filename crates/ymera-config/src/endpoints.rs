//! The service's endpoints: one typed handler per subject
//! (`async fn(manager, Call<Permission>, Request) -> Result<Reply, Error>`),
//! each calling its [`ConfigManager`] method. The runtime checks the
//! permission ([`Read`] or [`Write`]) before the body is parsed, parses it
//! strictly and refuses replies over `MAX_MESSAGE_SIZE` with 413.

use std::sync::Arc;

use ymera_core::Error;
use ymera_core::runtime::{Call, Raw, ServiceBuilder};

use crate::NAME;
use crate::auth::{Read, Write};
use crate::manager::ConfigManager;
use crate::model::*;

type Manager = Arc<ConfigManager>;

/// The service's endpoints on `manager`.
pub fn builder(manager: &Manager) -> ServiceBuilder {
    ServiceBuilder::new(
        NAME,
        env!("CARGO_PKG_VERSION"),
        "Config manager: versioned, validated, hot-reloaded agent configuration",
    )
    .route("config.get", manager, get)
    .route("config.set", manager, set)
    .route("config.delete", manager, delete)
    .route("config.history", manager, history)
    .route("config.diff", manager, diff)
    .route("config.rollback", manager, rollback)
    .route("config.schema.set", manager, schema_set)
    .route("config.schema.get", manager, schema_get)
    .route("config.export", manager, export)
    .route("config.import", manager, import)
    .route("config.template.set", manager, template_set)
    .route("config.template.apply", manager, template_apply)
    .route("config.metrics", manager, metrics)
}

/// The audit actor of a write: the credential's verified owner when auth is
/// on, otherwise the request's `actor` field.
fn actor(call: &Call<Write>, given: Option<String>) -> Option<String> {
    call.owner().map(str::to_owned).or(given)
}

async fn get(m: Manager, _: Call<Read>, req: GetRequest) -> Result<GetResponse, Error> {
    m.get(req).await
}

async fn set(m: Manager, call: Call<Write>, mut req: SetRequest) -> Result<WriteResponse, Error> {
    req.actor = actor(&call, req.actor);
    m.set(req).await
}

async fn delete(
    m: Manager,
    call: Call<Write>,
    mut req: DeleteRequest,
) -> Result<WriteResponse, Error> {
    req.actor = actor(&call, req.actor);
    m.delete(req).await
}

async fn history(m: Manager, _: Call<Read>, req: HistoryRequest) -> Result<HistoryResponse, Error> {
    m.history(req).await
}

async fn diff(m: Manager, _: Call<Read>, req: DiffRequest) -> Result<DiffResponse, Error> {
    m.diff(req).await
}

async fn rollback(
    m: Manager,
    call: Call<Write>,
    mut req: RollbackRequest,
) -> Result<WriteResponse, Error> {
    req.actor = actor(&call, req.actor);
    m.rollback(req).await
}

async fn schema_set(
    m: Manager,
    call: Call<Write>,
    mut req: SchemaSetRequest,
) -> Result<SchemaResponse, Error> {
    req.actor = actor(&call, req.actor);
    m.set_schema(req).await
}

async fn schema_get(
    m: Manager,
    _: Call<Read>,
    req: SchemaGetRequest,
) -> Result<SchemaResponse, Error> {
    m.get_schema(req).await
}

async fn export(m: Manager, _: Call<Read>, req: ExportRequest) -> Result<Bundle, Error> {
    m.export(req).await
}

async fn import(
    m: Manager,
    call: Call<Write>,
    mut req: ImportRequest,
) -> Result<ImportResponse, Error> {
    req.actor = actor(&call, req.actor);
    m.import(req).await
}

async fn template_set(
    m: Manager,
    call: Call<Write>,
    mut req: TemplateSetRequest,
) -> Result<TemplateSetResponse, Error> {
    req.actor = actor(&call, req.actor);
    m.set_template(req).await
}

async fn template_apply(
    m: Manager,
    call: Call<Write>,
    mut req: TemplateApplyRequest,
) -> Result<WriteResponse, Error> {
    req.actor = actor(&call, req.actor);
    m.apply_template(req).await
}

/// The body is not read.
async fn metrics(m: Manager, _: Call<Read>, _: Raw) -> Result<MetricsResponse, Error> {
    m.metrics().await
}
