//! The relay serves the page over real TCP, with the headers a service-worker host needs and
//! nothing outside its web root.

use std::path::Path;

use hearth_relay::{AppState, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

struct Relay {
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A temp dir holding `www/` (the root) and `secret.txt` beside it, outside the root.
async fn start() -> Relay {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    write(
        &www.join("index.html"),
        "<!doctype html><title>hearth</title>",
    );
    write(&www.join("app.js"), "export const app = 1;");
    write(
        &www.join("sw.js"),
        "self.addEventListener('fetch', () => {});",
    );
    write(&www.join("lib.mjs"), "export default 2;");
    write(&www.join("style.css"), "body { margin: 0 }");
    write(
        &www.join("logo.svg"),
        "<svg xmlns='http://www.w3.org/2000/svg'/>",
    );
    write(&www.join("manifest.json"), "{}");
    write(&www.join("pkg/hearth_web.wasm"), "\0asm\x01\0\0\0");
    write(&www.join("pkg/sw.js"), "// not the root service worker");
    write(&www.join("docs/index.html"), "<p>docs</p>");
    write(&www.join(".env"), "TOKEN=hidden");
    write(&dir.path().join("secret.txt"), "TOP SECRET");
    #[cfg(unix)]
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), www.join("leak.txt")).unwrap();

    let config =
        Config::from_args(["--listen", "127.0.0.1:0", "--www", www.to_str().unwrap()]).unwrap();
    let state = AppState::new(&config).unwrap();
    let listener = hearth_relay::bind(&config).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(hearth_relay::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    Relay {
        addr,
        _dir: dir,
        stop: Some(stop),
    }
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends the request line exactly as written: no client-side path normalisation, so
/// traversal attempts reach the server as an attacker would send them.
async fn raw(relay: &Relay, method: &str, target: &str, extra: &str) -> Resp {
    let mut s = TcpStream::connect(relay.addr).await.unwrap();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8(buf[..split].to_vec()).unwrap();
    let body = buf[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Resp {
        status,
        headers,
        body,
    }
}

async fn get(relay: &Relay, target: &str) -> Resp {
    raw(relay, "GET", target, "").await
}

#[tokio::test]
async fn wasm_is_served_as_application_wasm() {
    let relay = start().await;
    let r = get(&relay, "/pkg/hearth_web.wasm").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/wasm"));
    assert_eq!(r.body, b"\0asm\x01\0\0\0");
}

#[tokio::test]
async fn scripts_are_text_javascript() {
    let relay = start().await;
    for path in ["/app.js", "/lib.mjs", "/sw.js"] {
        let r = get(&relay, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            r.header("content-type"),
            Some("text/javascript; charset=utf-8"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn page_assets_get_their_mime_types() {
    let relay = start().await;
    for (path, ty) in [
        ("/index.html", "text/html; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/logo.svg", "image/svg+xml"),
        ("/manifest.json", "application/json"),
    ] {
        let r = get(&relay, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(ty), "{path}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn root_and_directories_serve_their_index() {
    let relay = start().await;
    let r = get(&relay, "/").await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("<title>hearth</title>"));
    for path in ["/docs/", "/docs"] {
        let r = get(&relay, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.text(), "<p>docs</p>", "{path}");
    }
}

#[tokio::test]
async fn html_js_and_wasm_are_revalidated_on_every_load() {
    let relay = start().await;
    for path in [
        "/",
        "/index.html",
        "/app.js",
        "/sw.js",
        "/pkg/hearth_web.wasm",
    ] {
        let r = get(&relay, path).await;
        assert_eq!(r.header("cache-control"), Some("no-cache"), "{path}");
        assert!(r.header("etag").is_some(), "{path}");
    }
}

#[tokio::test]
async fn unchanged_file_revalidates_with_304_and_changed_file_does_not() {
    let relay = start().await;
    let first = get(&relay, "/app.js").await;
    let etag = first.header("etag").unwrap().to_owned();
    let again = raw(
        &relay,
        "GET",
        "/app.js",
        &format!("If-None-Match: {etag}\r\n"),
    )
    .await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    std::thread::sleep(std::time::Duration::from_millis(20));
    write(
        &relay._dir.path().join("www/app.js"),
        "export const app = 22;",
    );
    let changed = raw(
        &relay,
        "GET",
        "/app.js",
        &format!("If-None-Match: {etag}\r\n"),
    )
    .await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.text(), "export const app = 22;");
}

#[tokio::test]
async fn root_service_worker_may_control_the_whole_origin() {
    let relay = start().await;
    assert_eq!(
        get(&relay, "/sw.js").await.header("service-worker-allowed"),
        Some("/")
    );
    // Only the root worker widens its scope.
    assert_eq!(
        get(&relay, "/pkg/sw.js")
            .await
            .header("service-worker-allowed"),
        None
    );
    assert_eq!(
        get(&relay, "/app.js")
            .await
            .header("service-worker-allowed"),
        None
    );
}

#[tokio::test]
async fn directory_traversal_is_refused() {
    let relay = start().await;
    for target in [
        "/../secret.txt",
        "/pkg/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/pkg/..%2f..%2fsecret.txt",
        "/pkg/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/..%5csecret.txt",
        "/%2fetc%2fpasswd",
        "//etc/passwd",
        "/index.html%00.js",
    ] {
        let r = get(&relay, target).await;
        assert_eq!(r.status, 404, "{target}");
        assert!(!r.text().contains("TOP SECRET"), "{target}");
        assert!(!r.text().contains("root:"), "{target}");
    }
}

#[cfg(unix)]
#[tokio::test]
async fn symlink_out_of_the_root_is_refused() {
    let relay = start().await;
    let r = get(&relay, "/leak.txt").await;
    assert_eq!(r.status, 404);
    assert!(!r.text().contains("TOP SECRET"));
}

#[tokio::test]
async fn hidden_files_are_not_served() {
    let relay = start().await;
    assert_eq!(get(&relay, "/.env").await.status, 404);
    assert_eq!(get(&relay, "/%2eenv").await.status, 404);
}

#[tokio::test]
async fn missing_file_is_404() {
    let relay = start().await;
    let r = get(&relay, "/nope.js").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(get(&relay, "/pkg/nope.wasm").await.status, 404);
    assert_eq!(get(&relay, "/app.js/more").await.status, 404);
}

#[tokio::test]
async fn head_sends_headers_without_body() {
    let relay = start().await;
    let r = raw(&relay, "HEAD", "/pkg/hearth_web.wasm", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/wasm"));
    assert_eq!(r.header("content-length"), Some("8"));
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn writes_are_method_not_allowed() {
    let relay = start().await;
    for method in ["POST", "PUT", "DELETE"] {
        let r = raw(&relay, method, "/index.html", "Content-Length: 0\r\n").await;
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method}");
    }
}

#[tokio::test]
async fn healthz_reports_ok() {
    let relay = start().await;
    let r = get(&relay, "/healthz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.text(), "{\"status\":\"ok\"}");
}

#[tokio::test]
async fn missing_web_root_is_a_startup_error() {
    let config = Config::from_args(["--www", "/definitely/not/here"]).unwrap();
    let err = AppState::new(&config).err().expect("must fail");
    assert!(err.to_string().contains("/definitely/not/here"), "{err}");
}
