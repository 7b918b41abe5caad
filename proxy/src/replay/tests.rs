use super::*;
use http_body::Body as _;
use http_body_util::BodyExt;
use std::convert::Infallible;
use tokio::sync::mpsc;

/// A client body the test feeds frame by frame; it ends when the sender
/// is dropped.
#[derive(Debug)]
struct Chan(mpsc::UnboundedReceiver<Frame<Bytes>>);

impl http_body::Body for Chan {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

fn client() -> (mpsc::UnboundedSender<Frame<Bytes>>, Replay<Chan>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, Replay::new(Chan(rx)))
}

fn data(s: &'static str) -> Frame<Bytes> {
    Frame::data(Bytes::from_static(s.as_bytes()))
}

/// Reads a copy to its end: the data joined, and the trailers.
async fn read<B>(body: ReplayBody<B>) -> Result<(String, Option<HeaderMap>), BoxError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    Ok((
        String::from_utf8(collected.to_bytes().to_vec()).unwrap(),
        trailers,
    ))
}

#[tokio::test]
async fn a_retry_gets_the_same_body_and_trailers() {
    let (tx, replay) = client();
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", "42".parse().unwrap());
    tx.send(data("hello ")).unwrap();
    tx.send(data("world")).unwrap();
    tx.send(Frame::trailers(trailers.clone())).unwrap();
    drop(tx);
    let first = read(replay.body()).await.unwrap();
    assert_eq!(first, ("hello world".to_string(), Some(trailers)));
    assert!(replay.can_replay());
    let second = replay.body();
    assert_eq!(second.size_hint().exact(), Some(11));
    assert_eq!(read(second).await.unwrap(), first);
}

#[tokio::test]
async fn a_retry_after_a_partial_read_replays_then_continues() {
    let (tx, replay) = client();
    tx.send(data("a")).unwrap();
    let mut first = replay.body();
    let f = first.frame().await.unwrap().unwrap();
    assert_eq!(f.into_data().unwrap(), "a");
    assert!(
        !replay.can_replay(),
        "the first attempt still reads the body"
    );
    drop(first);
    assert!(replay.can_replay(), "nobody reads it any more");
    let second = replay.body();
    tx.send(data("b")).unwrap();
    drop(tx);
    assert_eq!(read(second).await.unwrap().0, "ab");
}

#[tokio::test]
async fn a_mirror_reads_only_what_the_attempt_pulled() {
    let (tx, replay) = client();
    let mut mirror = replay.follower();
    let mut attempt = replay.body();
    tx.send(data("x")).unwrap();
    // The mirror waits: it never pulls from the client itself.
    let polled = futures::poll!(mirror.frame());
    assert!(polled.is_pending());
    assert_eq!(
        attempt.frame().await.unwrap().unwrap().into_data().unwrap(),
        "x"
    );
    assert_eq!(
        mirror.frame().await.unwrap().unwrap().into_data().unwrap(),
        "x"
    );
    drop(tx);
    assert!(attempt.frame().await.is_none());
    assert!(mirror.frame().await.is_none());
}

#[tokio::test]
async fn a_mirror_fails_once_the_client_body_is_dropped() {
    let (tx, replay) = client();
    tx.send(data("x")).unwrap();
    let mut mirror = replay.follower();
    let attempt = replay.body();
    drop(attempt);
    drop(replay);
    assert_eq!(
        mirror.frame().await.unwrap().unwrap_err().to_string(),
        Error::Gone.to_string()
    );
    assert!(tx.is_closed(), "the client's body is released");
}

#[tokio::test]
async fn a_body_over_the_limit_streams_once_and_is_not_replayed() {
    let (tx, replay) = client();
    let mut mirror = replay.follower();
    let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
    for _ in 0..5 {
        tx.send(Frame::data(chunk.clone())).unwrap();
    }
    drop(tx);
    let (body, _) = read(replay.body()).await.unwrap();
    assert_eq!(body.len(), 80 * 1024, "the attempt gets all of it");
    assert!(!replay.can_replay());
    assert!(read(replay.body()).await.is_err(), "no second copy");
    let mut got = 0;
    let err = loop {
        match mirror.frame().await {
            Some(Ok(f)) => got += f.into_data().unwrap().len(),
            Some(Err(e)) => break e,
            None => panic!("the mirror cannot see the whole body"),
        }
    };
    assert_eq!(err.to_string(), Error::TooLarge.to_string());
    assert!(got < 80 * 1024);
}
