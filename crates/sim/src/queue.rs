//! The event queue: earliest first, and in the order they were scheduled when two fall on the
//! same instant (so two messages on one link are delivered in the order they were sent).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Duration;

struct Entry<T> {
    at: Duration,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    /// Reversed: `BinaryHeap` is a max-heap, the queue pops the earliest.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A priority queue of items by simulated time, FIFO among equal times.
pub struct EventQueue<T> {
    heap: BinaryHeap<Entry<T>>,
    next_seq: u64,
}

impl<T> Default for EventQueue<T> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            next_seq: 0,
        }
    }
}

impl<T> EventQueue<T> {
    pub fn push(&mut self, at: Duration, item: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry { at, seq, item });
    }

    pub fn pop(&mut self) -> Option<(Duration, T)> {
        self.heap.pop().map(|entry| (entry.at, entry.item))
    }

    pub fn peek_time(&self) -> Option<Duration> {
        self.heap.peek().map(|entry| entry.at)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn events_come_out_earliest_first_and_in_scheduling_order_on_ties() {
        let mut queue = EventQueue::default();
        for (at, label) in [(5, "e"), (1, "a"), (3, "c1"), (3, "c2"), (2, "b"), (3, "c3")] {
            queue.push(at * MS, label);
        }
        assert_eq!(queue.peek_time(), Some(MS));
        let order: Vec<&str> = std::iter::from_fn(|| queue.pop().map(|(_, label)| label)).collect();
        assert_eq!(order, ["a", "b", "c1", "c2", "c3", "e"]);
        assert!(queue.is_empty());
    }

    #[test]
    fn an_event_scheduled_while_running_goes_to_its_place() {
        let mut queue = EventQueue::default();
        queue.push(10 * MS, 10);
        queue.push(20 * MS, 20);
        assert_eq!(queue.pop(), Some((10 * MS, 10)));
        queue.push(15 * MS, 15);
        queue.push(10 * MS, 11);
        assert_eq!(queue.pop(), Some((10 * MS, 11)));
        assert_eq!(queue.pop(), Some((15 * MS, 15)));
        assert_eq!(queue.len(), 1);
    }
}
