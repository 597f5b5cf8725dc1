//! The router under weight: 100 MB bodies stream through in bounded memory, and slow or
//! idle clients do not keep others from being served.

mod router_support;

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use router_support::*;
use tokio::io::AsyncWriteExt;

const HOST: &str = "app.localhost";
const HUNDRED_MB: u64 = 100 * 1000 * 1000;

/// Peak RSS the router may reach while moving 100 MB: well under the body size.
const RSS_LIMIT_KIB: u64 = 40 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_stream_through_in_bounded_memory() {
    let (_backend, world, router) = one_backend("big", &[]).await;
    let mut client = Client::connect(router.addr).await;

    // Upload: a chunked body of 100 MB, counted by the backend as it arrives.
    let req = hyper::Request::post("/upload")
        .header("host", HOST)
        .body(Zeros { left: HUNDRED_MB }.boxed())
        .unwrap();
    let reply = client.send(req).await.unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, format!("big received {HUNDRED_MB}"));
    let after_upload = router.status_kib("VmHWM");

    // Download: 100 MB streamed back, read and dropped chunk by chunk.
    let req = request(HOST, &format!("/download?bytes={HUNDRED_MB}"));
    let response = send_streaming(router.addr, req).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().into_data().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(received, HUNDRED_MB);
    let after_download = router.status_kib("VmHWM");
    eprintln!(
        "router peak RSS: {after_upload} KiB after upload, {after_download} KiB after download"
    );
    assert!(
        after_download < RSS_LIMIT_KIB,
        "router peak RSS {after_download} KiB while streaming 100 MB"
    );
    let lines = world.wait_for_log("app", "status=200", 2).await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("bytes={HUNDRED_MB} "))),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_idle_connections_do_not_block_other_clients() {
    let (backend, _world, router) = one_backend("busy", &["--header-timeout", "3s"]).await;

    // 500 connections that never send a byte.
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(tokio::net::TcpStream::connect(router.addr).await.unwrap());
    }
    // A client that sends its request head one byte a second.
    let mut slow = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    let slowloris = tokio::spawn(async move {
        let head = b"GET / HTTP/1.1\r\nHost: app.localhost\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let start = Instant::now();
        for byte in head {
            if slow.write_all(&[*byte]).await.is_err() {
                // Closed by the router before the head was complete.
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        None
    });

    // Meanwhile other clients are served promptly (a bound for a hang, not a benchmark).
    for _ in 0..20 {
        let reply = tokio::time::timeout(Duration::from_secs(5), get(router.addr, HOST, "/"))
            .await
            .expect("a normal request is served despite slow and idle clients");
        assert_eq!(reply.status, 200);
    }

    // The header timeout closes the slowloris (3 s, checked with a wide margin).
    let closed_after = tokio::time::timeout(Duration::from_secs(30), slowloris)
        .await
        .expect("the slow client is cut off")
        .unwrap()
        .expect("the slow client never finished its head");
    assert!(closed_after < Duration::from_secs(20), "{closed_after:?}");
    // The idle connections are closed too.
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 16];
    for conn in idle.iter_mut().take(10) {
        let n = tokio::time::timeout(Duration::from_secs(20), conn.read(&mut buf))
            .await
            .expect("idle connection closed by the router");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
    assert_eq!(backend.requests(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_capped() {
    let (_backend, _world, router) = one_backend("cap", &["--max-idle-connections", "5"]).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut client = Client::connect(router.addr).await;
        assert_eq!(client.get(HOST, "/").await.status, 200);
        clients.push(client);
    }
    // Past the cap, connections are closed once their response is done.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut open = 0;
    for client in &mut clients {
        if client.send(request(HOST, "/")).await.is_ok() {
            open += 1;
        }
    }
    assert!(
        open <= 5,
        "{open} idle keep-alive connections stayed open, cap 5"
    );
    assert!(open >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_instead_of_failing() {
    let (_backend, _world, router) =
        one_backend("few", &["--max-connections", "4", "--header-timeout", "3s"]).await;
    // Eight silent connections against a cap of four: four are served (and cut off by the
    // header timeout after 3 s), the others wait in the backlog for a free slot and are
    // cut off 3 s after that.
    let start = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..8 {
        let mut stream = tokio::net::TcpStream::connect(router.addr).await.unwrap();
        silent.push(tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 16];
            let _ = stream.read(&mut buf).await;
            start.elapsed()
        }));
    }
    // A real client queued behind them is served once a slot frees.
    let reply = tokio::time::timeout(Duration::from_secs(30), get(router.addr, HOST, "/"))
        .await
        .expect("served once a slot frees");
    assert_eq!(reply.status, 200);
    let mut closed = Vec::new();
    for conn in silent {
        closed.push(
            tokio::time::timeout(Duration::from_secs(30), conn)
                .await
                .expect("every silent connection is closed in the end")
                .unwrap(),
        );
    }
    closed.sort();
    let first_wave = closed
        .iter()
        .filter(|t| **t < Duration::from_millis(4500))
        .count();
    assert!(
        first_wave <= 4,
        "more than 4 connections at once: {closed:?}"
    );
    assert!(first_wave >= 1, "{closed:?}");
}
