//! Weighted choice between the backends of a rule.
//!
//! A backend's share is `weight / sum of weights`; weight 0 is never chosen.
//! When every weight is 0 (or there are no backends) there is no choice and
//! the caller answers 500. An [`crate::Backend::Invalid`] backend keeps its
//! share: the caller answers 500 for the requests that fall on it, as the
//! spec requires, and the other backends are unaffected.
//!
//! The caller supplies the randomness (a uniformly random `u64`), which
//! keeps this module pure and its tests deterministic.

use crate::{HttpBackend, WeightedBackend};

/// The index of the entry that a uniformly random `random` selects, with
/// probability proportional to its weight; `None` when every weight is 0.
/// O(n), allocation-free (the iterator is walked twice, hence `Clone`). For
/// a fixed list, [`Split`] answers in O(log n).
pub fn choose<I>(weights: I, random: u64) -> Option<usize>
where
    I: IntoIterator<Item = u32>,
    I::IntoIter: Clone,
{
    let weights = weights.into_iter();
    let total: u64 = weights.clone().map(u64::from).sum();
    let mut point = scale(random, total)?;
    for (i, w) in weights.map(u64::from).enumerate() {
        if point < w {
            return Some(i);
        }
        point -= w;
    }
    None
}

/// Maps a uniform `random` onto `0..total` by multiplying (Lemire's method
/// without the rejection step: the bias is below `total / 2^64`, far below
/// anything a share of traffic can show).
fn scale(random: u64, total: u64) -> Option<u64> {
    if total == 0 {
        return None;
    }
    Some(((u128::from(random) * u128::from(total)) >> 64) as u64)
}

/// A precomputed cumulative table for a fixed list of weights: O(log n) per
/// choice, same answers as [`choose`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Split {
    /// `cumulative[i]` is the sum of the weights up to and including `i`.
    cumulative: Vec<u64>,
}

impl Split {
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let mut sum = 0u64;
        let cumulative = weights
            .into_iter()
            .map(|w| {
                sum += u64::from(w);
                sum
            })
            .collect();
        Split { cumulative }
    }

    /// The sum of the weights; 0 means every request answers 500.
    pub fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.cumulative.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cumulative.is_empty()
    }

    /// The index `random` selects; `None` when every weight is 0.
    pub fn choose(&self, random: u64) -> Option<usize> {
        let point = scale(random, self.total())?;
        // The first entry whose cumulative sum exceeds the point; entries
        // of weight 0 repeat the previous sum and are never the first.
        Some(self.cumulative.partition_point(|&c| c <= point))
    }
}

/// The backend of an HTTP or gRPC rule that `random` selects.
pub fn http_backend(backends: &[HttpBackend], random: u64) -> Option<&HttpBackend> {
    choose(backends.iter().map(|b| b.weight), random).map(|i| &backends[i])
}

/// The backend of a TCP or TLS rule that `random` selects.
pub fn weighted_backend(backends: &[WeightedBackend], random: u64) -> Option<&WeightedBackend> {
    choose(backends.iter().map(|b| b.weight), random).map(|i| &backends[i])
}
