//! `ReorderBuffer`: items leave in the order they arrived, whatever order they finish in.
//! The ordered stages between the reader and the writer (the verifier pool, the bucket
//! router) hand batch work to other threads; a later batch may finish first, yet the writer
//! must receive batches in reader order (each commit stores its batch's cursor). Pure: no
//! actix, no clock; the stage owns the buffer and sends what [`ReorderBuffer::pop_ready`]
//! gives.
//!
//! Rules (each has a test below):
//! - The order out is the order of [`push_ready`](ReorderBuffer::push_ready) and
//!   [`reserve`](ReorderBuffer::reserve) calls. The sequence number is a name for the place,
//!   not a rank: a gap in the numbers is never waited for, and numbers are not sorted.
//! - [`fill`](ReorderBuffer::fill) puts a finished item into the oldest unfilled place with
//!   its number; a number with no unfilled place (never reserved, already filled, or reserved
//!   in a buffer that has since been replaced by a fresh one after a reset) hands the item
//!   back and changes nothing. The stages drop such an item; the reader numbers batches
//!   strictly increasing over its lifetime, so in the pipeline each place has its own number.
//! - A place that is never filled holds everything behind it. The stages fill a place or stop
//!   the process (a worker or shard that is gone): no batch overtakes a lost one.
//! - No capacity of its own: every batch holds a reader credit until it is committed, so the
//!   places in a buffer are bounded by the reader's window.

use std::collections::VecDeque;

/// Places in arrival order; `Some` once finished. The front leaves first.
#[derive(Debug)]
pub struct ReorderBuffer<T> {
    places: VecDeque<(u64, Option<T>)>,
}

impl<T> Default for ReorderBuffer<T> {
    fn default() -> Self {
        ReorderBuffer {
            places: VecDeque::new(),
        }
    }
}

impl<T> ReorderBuffer<T> {
    pub fn new() -> ReorderBuffer<T> {
        ReorderBuffer::default()
    }

    /// An item that is finished on arrival joins the back.
    pub fn push_ready(&mut self, seq: u64, item: T) {
        self.places.push_back((seq, Some(item)));
    }

    /// Holds a place at the back for item `seq`, finished later with [`fill`](Self::fill).
    pub fn reserve(&mut self, seq: u64) {
        self.places.push_back((seq, None));
    }

    /// Puts the finished item `seq` into its place (the oldest unfilled one with that
    /// number). `Err(item)` when there is none; nothing changes then.
    pub fn fill(&mut self, seq: u64, item: T) -> Result<(), T> {
        match self
            .places
            .iter_mut()
            .find(|(s, slot)| *s == seq && slot.is_none())
        {
            Some((_, slot)) => {
                *slot = Some(item);
                Ok(())
            }
            None => Err(item),
        }
    }

    /// The front item, if it is finished. Call until `None` to drain everything that may go.
    pub fn pop_ready(&mut self) -> Option<T> {
        match self.places.front() {
            Some((_, Some(_))) => self.places.pop_front().and_then(|(_, item)| item),
            _ => None,
        }
    }

    /// Places held: finished ones waiting behind an unfinished one, and unfinished ones.
    pub fn len(&self) -> usize {
        self.places.len()
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom as _;
    use rand::{RngExt as _, SeedableRng as _};

    use super::*;

    fn drain(b: &mut ReorderBuffer<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| b.pop_ready()).collect()
    }

    #[test]
    fn items_finished_on_arrival_leave_in_arrival_order() {
        let mut b = ReorderBuffer::new();
        b.push_ready(1, "a");
        b.push_ready(2, "b");
        assert_eq!(b.len(), 2);
        assert_eq!(drain(&mut b), ["a", "b"]);
        assert_eq!(b.len(), 0);
        assert_eq!(b.pop_ready(), None);
    }

    #[test]
    fn an_unfinished_place_holds_the_finished_ones_behind_it() {
        let mut b = ReorderBuffer::new();
        b.push_ready(1, "a");
        b.reserve(2);
        b.push_ready(3, "c");
        assert_eq!(drain(&mut b), ["a"]);
        assert_eq!(b.len(), 2);
        assert_eq!(b.fill(2, "b"), Ok(()));
        assert_eq!(drain(&mut b), ["b", "c"]);
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn a_later_item_that_finishes_first_waits_for_the_earlier_one() {
        let mut b = ReorderBuffer::new();
        b.reserve(1);
        b.reserve(2);
        assert_eq!(b.fill(2, "b"), Ok(()));
        assert_eq!(drain(&mut b), Vec::<&str>::new());
        assert_eq!(b.fill(1, "a"), Ok(()));
        assert_eq!(drain(&mut b), ["a", "b"]);
    }

    #[test]
    fn a_gap_in_the_numbers_is_not_waited_for() {
        let mut b = ReorderBuffer::new();
        b.push_ready(1, "a");
        b.push_ready(4, "d");
        b.reserve(9);
        assert_eq!(drain(&mut b), ["a", "d"]);
        assert_eq!(b.fill(9, "i"), Ok(()));
        assert_eq!(drain(&mut b), ["i"]);
    }

    #[test]
    fn numbers_name_places_and_do_not_sort_them() {
        // Numbers that go back (a new numbering after a restart) keep their arrival order.
        let mut b = ReorderBuffer::new();
        b.reserve(7);
        b.push_ready(1, "after the restart");
        assert_eq!(b.fill(7, "before"), Ok(()));
        assert_eq!(drain(&mut b), ["before", "after the restart"]);
    }

    #[test]
    fn a_number_without_an_unfilled_place_hands_the_item_back() {
        let mut b = ReorderBuffer::new();
        // Never reserved.
        assert_eq!(b.fill(3, "x"), Err("x"));
        b.reserve(1);
        b.push_ready(2, "b");
        // Finished on arrival, or filled already: not filled twice.
        assert_eq!(b.fill(2, "again"), Err("again"));
        assert_eq!(b.fill(1, "a"), Ok(()));
        assert_eq!(b.fill(1, "twice"), Err("twice"));
        assert_eq!(b.len(), 2);
        assert_eq!(drain(&mut b), ["a", "b"]);
        // Gone already.
        assert_eq!(b.fill(1, "late"), Err("late"));
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn a_fresh_buffer_after_a_reset_refuses_work_begun_before_it() {
        let mut b = ReorderBuffer::new();
        b.reserve(5);
        // A reload replaces the stage's state; work begun before it finishes afterwards.
        b = ReorderBuffer::new();
        b.reserve(6);
        assert_eq!(b.fill(5, "stale"), Err("stale"));
        assert_eq!(b.len(), 1);
        assert_eq!(b.fill(6, "new"), Ok(()));
        assert_eq!(drain(&mut b), ["new"]);
    }

    #[test]
    fn a_repeated_number_fills_its_oldest_unfilled_place_first() {
        let mut b = ReorderBuffer::new();
        b.reserve(1);
        b.push_ready(1, "ready");
        b.reserve(1);
        assert_eq!(b.fill(1, "first fill"), Ok(()));
        assert_eq!(b.fill(1, "second fill"), Ok(()));
        assert_eq!(drain(&mut b), ["first fill", "ready", "second fill"]);
    }

    #[test]
    fn a_place_never_filled_holds_everything_behind_it() {
        // A failed item (its worker gone) is never filled: nothing overtakes it.
        let mut b = ReorderBuffer::new();
        b.push_ready(1, "a");
        b.reserve(2);
        for seq in 3..100 {
            b.push_ready(seq, "later");
        }
        assert_eq!(drain(&mut b), ["a"]);
        assert_eq!(b.len(), 98);
        assert_eq!(b.pop_ready(), None);
    }

    /// Random arrivals (finished at once or later, numbers rising with gaps), finished in a
    /// random order, drained after every step: what has left is always exactly the longest
    /// finished prefix of the arrivals, and in the end everything has left in arrival order.
    #[test]
    fn any_finishing_order_gives_the_arrival_order() {
        let mut rng = StdRng::seed_from_u64(0x0bde_12ed);
        for _round in 0..500 {
            let n = rng.random_range(0..40usize);
            let mut seq = rng.random_range(0..1_000u64);
            let mut arrivals = Vec::with_capacity(n);
            for _ in 0..n {
                seq += rng.random_range(1..4u64);
                arrivals.push((seq, rng.random_bool(0.3)));
            }
            // One event per arrival, one per later finish; a finish after its arrival.
            let mut steps: Vec<(bool, usize)> = Vec::new();
            let mut pending: Vec<usize> = Vec::new();
            for (i, &(_, ready)) in arrivals.iter().enumerate() {
                steps.push((true, i));
                if !ready {
                    pending.push(i);
                }
                while !pending.is_empty() && rng.random_bool(0.4) {
                    let k = rng.random_range(0..pending.len());
                    steps.push((false, pending.swap_remove(k)));
                }
            }
            pending.shuffle(&mut rng);
            steps.extend(pending.into_iter().map(|i| (false, i)));

            let mut b = ReorderBuffer::new();
            let mut finished = vec![false; n];
            let mut out: Vec<usize> = Vec::new();
            let mut arrived = 0;
            for (arrive, i) in steps {
                let (seq, ready) = arrivals[i];
                if arrive {
                    assert_eq!(i, arrived, "arrivals come in index order");
                    arrived += 1;
                }
                if arrive && ready {
                    b.push_ready(seq, i);
                    finished[i] = true;
                } else if arrive {
                    b.reserve(seq);
                } else {
                    assert_eq!(b.fill(seq, i), Ok(()));
                    finished[i] = true;
                }
                out.extend(std::iter::from_fn(|| b.pop_ready()));
                let prefix = finished[..arrived].iter().take_while(|f| **f).count();
                assert_eq!(out, (0..prefix).collect::<Vec<_>>());
                assert_eq!(out.len() + b.len(), arrived);
            }
            assert_eq!(out, (0..n).collect::<Vec<_>>());
            assert_eq!(b.len(), 0);
        }
    }
}
