//! How a session ended: the typed reason ([`EndReason`], whose `as_str()` is the
//! `reason` label of `jetstream_ingestor_sessions_ended_total`, of logs and of
//! `FailoverNote`), what the session learnt on its way ([`SessionEnd`]), and what that means
//! to the endpoint choice ([`SessionEnd::outcome`], pure and tested).

use super::failover::SessionOutcome;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EndReason {
    /// The endpoint and options make no valid URL.
    BadUrl,
    /// The zstd dictionary cannot be loaded.
    BadDictionary,
    ConnectTimeout,
    ConnectFailed,
    /// A WebSocket error: sending (hello, ping, options update) or reading.
    WsError,
    /// The downstream stage (or the in-flight window) is gone: stop reading for good.
    DownstreamGone,
    /// No frame for longer than `idle_timeout`.
    IdleTimeout,
    /// Pause, restart or drain asked for.
    Stopped,
    /// The host sent a close frame.
    ServerClosed,
    /// The WebSocket layer refused a frame over `max_frame_bytes`.
    FrameTooLarge,
    /// The WebSocket layer refused a text frame that is not UTF-8.
    InvalidUtf8,
    /// The connection closed without a close frame.
    Eof,
    /// A probe of an oversize skip got its first frame (all it wanted).
    OversizeProbe,
    /// Replay reached `until`.
    UntilReached,
}

impl EndReason {
    /// The label in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::BadUrl => "bad_url",
            EndReason::BadDictionary => "bad_dictionary",
            EndReason::ConnectTimeout => "connect_timeout",
            EndReason::ConnectFailed => "connect_failed",
            EndReason::WsError => "ws_error",
            EndReason::DownstreamGone => "downstream_gone",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::Stopped => "stopped",
            EndReason::ServerClosed => "server_closed",
            EndReason::FrameTooLarge => "frame_too_large",
            EndReason::InvalidUtf8 => "invalid_utf8",
            EndReason::Eof => "eof",
            EndReason::OversizeProbe => "oversize_probe",
            EndReason::UntilReached => "until_reached",
        }
    }
}

/// How a session ended.
pub(super) struct SessionEnd {
    /// At least one event arrived: the host works, so the backoff resets.
    pub progressed: bool,
    pub reason: EndReason,
    pub error: Option<String>,
    /// Stop redialing (drain requested, or replay reached `until`).
    pub finished: bool,
    /// The WebSocket layer refused a frame, which ended the connection.
    pub refused: Option<RefusedFrame>,
    /// `time_us` of the first and of the last frame that told one.
    pub first_time: Option<u64>,
    pub last_time: Option<u64>,
    /// A frame told a time below the one before it: the host's order was not time order.
    pub disordered: bool,
}

/// A frame the WebSocket layer refused; tungstenite then ends the connection, so a plain
/// redial would meet it again, forever. The read loop dead-letters it and dials past it
/// (`oversize.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RefusedFrame {
    /// The dead letter's reason: `frame_too_large` (over `max_frame_bytes`, payload never
    /// read) or `invalid_utf8` (a text frame that is not UTF-8, bytes not kept).
    pub reason: &'static str,
    /// The frame's size, when known.
    pub size: Option<usize>,
}

impl SessionEnd {
    /// A session that ended before reading anything.
    pub fn failed(reason: EndReason, error: String) -> Self {
        SessionEnd {
            progressed: false,
            reason,
            error: Some(error),
            finished: false,
            refused: None,
            first_time: None,
            last_time: None,
            disordered: false,
        }
    }

    /// What the end means to the endpoint choice (`failover.rs`): a silent host is left; a
    /// deliberate end (stop, probe, a refused frame to get past) counts neither way; a
    /// session with events is healthy; anything else failed.
    pub fn outcome(&self) -> SessionOutcome {
        if self.reason == EndReason::IdleTimeout {
            SessionOutcome::Silent
        } else if matches!(self.reason, EndReason::Stopped | EndReason::OversizeProbe)
            || self.refused.is_some()
        {
            SessionOutcome::Neutral
        } else if self.progressed {
            SessionOutcome::Healthy
        } else {
            SessionOutcome::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(reason: EndReason, progressed: bool, refused: bool) -> SessionEnd {
        SessionEnd {
            progressed,
            reason,
            error: None,
            finished: false,
            refused: refused.then_some(RefusedFrame {
                reason: "frame_too_large",
                size: Some(9),
            }),
            first_time: None,
            last_time: None,
            disordered: false,
        }
    }

    #[test]
    fn a_silent_host_is_silent_with_or_without_events() {
        for progressed in [false, true] {
            assert_eq!(
                end(EndReason::IdleTimeout, progressed, false).outcome(),
                SessionOutcome::Silent
            );
        }
    }

    #[test]
    fn deliberate_ends_and_refused_frames_are_neutral() {
        for reason in [EndReason::Stopped, EndReason::OversizeProbe] {
            assert_eq!(end(reason, false, false).outcome(), SessionOutcome::Neutral);
            assert_eq!(end(reason, true, false).outcome(), SessionOutcome::Neutral);
        }
        assert_eq!(
            end(EndReason::FrameTooLarge, true, true).outcome(),
            SessionOutcome::Neutral
        );
        assert_eq!(
            end(EndReason::InvalidUtf8, false, true).outcome(),
            SessionOutcome::Neutral
        );
    }

    #[test]
    fn other_ends_are_healthy_after_events_and_failed_without() {
        for reason in [
            EndReason::ServerClosed,
            EndReason::Eof,
            EndReason::WsError,
            EndReason::ConnectFailed,
        ] {
            assert_eq!(end(reason, true, false).outcome(), SessionOutcome::Healthy);
            assert_eq!(end(reason, false, false).outcome(), SessionOutcome::Failed);
        }
    }

    #[test]
    fn labels_are_the_metric_names_of_before() {
        let all = [
            (EndReason::BadUrl, "bad_url"),
            (EndReason::BadDictionary, "bad_dictionary"),
            (EndReason::ConnectTimeout, "connect_timeout"),
            (EndReason::ConnectFailed, "connect_failed"),
            (EndReason::WsError, "ws_error"),
            (EndReason::DownstreamGone, "downstream_gone"),
            (EndReason::IdleTimeout, "idle_timeout"),
            (EndReason::Stopped, "stopped"),
            (EndReason::ServerClosed, "server_closed"),
            (EndReason::FrameTooLarge, "frame_too_large"),
            (EndReason::InvalidUtf8, "invalid_utf8"),
            (EndReason::Eof, "eof"),
            (EndReason::OversizeProbe, "oversize_probe"),
            (EndReason::UntilReached, "until_reached"),
        ];
        for (reason, label) in all {
            assert_eq!(reason.as_str(), label);
        }
    }
}
