use super::*;

fn budget(percent: u32, min_retry_count: u32) -> Budget {
    Budget::new(RetryBudget {
        percent,
        interval: Duration::from_secs(10),
        min_retry_count,
        min_retry_interval: Duration::from_secs(1),
    })
}

#[tokio::test(start_paused = true)]
async fn retries_stay_within_the_share_of_requests() {
    let b = budget(20, 0);
    for _ in 0..100 {
        b.deposit();
    }
    let granted = (0..100).filter(|_| b.withdraw()).count();
    assert_eq!(granted, 20);
}

#[tokio::test(start_paused = true)]
async fn the_share_follows_the_interval() {
    let b = budget(20, 0);
    for _ in 0..50 {
        b.deposit();
    }
    assert_eq!((0..50).filter(|_| b.withdraw()).count(), 10);
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(!b.withdraw(), "old requests no longer count");
    for _ in 0..10 {
        b.deposit();
    }
    assert_eq!((0..10).filter(|_| b.withdraw()).count(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_minimum_rate_allows_retries_at_low_traffic() {
    let b = budget(20, 10);
    b.deposit();
    assert_eq!((0..50).filter(|_| b.withdraw()).count(), 10);
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!((0..50).filter(|_| b.withdraw()).count(), 5);
}

#[test]
fn backoff_is_never_below_the_route_minimum() {
    let base = Duration::from_millis(100);
    assert_eq!(backoff(base, 1, 0.0), base);
    assert_eq!(backoff(base, 2, 0.0), 2 * base);
    assert_eq!(backoff(base, 3, 1.0), 6 * base);
    assert_eq!(backoff(base, 30, 0.0), 10 * base, "capped");
    for n in 1..20 {
        assert!(backoff(base, n, fastrand::f64()) >= base);
    }
    assert_eq!(backoff(Duration::ZERO, 3, 0.5), Duration::ZERO);
}

#[test]
fn outcomes_classify_by_policy() {
    let http = HttpRetry {
        codes: vec![503],
        attempts: 2,
        backoff: None,
    };
    let p = Policy::Http(&http);
    let none = HeaderMap::new();
    assert_eq!(
        p.response(StatusCode::SERVICE_UNAVAILABLE, &none),
        Outcome::RetryableResponse
    );
    assert_eq!(p.response(StatusCode::BAD_GATEWAY, &none), Outcome::Final);
    assert!(p.retries(Outcome::TimedOut) && p.retries(Outcome::Broken));

    let grpc = GrpcRetry {
        codes: vec![14],
        attempts: 1,
        backoff: None,
    };
    let mut unavailable = HeaderMap::new();
    unavailable.insert("grpc-status", "14".parse().unwrap());
    let p = Policy::Grpc(&grpc);
    assert_eq!(
        p.response(StatusCode::OK, &unavailable),
        Outcome::RetryableResponse
    );
    assert_eq!(p.response(StatusCode::OK, &none), Outcome::Final);

    let p = Policy::None;
    assert_eq!(p.max_retries(), 0);
    assert!(!p.retries(Outcome::ConnectFailed) && !p.retries(Outcome::TimedOut));
    assert_eq!(
        p.response(StatusCode::SERVICE_UNAVAILABLE, &none),
        Outcome::Final
    );
}
