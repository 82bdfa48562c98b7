//! One pg wire connection, from TLS negotiation to its last message:
//! pgwire's `process_socket` loop, with Loch's bound on the size of a
//! message and a clear end for a connection that breaks the protocol.
//!
//! pgwire reads a message whole before decoding it, and accepts up to
//! 1 GiB for the messages that carry SQL or values (PostgreSQL's limit).
//! Loch reads the length field of the message being received whenever the
//! connection waits for more bytes, and refuses one over
//! [`MAX_MESSAGE_BYTES`] while its body is still arriving (pgwire's framing
//! gives no earlier hook). pgwire's own limits stay the hard ceiling:
//! 1 GiB, and 10,000 bytes for startup, password and the small
//! extended-protocol messages. A message over a bound, or one pgwire cannot
//! decode, ends that connection with `FATAL 08P01` (protocol_violation,
//! PostgreSQL's "invalid message length"), sent before the socket closes;
//! other connections never notice.

use std::fmt::Debug;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::{ClientInfo, PgWireConnectionState, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::handler::LochHandlers;

/// Largest frontend message Loch reads, in bytes (type byte not counted,
/// as in the message's length field): SQL text, a `Bind`'s parameter
/// values. A longer one ends its connection with `FATAL 08P01`.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How long a connection may take to log in (pgwire's own bound).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// After a `FATAL` error for a bad message, how long the rest of what the
/// client sends is read and dropped, so the client reads the error rather
/// than a connection reset.
const LINGER: Duration = Duration::from_secs(2);

/// Serves one connection until the client leaves, breaks the protocol, or
/// an I/O error ends it.
pub(super) async fn serve(
    socket: TcpStream,
    handlers: Arc<LochHandlers>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<()> {
    let startup_timeout = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(startup_timeout);
    let negotiated = tokio::select! {
        _ = &mut startup_timeout => return Ok(()),
        socket = negotiate_tls(socket, tls) => socket?,
    };
    let Some(mut socket) = negotiated else {
        return Ok(());
    };
    let startup = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended = handlers.extended_query_handler();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    let errors = handlers.error_handler();
    loop {
        let logging_in = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let next = std::future::poll_fn(|cx| {
            // Whenever the connection wakes: the message being read may
            // be too long, though not all of it is here.
            if let Some(refusal) = over_bound(socket.state(), socket.read_buffer()) {
                return Poll::Ready(Some(Err(refusal)));
            }
            // pgwire's decoders trust the lengths inside a message and
            // panic on some that lie: that ends this connection only.
            std::panic::catch_unwind(AssertUnwindSafe(|| socket.poll_next_unpin(cx)))
                .unwrap_or_else(|_| Poll::Ready(Some(Err(undecodable()))))
        });
        let next = if logging_in {
            tokio::select! {
                _ = &mut startup_timeout => None,
                next = next => next,
            }
        } else {
            next.await
        };
        let message = match next {
            None | Some(Ok(PgWireFrontendMessage::Terminate(_))) => break,
            Some(Ok(message)) => message,
            Some(Err(PgWireError::IoError(e))) => return Err(e),
            Some(Err(e)) => {
                let info = refusal(&e, socket.state(), socket.read_buffer());
                tracing::info!(
                    peer = %socket.socket_addr(),
                    message = %info.message,
                    buffered = socket.read_buffer().len(),
                    "pg wire: malformed message, connection closed"
                );
                refuse(&mut socket, info).await;
                let _ = tokio::time::timeout(LINGER, drain(socket.get_mut())).await;
                break;
            }
        };
        let is_extended_query = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        if let Err(mut e) = process_message(
            message,
            &mut socket,
            Arc::clone(&startup),
            Arc::clone(&simple),
            Arc::clone(&extended),
            Arc::clone(&copy),
            Arc::clone(&cancel),
        )
        .await
        {
            pgwire::api::ErrorHandler::on_error(errors.as_ref(), &socket, &mut e);
            process_error(&mut socket, e, is_extended_query).await?;
        }
    }
    Ok(())
}

/// Where the length of the message at the front of `buffer` is, and its
/// type byte: a startup packet has none.
fn header(state: PgWireConnectionState, buffer: &[u8]) -> (Option<u8>, Option<i64>) {
    let (kind, at) = match state {
        PgWireConnectionState::AwaitingSslRequest | PgWireConnectionState::AwaitingStartup => {
            (None, 0)
        }
        _ => (buffer.first().copied(), 1),
    };
    let length = buffer
        .get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(|b| i64::from(i32::from_be_bytes(b)));
    (kind, length)
}

/// The error for a message still arriving whose length is over
/// [`MAX_MESSAGE_BYTES`].
fn over_bound(state: PgWireConnectionState, buffer: &[u8]) -> Option<PgWireError> {
    match header(state, buffer) {
        (_, Some(length)) if length > MAX_MESSAGE_BYTES as i64 => Some(
            PgWireError::MessageTooLarge(MAX_MESSAGE_BYTES, usize::try_from(length).ok()?),
        ),
        _ => None,
    }
}

/// A message pgwire's decoder gave up on (it panicked).
fn undecodable() -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_owned(),
        "08P01".to_owned(),
        "invalid message: its contents do not match its length".to_owned(),
    )))
}

/// The `FATAL` error that ends a connection whose message could not be
/// read: what was wrong, and the bound when it was the length.
fn refusal(error: &PgWireError, state: PgWireConnectionState, buffer: &[u8]) -> ErrorInfo {
    let message = match error {
        PgWireError::MessageTooLarge(max, _) => {
            let (kind, length) = header(state, buffer);
            let length = length.map_or_else(|| "?".to_string(), |l| l.to_string());
            let mib = if max >> 20 > 0 {
                format!(" ({} MiB)", max.div_ceil(1 << 20))
            } else {
                String::new()
            };
            format!(
                "invalid message length: {} of {length} bytes is over the limit of {max} \
                 bytes{mib}",
                describe(kind),
            )
        }
        PgWireError::UserError(info) => info.message.clone(),
        other => format!("invalid message: {other}"),
    };
    ErrorInfo::new(
        "FATAL".to_owned(),
        "08P01".to_owned(),
        format!("{message}; the connection is closed"),
    )
}

/// A frontend message by its type byte, for error messages.
fn describe(kind: Option<u8>) -> String {
    match kind {
        None => "a startup packet".into(),
        Some(b'Q') => "a Query message".into(),
        Some(b'P') => "a Parse message".into(),
        Some(b'B') => "a Bind message".into(),
        Some(b'd') => "a CopyData message".into(),
        Some(b'p') => "a password message".into(),
        Some(b) if b.is_ascii_graphic() => format!("a message of type '{}'", char::from(b)),
        Some(b) => format!("a message of type 0x{b:02x}"),
    }
}

/// Sends the `FATAL` error and closes the sending side.
async fn refuse<S>(socket: &mut S, info: ErrorInfo)
where
    S: Sink<PgWireBackendMessage> + Unpin,
    S::Error: Debug,
{
    if let Err(e) = socket
        .send(PgWireBackendMessage::ErrorResponse(info.into()))
        .await
    {
        tracing::debug!(error = ?e, "pg wire: could not send the error");
    }
}

/// Reads and drops what the client still sends, until it closes; the
/// sending side is shut first so the client sees the end of the replies.
async fn drain<T: AsyncRead + AsyncWrite + Unpin>(io: &mut T) {
    let _ = io.shutdown().await;
    let mut sink = [0u8; 8192];
    while let Ok(n) = io.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}
