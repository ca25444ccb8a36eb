//! `GET /v1/collab/{draft_id}`: the y-websocket protocol (built separately;
//! see README.md, "Collab module interface").

/// The collaboration routes (`/v1/collab/{draft_id}`), state applied.
pub fn router(state: crate::AppState) -> axum::Router {
    let _ = state;
    axum::Router::new()
}
