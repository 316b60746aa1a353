//! Frame times against the wall clock, pure but for reading it: a frame from beyond the
//! wall clock plus `future_tolerance` is screened into a `time_in_future` dead letter
//! ([`screen`]), and a dead letter that tells no usable time is scored where the reader is
//! ([`position_now`]). `frames.rs` applies them to every frame.

use super::decode::Decoded;
use crate::model::{Cursor, DeadLetter};

/// The wall clock in unix microseconds.
pub(super) fn now_us() -> u64 {
    Cursor::now().0
}

/// Microseconds of a duration, saturating.
pub(super) fn duration_us(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Where the reader is when a frame tells no usable time: the newest of the last event time
/// of the session, the dial cursor and the wall clock. Used as the dedupe score of dead
/// letters, so their identity stays in the index as long as a rewound redial can meet the
/// frame again (too high only keeps it longer; too low would write it twice).
pub(super) fn position_now(last_time: Option<u64>, dial_cursor: Option<u64>) -> u64 {
    now_us()
        .max(last_time.unwrap_or(0))
        .max(dial_cursor.unwrap_or(0))
}

/// A frame whose time lies beyond `limit` (the wall clock plus `future_tolerance`) becomes a
/// `time_in_future` dead letter; a dead letter with such a time keeps its reason but loses
/// the time. Nothing from the future reaches the cursor, the dedupe scores or the buckets.
pub(super) fn screen(decoded: Decoded, raw: &[u8], limit: u64) -> Decoded {
    let t = match &decoded {
        Decoded::Event(ev) => ev.time_us(),
        Decoded::Skipped { time_us, .. } => *time_us,
        Decoded::Dead(d) => d.time_us.unwrap_or(0),
    };
    if t <= limit {
        return decoded;
    }
    metrics::counter!("jetstream_ingestor_future_frames_total").increment(1);
    let message = format!(
        "time_us {t} is {:.1} s beyond the wall clock plus jetstream.future_tolerance; not trusted as a position",
        (t - limit) as f64 / 1e6
    );
    match decoded {
        Decoded::Dead(mut d) => {
            d.time_us = None;
            d.message = format!("{}; {message}", d.message);
            Decoded::Dead(d)
        }
        Decoded::Event(ev) => {
            let mut d = DeadLetter::new("time_in_future", message, raw);
            d.did = Some(ev.did().to_owned());
            Decoded::Dead(d)
        }
        Decoded::Skipped { .. } => Decoded::Dead(DeadLetter::new("time_in_future", message, raw)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jetstream::decode::decode_frame;

    #[test]
    fn a_frame_from_the_future_becomes_a_dead_letter_without_a_time() {
        let post = br#"{"did":"did:plc:abc","time_us":4102444800000000,"kind":"commit","commit":{"rev":"3l3qo2vutsw2b","operation":"delete","collection":"app.bsky.feed.post","rkey":"x"}}"#;
        let limit = 1_800_000_000_000_000;
        let Decoded::Dead(d) = screen(decode_frame(post), post, limit) else {
            panic!("a far-future commit must be dead-lettered");
        };
        assert_eq!((d.reason, d.time_us), ("time_in_future", None));
        assert_eq!(d.did.as_deref(), Some("did:plc:abc"));
        assert!(d.message.contains("4102444800000000"), "{}", d.message);

        let kind7 = br#"{"did":"did:plc:abc","time_us":4102444800000000,"kind":7}"#;
        let Decoded::Dead(d) = screen(decode_frame(kind7), kind7, limit) else {
            panic!("dead");
        };
        assert_eq!(
            d.time_us, None,
            "a bad frame keeps its reason, loses the time"
        );
        assert!(d.message.contains("beyond the wall clock"), "{}", d.message);

        let sync = br#"{"did":"did:plc:abc","time_us":4102444800000000,"kind":"sync"}"#;
        assert!(
            matches!(screen(decode_frame(sync), sync, limit), Decoded::Dead(d) if d.reason == "time_in_future")
        );

        let now = br#"{"did":"did:plc:abc","time_us":1700000000000000,"kind":"sync"}"#;
        assert!(matches!(
            screen(decode_frame(now), now, limit),
            Decoded::Skipped { .. }
        ));
    }

    #[test]
    fn a_dead_letter_without_a_time_is_scored_where_the_reader_is() {
        let wall = now_us();
        assert!(position_now(None, None) >= wall);
        assert!(
            position_now(Some(5), Some(3)) >= wall,
            "never below the wall clock"
        );
        assert_eq!(position_now(Some(u64::MAX - 1), Some(3)), u64::MAX - 1);
    }
}
