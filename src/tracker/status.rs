//! Responses by exact status code, for the metrics named after the code
//! (`gunicorn.request.status.404` on statsd).
//!
//! A fixed table of the codes HTTP defines (100..=599), so the hot path only
//! increments: the table is allocated when an interval starts, never per request.

/// The first and last code counted; others (invalid on the wire) only count in
/// their status class.
const FIRST: u16 = 100;
const LAST: u16 = 599;

/// Counts by code, 100..=599.
#[derive(Clone, PartialEq)]
pub struct StatusCodes(Box<[u64]>);

impl Default for StatusCodes {
    fn default() -> Self {
        StatusCodes(vec![0; usize::from(LAST - FIRST + 1)].into_boxed_slice())
    }
}

impl std::fmt::Debug for StatusCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.nonzero()).finish()
    }
}

impl StatusCodes {
    /// Counts one response with `code`.
    pub fn add(&mut self, code: u16) {
        self.add_n(code, 1);
    }

    /// Counts `n` responses with `code`; `false` if the code is outside 100..=599.
    pub fn add_n(&mut self, code: u16, n: u64) -> bool {
        match code.checked_sub(FIRST).map(usize::from) {
            Some(i) if code <= LAST => {
                self.0[i] = self.0[i].saturating_add(n);
                true
            }
            _ => false,
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &StatusCodes) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0.iter()) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    /// `(code, count)` for every code seen, ascending.
    pub fn nonzero(&self) -> Vec<(u16, u64)> {
        (FIRST..=LAST)
            .zip(self.0.iter().copied())
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_codes_in_range_only() {
        let mut s = StatusCodes::default();
        s.add(200);
        s.add(200);
        s.add(599);
        s.add(100);
        assert!(!s.add_n(99, 1));
        assert!(!s.add_n(600, 1));
        let mut t = StatusCodes::default();
        t.add(404);
        t.add(200);
        s.merge(&t);
        assert_eq!(s.nonzero(), vec![(100, 1), (200, 3), (404, 1), (599, 1)]);
    }
}
