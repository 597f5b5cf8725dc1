//! HTTPS on the router: the certificate picked by SNI from the route table's files,
//! HTTP/2 and HTTP/1.1 by ALPN, `X-Forwarded-Proto: https`.

mod router_support;

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use router_support::*;
use slipway::api::routes::{AppRoutes, Backend, RouteTable, TlsFiles};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

const DOMAIN: &str = "shop.example.com";

/// A test CA and a certificate for [`DOMAIN`] signed by it, written as PEM files.
fn make_certificates(world: &World) -> (CertificateDer<'static>, TlsFiles) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "slipway test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![DOMAIN.to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let files = TlsFiles {
        cert: world.dir.path().join("fullchain.pem"),
        key: world.dir.path().join("key.pem"),
    };
    std::fs::write(&files.cert, leaf.pem() + &ca.pem()).unwrap();
    std::fs::write(&files.key, leaf_key.serialize_pem()).unwrap();
    (ca.der().clone(), files)
}

fn connector(ca: CertificateDer<'static>, alpn: &[u8]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(ca).unwrap();
    let mut config = ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

async fn setup() -> (World, TestBackend, RouterProcess, CertificateDer<'static>) {
    let backend = TestBackend::start("secure").await;
    let mut world = World::new();
    let (ca, files) = make_certificates(&world);
    let mut table = RouteTable::new(0);
    table.apps.insert(
        "shop".into(),
        AppRoutes {
            domains: vec![DOMAIN.into()],
            backends: vec![Backend {
                container: "web-1".into(),
                address: backend.addr,
            }],
            tls: [(DOMAIN.to_string(), files)].into(),
        },
    );
    world.write_table(table);
    let router = RouterProcess::start(&world, &["--tls-listen", "127.0.0.1:0"]);
    (world, backend, router, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_tls_with_the_domain_certificate() {
    let (world, _backend, router, ca) = setup().await;
    let tcp = tokio::net::TcpStream::connect(router.tls_addr.unwrap())
        .await
        .unwrap();
    let tls = connector(ca, b"h2")
        .connect(ServerName::try_from(DOMAIN).unwrap(), tcp)
        .await
        .expect("TLS handshake with the domain's certificate");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    // Concurrent streams on one connection.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let mut sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            let req = hyper::Request::get(format!("https://{DOMAIN}/headers?i={i}"))
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let res = sender.send_request(req).await.unwrap();
            assert_eq!(res.version(), hyper::Version::HTTP_2);
            assert_eq!(res.status(), 200);
            let body = res.into_body().collect().await.unwrap().to_bytes();
            String::from_utf8(body.to_vec()).unwrap()
        }));
    }
    for task in tasks {
        let body = task.await.unwrap();
        assert!(body.contains("x-forwarded-proto: https\n"), "{body}");
        assert!(body.contains(&format!("host: {DOMAIN}\n")), "{body}");
        assert!(body.contains("cookie: a=1; b=2\n"), "{body}");
    }
    let lines = world.wait_for_log("shop", "protocol=https", 10).await;
    assert_eq!(lines.len(), 10, "{:?}", world.router_log("shop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_over_tls_and_unknown_names_are_refused() {
    let (_world, _backend, router, ca) = setup().await;
    let tls_addr = router.tls_addr.unwrap();
    let tcp = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
    let tls = connector(ca.clone(), b"http/1.1")
        .connect(ServerName::try_from(DOMAIN).unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let res = sender
        .send_request(request(DOMAIN, "/headers"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("x-forwarded-proto: https\n"), "{body}");
    assert!(
        body.contains(&format!("x-forwarded-port: {}\n", tls_addr.port())),
        "{body}"
    );

    // No certificate for a name the table does not list: the handshake fails.
    let tcp = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
    let refused = connector(ca, b"http/1.1")
        .connect(ServerName::try_from("other.example.com").unwrap(), tcp)
        .await;
    assert!(refused.is_err());
}
