//! The router as a process: dispatch, retries, keep-alive, upgrades, streaming, headers,
//! error codes, route reloads, request logs and shutdown. Backends are small HTTP servers
//! on loopback ports (see `router_support`).

mod router_support;

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use router_support::*;
use tokio_tungstenite::tungstenite::Message;

const HOST: &str = "app.localhost";

async fn three_backends() -> Vec<TestBackend> {
    vec![
        TestBackend::start("one").await,
        TestBackend::start("two").await,
        TestBackend::start("three").await,
    ]
}

fn addrs(backends: &[TestBackend]) -> Vec<std::net::SocketAddr> {
    backends.iter().map(|b| b.addr).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_spread_at_random_over_the_backends() {
    let backends = three_backends().await;
    let mut world = World::new();
    world.write_routes(&[("app", &addrs(&backends))]);
    let router = RouterProcess::start(&world, &[]);
    let mut served: HashMap<String, usize> = HashMap::new();
    let mut client = Client::connect(router.addr).await;
    for i in 0..300 {
        // Half on one keep-alive connection, half on fresh ones: the choice is per request.
        let reply = if i % 2 == 0 {
            client.get(HOST, "/").await
        } else {
            get(router.addr, HOST, "/").await
        };
        assert_eq!(reply.status, 200, "{reply:?}");
        *served.entry(reply.body).or_default() += 1;
    }
    // Binomial(300, 1/3): mean 100, sd 8.2; below 30 is 8 sd away.
    for backend in &backends {
        let n = served.get(&backend.name).copied().unwrap_or(0);
        assert!(n >= 30, "{} served {n} of 300: {served:?}", backend.name);
        assert_eq!(backend.requests(), n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_backend_is_skipped_after_its_first_refusal() {
    let mut backends = three_backends().await;
    let mut world = World::new();
    world.write_routes(&[("app", &addrs(&backends))]);
    // A quarantine longer than the test: every later pick avoids the stopped backend.
    let router = RouterProcess::start(&world, &["--quarantine", "120s"]);
    let mut client = Client::connect(router.addr).await;
    for _ in 0..30 {
        assert_eq!(client.get(HOST, "/").await.status, 200);
    }
    backends[1].stop().await;
    for _ in 0..60 {
        let reply = client.get(HOST, "/").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_ne!(reply.body, "two");
    }
    // P(the stopped backend is never picked in 60 requests) = (2/3)^60 ≈ 3e-11.
    let refusals = world.wait_for_log("app", "code=R18", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refusals_now: Vec<_> = world
        .router_log("app")
        .into_iter()
        .filter(|l| l.contains("code=R18"))
        .collect();
    assert_eq!(refusals_now.len(), 1, "{refusals_now:#?}");
    assert!(refusals[0].contains("container=web-2"), "{refusals:?}");
    assert_eq!(
        world
            .router_log("app")
            .iter()
            .filter(|l| l.contains("status=200"))
            .count(),
        90
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_reuses_upstream_connections() {
    let backends = three_backends().await;
    let mut world = World::new();
    world.write_routes(&[("app", &addrs(&backends))]);
    let router = RouterProcess::start(&world, &[]);
    let mut client = Client::connect(router.addr).await;
    for _ in 0..100 {
        assert_eq!(client.get(HOST, "/").await.status, 200);
    }
    let accepted: usize = backends.iter().map(TestBackend::accepted).sum();
    let requests: usize = backends.iter().map(TestBackend::requests).sum();
    assert_eq!(requests, 100);
    // One connection per backend, plus a few when a request overtakes a connection's
    // return to the pool.
    assert!(
        accepted <= 10,
        "100 requests took {accepted} upstream connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_router() {
    let (_backend, world, router) = one_backend("ws", &[]).await;
    let stream = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async("ws://app.localhost/ws", stream)
        .await
        .expect("websocket handshake through the router");
    assert_eq!(response.status(), 101);
    for i in 0..20 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(format!("hello {i}")));
    }
    let big = vec![7u8; 1 << 20];
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    ws.close(None).await.unwrap();
    let line = world.wait_for_log("app", "status=101", 1).await;
    assert_eq!(line.len(), 1, "{:?}", world.router_log("app"));
    assert!(line[0].contains("at=info "), "{line:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_stream_without_waiting_for_the_end() {
    let (backend, _world, router) = one_backend("gate", &[]).await;
    let response = send_streaming(router.addr, request(HOST, "/gate")).await;
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the first chunk arrives before the backend sends the rest")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "first\n");
    backend.gate.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "second\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_set() {
    let (_backend, world, router) = one_backend("echo", &[]).await;
    let mut client = Client::connect(router.addr).await;

    let kept_id = "abcdefghij0123456789-kept";
    let req = hyper::Request::get("/headers?x=1")
        .header("host", "App.LocalHost:8080")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "spoofed")
        .header("x-request-id", kept_id)
        .header("connection", "x-private")
        .header("x-private", "secret")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .body(http_body_util::Full::new(bytes::Bytes::new()).boxed())
        .unwrap();
    let reply = client.send(req).await.unwrap();
    assert_eq!(reply.status, 200);
    let h = reply.echoed_headers();
    assert_eq!(h["host"], "App.LocalHost:8080");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-port"], router.addr.port().to_string());
    assert_eq!(h["x-request-id"], kept_id);
    assert_eq!(h["via"], "1.1 slipway");
    for gone in ["x-private", "keep-alive", "te", "connection"] {
        assert!(!h.contains_key(gone), "{gone} reached the backend: {h:?}");
    }

    // A request id that is not sane is replaced by a UUID v4.
    let req = hyper::Request::get("/headers")
        .header("host", HOST)
        .header("x-request-id", "short id")
        .body(http_body_util::Full::new(bytes::Bytes::new()).boxed())
        .unwrap();
    let h = client.send(req).await.unwrap().echoed_headers();
    let id = &h["x-request-id"];
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(id.as_bytes()[14], b'4', "{id}");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");

    // The request log line carries the same facts.
    let lines = world.wait_for_log("app", kept_id, 1).await;
    let line = &lines[0];
    let parsed = slipway::applog::LogLine::parse(line).expect("a log line");
    assert_eq!(
        (parsed.source.as_str(), parsed.process.as_str()),
        ("slipway", "router")
    );
    for field in [
        "at=info ",
        "method=GET ",
        "path=\"/headers?x=1\" ",
        "host=app.localhost ",
        "fwd=\"203.0.113.9, 127.0.0.1\" ",
        "container=web-1 ",
        "status=200 ",
        "protocol=http",
    ] {
        assert!(parsed.message.contains(field), "{field} missing in {line}");
    }
    let bytes = format!("bytes={} ", reply.body.len());
    assert!(parsed.message.contains(&bytes), "{bytes} missing in {line}");
    assert!(
        parsed.message.contains(" connect=") && parsed.message.contains("ms service="),
        "{line}"
    );
    // The shared reader sees the same lines.
    world.wait_for_log("app", "status=200", 2).await;
    let tail = slipway::applog::tail(&world.data_dir, "app", 10).unwrap();
    assert_eq!(tail.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_codes() {
    let (closing, _closing_task) = start_closing_backend().await;
    let slow = TestBackend::start("slow").await;
    let mut world = World::new();
    world.write_routes(&[
        ("empty", &[]),
        ("refused", &[refusing_addr(), refusing_addr()]),
        ("closing", &[closing]),
        ("slow", &[slow.addr]),
    ]);
    let router = RouterProcess::start(&world, &["--backend-timeout", "1s"]);

    let reply = get(router.addr, "nowhere.localhost", "/").await;
    assert_eq!((reply.status.as_u16(), reply.error_code()), (404, "R10"));
    assert!(reply.body.contains("nowhere.localhost"), "{}", reply.body);

    let reply = get(router.addr, "empty.localhost", "/").await;
    assert_eq!((reply.status.as_u16(), reply.error_code()), (503, "R11"));

    let reply = get(router.addr, "refused.localhost", "/").await;
    assert_eq!((reply.status.as_u16(), reply.error_code()), (503, "R12"));

    let reply = get(router.addr, "closing.localhost", "/").await;
    assert_eq!((reply.status.as_u16(), reply.error_code()), (502, "R14"));

    let reply = get(router.addr, "slow.localhost", "/slow?ms=5000").await;
    assert_eq!((reply.status.as_u16(), reply.error_code()), (504, "R13"));

    // HTTP/1.0 without a Host header.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.0 400"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("x-slipway-error: r15"),
        "{answer}"
    );

    // CONNECT to an app's host name: refused, and in that app's log.
    let mut raw = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    raw.write_all(b"CONNECT empty.localhost:443 HTTP/1.1\r\nHost: empty.localhost:443\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = raw.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_ascii_lowercase();
    assert!(
        answer.starts_with("http/1.1 400") && answer.contains("x-slipway-error: r15"),
        "{answer}"
    );

    // Every error answered for an app is in its log, with its code and status.
    for (app, code, status) in [
        ("empty", "R11", 503),
        ("empty", "R15", 400),
        ("refused", "R12", 503),
        ("closing", "R14", 502),
        ("slow", "R13", 504),
    ] {
        let lines = world
            .wait_for_log(app, &format!("at=error code={code} "), 1)
            .await;
        assert_eq!(lines.len(), 1, "{app}: {:?}", world.router_log(app));
        assert!(lines[0].contains(&format!("status={status} ")), "{lines:?}");
    }
    // Those for no app (an unknown host, no Host) are counted on the router's stderr.
    for code in ["R10", "R15"] {
        let line = format!("at=error code={code} ");
        assert!(
            router.wait_for_stderr(&line).await,
            "no {line}: {}",
            router.stderr()
        );
    }
    assert!(
        router
            .stderr()
            .contains("code=R10 desc=\"Unknown host\" requests=1 "),
        "{}",
        router.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_that_stalls_is_cut_short_after_the_idle_timeout() {
    let (backend, world, router) = one_backend("staller", &["--body-idle-timeout", "1s"]).await;

    // A body that keeps coming, slower than nothing but well within the window each time,
    // and longer than the window in all: complete.
    let mut client = Client::connect(router.addr).await;
    let reply = client.get(HOST, "/drip?n=12&ms=250").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "drop\n".repeat(12));

    // `first` comes, then nothing (the gate never opens): the client's response ends
    // unfinished instead of hanging.
    let response = send_streaming(router.addr, request(HOST, "/gate")).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"first\n");
    let rest = tokio::time::timeout(Duration::from_secs(60), body.collect())
        .await
        .expect("the stalled body was never cut short");
    assert!(rest.is_err(), "a stalled body looked complete");

    let lines = world.wait_for_log("app", "code=R19", 1).await;
    assert_eq!(lines.len(), 1, "{:?}", world.router_log("app"));
    assert!(
        lines[0].contains("at=error ")
            && lines[0].contains("status=200 ")
            && lines[0].contains("bytes=6 "),
        "{lines:?}"
    );
    assert_eq!(world.wait_for_log("app", "path=\"/drip", 1).await.len(), 1);
    assert!(
        world.router_log("app")[0].contains("at=info"),
        "{:?}",
        world.router_log("app")
    );
    drop(backend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_changes_apply_without_restart_and_bad_files_keep_the_last_table() {
    let first = TestBackend::start("first").await;
    let second = TestBackend::start("second").await;
    let mut world = World::new();
    world.write_routes(&[("app", &[first.addr])]);
    let router = RouterProcess::start(&world, &[]);
    assert_eq!(get(router.addr, HOST, "/").await.body, "first");

    world.write_routes(&[("app", &[second.addr]), ("new", &[first.addr])]);
    wait_for_body(router.addr, HOST, "second").await;
    assert_eq!(get(router.addr, "new.localhost", "/").await.body, "first");

    // A malformed file: logged, and the last good table stays.
    std::fs::write(world.run_dir.join("routes.json"), "{\"version\":1,").unwrap();
    assert!(
        router.wait_for_stderr("not valid JSON").await,
        "{}",
        router.stderr()
    );
    assert_eq!(get(router.addr, HOST, "/").await.body, "second");
    // A table that fails validation: same.
    std::fs::write(
        world.run_dir.join("routes.json"),
        r#"{"version":1,"generation":9,"apps":{"Bad/Name":{}}}"#,
    )
    .unwrap();
    assert!(
        router.wait_for_stderr("route table is invalid").await,
        "{}",
        router.stderr()
    );
    assert_eq!(get(router.addr, HOST, "/").await.body, "second");
    // The file removed: same.
    std::fs::remove_file(world.run_dir.join("routes.json")).unwrap();
    assert!(
        router
            .wait_for_stderr("is missing; keeping routes generation 2")
            .await
    );
    assert_eq!(get(router.addr, HOST, "/").await.body, "second");
    // And a good table applies again.
    world.write_routes(&[("app", &[first.addr])]);
    wait_for_body(router.addr, HOST, "first").await;
}

/// Checks what answers (the backend's name, or the router's error code) per host name.
async fn answers(router: RouterProcess, cases: &[(&str, &str)]) {
    for (host, expected) in cases {
        let reply = get(router.addr, host, "/").await;
        let answer = if reply.status == 200 {
            reply.body.as_str()
        } else {
            reply.error_code()
        };
        assert_eq!(answer, *expected, "{host}: {reply:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_domains_and_base_domain() {
    let backend = TestBackend::start("custom").await;
    let mut world = World::new();
    let mut table = slipway::api::routes::RouteTable::new(0);
    table.base_domain = Some("apps.test".into());
    table.apps.insert(
        "shop".into(),
        slipway::api::routes::AppRoutes {
            domains: vec!["shop.example.com".into()],
            backends: vec![slipway::api::routes::Backend {
                container: "web-1".into(),
                address: backend.addr,
            }],
            tls: Default::default(),
        },
    );
    world.write_table(table);
    answers(
        RouterProcess::start(&world, &[]),
        &[
            ("SHOP.example.com", "custom"),
            ("shop.apps.test:80", "custom"),
            ("shop.localhost", "R10"),
        ],
    )
    .await;
    answers(
        RouterProcess::start(&world, &["--base-domain", "other.test"]),
        &[("shop.other.test", "custom"), ("shop.apps.test", "R10")],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_in_flight_and_exits_0() {
    let (backend, world, mut router) = one_backend("slow", &[]).await;
    let addr = router.addr;
    let in_flight = tokio::spawn(async move { get(addr, HOST, "/slow?ms=1500").await });
    while backend.requests() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    router.terminate();
    assert!(router.wait_for_stderr("shutting down").await);
    // No new connections once it stopped accepting.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "still accepting after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply = in_flight.await.unwrap();
    assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "slow"));
    let status = tokio::task::spawn_blocking(move || router.wait_exit(Duration::from_secs(15)))
        .await
        .unwrap()
        .expect("router exits after draining");
    assert_eq!(status.code(), Some(0));
    // The log was written out before exit.
    assert_eq!(world.wait_for_log("app", "status=200", 1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_and_interrupted_exchanges_are_logged_as_such() {
    let backend = TestBackend::start("big").await;
    let (truncating, _task) = start_truncating_backend().await;
    let mut world = World::new();
    world.write_routes(&[("app", &[backend.addr]), ("cut", &[truncating])]);
    let router = RouterProcess::start(&world, &[]);

    // HEAD: hyper sends no body; still a complete exchange.
    let mut client = Client::connect(router.addr).await;
    let head = hyper::Request::head("/")
        .header("host", HOST)
        .body(http_body_util::Full::new(bytes::Bytes::new()).boxed())
        .unwrap();
    assert_eq!(client.send(head).await.unwrap().status, 200);
    let lines = world.wait_for_log("app", "method=HEAD", 1).await;
    assert!(
        lines[0].contains("at=info ") && lines[0].contains("bytes=0 "),
        "{lines:?}"
    );

    // The client goes away in the middle of a large download: R16.
    let response = send_streaming(router.addr, request(HOST, "/download?bytes=100000000")).await;
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);
    let lines = world.wait_for_log("app", "code=R16", 1).await;
    assert_eq!(lines.len(), 1, "{:?}", world.router_log("app"));
    assert!(lines[0].contains("status=200 "), "{lines:?}");

    // The backend goes away in the middle of its response: R17, and the client's
    // response is cut short rather than completed.
    let response = send_streaming(router.addr, request("cut.localhost", "/")).await;
    assert_eq!(response.status(), 200);
    assert!(response.into_body().collect().await.is_err());
    let lines = world.wait_for_log("cut", "code=R17", 1).await;
    assert_eq!(lines.len(), 1, "{:?}", world.router_log("cut"));
}
