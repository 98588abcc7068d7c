//! The document sink family against real receivers: the `http` sink POSTs a document (bytes or a
//! streamed file) with its media type, name, sha256 and a stable idempotency key, retries a busy
//! receiver and refuses a changed file; the `s3` sink (moto) stores the document, its checksum
//! and metadata once, finds it delivered on a retry and never replaces it with other content.

mod support;

use asana_worker::sinks::SinkError;
use asana_worker::sinks::document::http::{HttpDocumentSettings, HttpDocumentSink};
use asana_worker::sinks::document::s3::{S3DocumentSettings, S3DocumentSink};
use asana_worker::sinks::document::{Content, Document, DocumentSink, sha256_of};
use serde_json::json;
use support::audit::Collector;
use support::moto::Moto;

fn document<'a>(name: &'a str, content: Content<'a>, sha256: &'a str) -> Document<'a> {
    Document {
        stream: "weekly-digest",
        name,
        content,
        media_type: "text/markdown",
        sha256,
        metadata: None,
    }
}

fn http_sink(url: &str) -> HttpDocumentSink {
    let settings: HttpDocumentSettings = toml::from_str(&format!(
        "url = {url:?}\nmin_backoff = \"1s\"\nmax_backoff = \"1s\"\nmax_attempts = 3\n"
    ))
    .unwrap();
    HttpDocumentSink::new(&settings).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_sink_posts_a_document_with_its_name_hash_and_a_stable_key() {
    // Every second POST answers 503 first: each delivery below is retried once.
    let (collector, addr) = Collector::start(2).await;
    let sink = http_sink(&format!("http://{addr}/hooks/digest"));
    let text = b"# Monday digest\n\n- overdue: 2\n";
    let (sha, _) = sha256_of(Content::Bytes(text)).unwrap();
    let delivered = sink
        .deliver(&document("2026-W49.md", Content::Bytes(text), &sha))
        .await
        .unwrap();
    assert!(!delivered.already);
    assert_eq!(delivered.size, text.len() as u64);

    // A file is streamed; the same document again carries the same key.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.json.gz");
    std::fs::write(&file, vec![7u8; 300_000]).unwrap();
    let (file_sha, _) = sha256_of(Content::File(&file)).unwrap();
    for _ in 0..2 {
        sink.deliver(&document("export.json.gz", Content::File(&file), &file_sha))
            .await
            .unwrap();
    }
    let received = collector.received.lock().unwrap().clone();
    assert_eq!(received.len(), 3, "three deliveries stored");
    let (headers, body) = &received[0];
    assert_eq!(body.as_slice(), text);
    assert_eq!(headers["content-type"], "text/markdown");
    assert_eq!(
        headers["x-asana-worker-document"],
        "weekly-digest/2026-W49.md"
    );
    assert_eq!(headers["x-asana-worker-sha256"], sha);
    assert_eq!(
        headers["idempotency-key"],
        format!("weekly-digest-2026-W49.md-{}", &sha[..16])
    );
    assert_eq!(received[1].1, std::fs::read(&file).unwrap());
    assert_eq!(
        received[1].0["idempotency-key"],
        received[2].0["idempotency-key"]
    );
    assert!(collector.conflicts.lock().unwrap().is_empty());
    assert_eq!(*collector.posts.lock().unwrap(), 5, "two 503s were retried");

    // A file that no longer hashes to its recorded sha256 is not sent.
    std::fs::write(&file, b"changed").unwrap();
    let error = sink
        .deliver(&document("export.json.gz", Content::File(&file), &file_sha))
        .await
        .unwrap_err();
    assert!(matches!(error, SinkError::Corrupt { .. }), "{error}");
    assert_eq!(collector.received.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_refusing_receiver_fails_the_delivery_clearly() {
    let app = axum::Router::new()
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "no such hook") });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let sink = http_sink(&format!("http://{addr}/hooks/gone"));
    let (sha, _) = sha256_of(Content::Bytes(b"x")).unwrap();
    let error = sink
        .deliver(&document("x.md", Content::Bytes(b"x"), &sha))
        .await
        .unwrap_err();
    assert!(matches!(error, SinkError::Rejected { .. }), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("404") && text.contains("no such hook"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_sink_stores_a_document_once_and_never_replaces_it() {
    let Some(moto) = Moto::start("s3 document sink").await else {
        return;
    };
    moto.bucket("documents").await;
    let settings: S3DocumentSettings = toml::from_str(&format!(
        "bucket = \"documents\"\nprefix = \"asana\"\nendpoint = {:?}\nallow_http = true\n",
        moto.endpoint
    ))
    .unwrap();
    let sink = S3DocumentSink::with_credentials(&settings, moto.credentials()).unwrap();
    let text = b"weekly digest body";
    let (sha, _) = sha256_of(Content::Bytes(text)).unwrap();
    let metadata = json!({"period": "2026-W49", "tasks": 12});
    let mut doc = document("2026-W49.md", Content::Bytes(text), &sha);
    doc.metadata = Some(&metadata);
    let first = sink.deliver(&doc).await.unwrap();
    assert!(!first.already);
    assert_eq!(first.location, "asana/weekly-digest/2026-W49.md");
    assert_eq!(
        moto.object("documents", "asana/weekly-digest/2026-W49.md")
            .await
            .unwrap(),
        text
    );
    let checksum = moto
        .object("documents", "asana/weekly-digest/2026-W49.md.sha256")
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(checksum).unwrap(),
        format!("{sha}  2026-W49.md\n")
    );
    let stored: serde_json::Value = serde_json::from_slice(
        &moto
            .object("documents", "asana/weekly-digest/2026-W49.md.manifest.json")
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stored, metadata);

    // A retry finds it delivered; other bytes under the name are refused.
    assert!(sink.deliver(&doc).await.unwrap().already);
    let other = b"another body";
    let (other_sha, _) = sha256_of(Content::Bytes(other)).unwrap();
    let error = sink
        .deliver(&document("2026-W49.md", Content::Bytes(other), &other_sha))
        .await
        .unwrap_err();
    assert!(matches!(error, SinkError::Conflict { .. }), "{error}");
    assert_eq!(
        moto.object("documents", "asana/weekly-digest/2026-W49.md")
            .await
            .unwrap(),
        text
    );
}
