//! The permissions the endpoints declare (checked by the runtime with
//! [`Authorizer`] when `YMERA_AUTH=required`, before any handler runs):
//! [`SendMessages`] `comm:send` (send and dlq.replay, which re-sends),
//! [`ReadMessages`] `comm:read` (status, history, conversations, metrics,
//! dlq.list). `communication.send` also requires the envelope's sender to
//! be the credential's owner unless it holds [`SendAs`] `comm:send_as`
//! ([`check_sender`]). Bearer tokens are verified locally; API key grants
//! are cached for [`GRANT_TTL`] per credential and permission, so a busy
//! sender costs one security round trip per TTL; refusals are never cached.

pub use ymera_core::auth::{Authorizer, GRANT_TTL};
use ymera_core::envelope::Envelope;
use ymera_core::runtime::Call;

ymera_core::permission!(
    /// Permission to send messages (and replay dead letters).
    pub SendMessages = "comm:send"
);

ymera_core::permission!(
    /// Permission to read status, history, conversations, metrics and the DLQ.
    pub ReadMessages = "comm:read"
);

ymera_core::permission!(
    /// Permission to send envelopes whose `sender` is not the credential's
    /// owner (an operator, or the platform's agents answering through the
    /// service credential). Not an endpoint's: [`check_sender`] asks for it.
    pub SendAs = "comm:send_as"
);

/// With auth required, the envelope's `sender` must be the verified owner
/// of the credential unless it holds [`SendAs`]: an agent cannot speak
/// for another, nor spend another sender's rate limit. 403 with
/// `details.reason = "sender_mismatch"` otherwise.
pub fn check_sender(
    call: &Call<SendMessages>,
    envelope: Envelope,
) -> Result<Envelope, ymera_core::Error> {
    if let Some(principal) = call.principal()
        && envelope.sender != principal.owner
        && !principal.has(SendAs::PERMISSION)
    {
        return Err(ymera_core::Error::forbidden(format!(
            "sender {:?} is not the credential's owner {:?}; sending as another agent needs {}",
            envelope.sender,
            principal.owner,
            SendAs::PERMISSION
        ))
        .with_detail("reason", "sender_mismatch"));
    }
    Ok(envelope)
}
