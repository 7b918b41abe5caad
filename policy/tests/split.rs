//! Weighted backend choice and mirror fractions.

use trellis_policy::{
    Backend, Fraction, HttpBackend,
    build::*,
    split::{self, Split},
};

/// Evenly spread points over the `u64` range, so shares are exact
/// (deterministic, no randomness needed).
fn spread(n: u64) -> impl Iterator<Item = u64> {
    let step = u64::MAX / n;
    (0..n).map(move |i| i * step + step / 2)
}

fn shares(weights: &[u32], n: u64) -> Vec<u64> {
    let mut counts = vec![0u64; weights.len()];
    let table = Split::new(weights.iter().copied());
    for r in spread(n) {
        let i = split::choose(weights.iter().copied(), r).expect("some weight is positive");
        assert_eq!(table.choose(r), Some(i), "Split and choose disagree at {r}");
        counts[i] += 1;
    }
    counts
}

/// `backendRefs[].weight`: proportion = weight / sum; 0 never chosen.
#[test]
fn shares_follow_weights() {
    let cases: &[(&[u32], &[u64])] = &[
        (&[1], &[1000]),
        (&[1, 1], &[500, 500]),
        (&[70, 30], &[700, 300]),
        (&[1, 0, 1], &[500, 0, 500]),
        (&[0, 5], &[0, 1000]),
        (&[1, 2, 3, 4], &[100, 200, 300, 400]),
        (&[u32::MAX, u32::MAX], &[500, 500]),
        (&[90, 10, 0], &[900, 100, 0]),
    ];
    for (weights, want) in cases {
        assert_eq!(shares(weights, 1000), *want, "{weights:?}");
    }
}

#[test]
fn nothing_to_choose() {
    let none: &[u32] = &[];
    for weights in [none, &[0], &[0, 0, 0]] {
        for r in [0, 1, u64::MAX / 2, u64::MAX] {
            assert_eq!(
                split::choose(weights.iter().copied(), r),
                None,
                "{weights:?}"
            );
            assert_eq!(Split::new(weights.iter().copied()).choose(r), None);
        }
        assert_eq!(Split::new(weights.iter().copied()).total(), 0);
    }
}

#[test]
fn extremes_of_the_random_range() {
    let weights = [3u32, 0, 7];
    assert_eq!(split::choose(weights, 0), Some(0));
    assert_eq!(split::choose(weights, u64::MAX), Some(2));
    assert_eq!(Split::new(weights).choose(u64::MAX), Some(2));
}

/// An invalid backend keeps its share (the caller answers 500 for it): half
/// the requests of two equal backends, one invalid, fall on the invalid.
#[test]
fn invalid_backends_keep_their_share() {
    let backends: Vec<HttpBackend> = vec![
        service("ns", "web", 80).into(),
        invalid("Service ns/gone:80", "service ns/gone not found").into(),
    ];
    let invalid_hits = spread(1000)
        .filter(|&r| {
            matches!(
                split::http_backend(&backends, r).map(|b| &b.backend),
                Some(Backend::Invalid { .. })
            )
        })
        .count();
    assert_eq!(invalid_hits, 500);
    let tcp = vec![
        service("ns", "db", 5432).weight(0).into(),
        service("ns", "db2", 5432).into(),
    ];
    assert_eq!(
        split::weighted_backend(&tcp, 0).map(|b| b.backend.name()),
        Some("ns/db2:5432".to_string())
    );
}

/// `RequestMirror` `percent` / `fraction`: over a range of random values
/// that is a multiple of every denominator, the share is exact.
#[test]
fn mirror_fractions() {
    let cases = [
        (Fraction::ALL, 1200),
        (
            Fraction {
                numerator: 0,
                denominator: 100,
            },
            0,
        ),
        (
            Fraction {
                numerator: 25,
                denominator: 100,
            },
            300,
        ),
        (
            Fraction {
                numerator: 1,
                denominator: 3,
            },
            400,
        ),
        (
            Fraction {
                numerator: 5,
                denominator: 5,
            },
            1200,
        ),
        (
            Fraction {
                numerator: 1,
                denominator: 0,
            },
            0,
        ),
    ];
    for (fraction, want) in cases {
        let selected = (0u64..1200).filter(|&r| fraction.selects(r)).count();
        assert_eq!(selected, want, "{fraction:?}");
    }
}
