//! The permissions the endpoints declare (checked by the runtime with
//! [`Authorizer`] when `YMERA_AUTH=required`, before any handler runs):
//! `comm:send` (send and dlq.replay, which re-sends), `comm:read` (status,
//! history, conversations, metrics, dlq.list). `communication.send` also
//! requires the envelope's sender to be the credential's owner unless it
//! holds `comm:send_as` ([`check_sender`]). Bearer tokens are verified
//! locally; API key grants are cached for [`GRANT_TTL`] per credential and
//! permission, so a busy sender costs one security round trip per TTL;
//! refusals are never cached.

pub use ymera_core::auth::{Authorizer, GRANT_TTL};

/// Permission to send messages (and replay dead letters).
pub const SEND: &str = "comm:send";
/// Permission to read status, history, conversations and metrics.
pub const READ: &str = "comm:read";
/// Permission to send envelopes whose `sender` is not the credential's
/// owner (an operator, or the platform's agents answering through the
/// service credential).
pub const SEND_AS: &str = "comm:send_as";

/// With auth required, the envelope's `sender` must be the verified owner
/// of the credential unless it holds [`SEND_AS`]: an agent cannot speak
/// for another, nor spend another sender's rate limit. 403 with
/// `details.reason = "sender_mismatch"` otherwise.
pub fn check_sender(
    req: &ymera_core::runtime::ServiceRequest,
    envelope: ymera_core::envelope::Envelope,
) -> Result<ymera_core::envelope::Envelope, ymera_core::Error> {
    if let Some(principal) = req.principal()
        && envelope.sender != principal.owner
        && !principal.has(SEND_AS)
    {
        return Err(ymera_core::Error::forbidden(format!(
            "sender {:?} is not the credential's owner {:?}; sending as another agent needs {SEND_AS}",
            envelope.sender, principal.owner
        ))
        .with_detail("reason", "sender_mismatch"));
    }
    Ok(envelope)
}
