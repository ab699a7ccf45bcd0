//! Serving the page's static files.
//!
//! The page hosts a homeserver in a service worker, so a few headers matter more than usual:
//! every file is revalidated (`Cache-Control: no-cache` plus an `ETag`) so a rebuilt wasm or
//! worker script is seen on the next load, `sw.js` may control the whole origin, and MIME
//! types are exact (`application/wasm` for streaming compilation, `text/javascript` for module
//! scripts and workers).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;

use crate::AppState;

/// The document served for a directory.
const INDEX: &str = "index.html";

/// The web root, resolved once so that every served path can be checked against it.
pub struct StaticFiles {
    root: PathBuf,
}

impl StaticFiles {
    pub fn new(root: &Path) -> std::io::Result<Self> {
        let root = root.canonicalize()?;
        if !root.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "not a directory",
            ));
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Maps a URL path to a file inside the root, or `None` when the path is malformed, tries to
    /// leave the root (`..`, an absolute or drive component, a symlink pointing outside), names a
    /// hidden file, or does not exist.
    pub async fn resolve(&self, url_path: &str) -> Option<PathBuf> {
        let relative = relative_path(url_path)?;
        let mut candidate = self.root.join(&relative);
        if url_path.ends_with('/') || relative.as_os_str().is_empty() {
            candidate.push(INDEX);
        }
        let mut real = tokio::fs::canonicalize(&candidate).await.ok()?;
        if !real.starts_with(&self.root) {
            return None;
        }
        if tokio::fs::metadata(&real).await.ok()?.is_dir() {
            real.push(INDEX);
        }
        tokio::fs::metadata(&real)
            .await
            .ok()?
            .is_file()
            .then_some(real)
    }
}

/// Decodes a URL path into a relative filesystem path made only of normal components.
fn relative_path(url_path: &str) -> Option<PathBuf> {
    let decoded = percent_decode_str(url_path).decode_utf8().ok()?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return None;
    }
    let mut out = PathBuf::new();
    for segment in decoded.split('/').filter(|s| !s.is_empty()) {
        // Dot-files (and `.`/`..`) are never part of the page.
        if segment.starts_with('.') {
            return None;
        }
        let mut comps = Path::new(segment).components();
        match (comps.next(), comps.next()) {
            (Some(Component::Normal(c)), None) => out.push(c),
            _ => return None,
        }
    }
    Some(out)
}

/// The `Content-Type` for a file name.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("json" | "map") => "application/json",
        Some("webmanifest") => "application/manifest+json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// The fallback handler: every path that no other route claims is a file lookup.
pub async fn serve(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let method = req.method().clone();
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "method not allowed\n",
        )
            .into_response();
    }
    let url_path = req.uri().path();
    let Some(path) = state.files.resolve(url_path).await else {
        return not_found();
    };
    let meta = match tokio::fs::metadata(&path).await {
        Ok(m) => m,
        Err(_) => return not_found(),
    };
    let etag = entity_tag(&meta);
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&path)),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    if path.parent() == Some(state.files.root()) && path.file_name().is_some_and(|n| n == "sw.js") {
        headers.insert("service-worker-allowed", HeaderValue::from_static("/"));
    }
    if if_none_match(req.headers(), &etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    if method == Method::HEAD {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.len()));
        return (StatusCode::OK, headers).into_response();
    }
    match tokio::fs::read(&path).await {
        Ok(bytes) => (StatusCode::OK, headers, bytes).into_response(),
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot read file: {e}");
            not_found()
        }
    }
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        "not found\n",
    )
        .into_response()
}

/// A weak validator from size and modification time: changes whenever the file is rebuilt.
fn entity_tag(meta: &std::fs::Metadata) -> String {
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("W/\"{:x}-{:x}\"", meta.len(), modified)
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| {
            tag == "*"
                || tag == etag
                || tag.trim_start_matches("W/") == etag.trim_start_matches("W/")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_and_hidden_segments_are_refused() {
        assert!(relative_path("/../etc/passwd").is_none());
        assert!(relative_path("/a/%2e%2e/b").is_none());
        assert!(relative_path("/a/..%2fb").is_none());
        assert!(relative_path("/.git/config").is_none());
        assert!(relative_path("/a%5cb").is_none());
        assert!(relative_path("/a%00b").is_none());
        assert!(relative_path("/%ff").is_none());
    }

    #[test]
    fn normal_paths_map_below_the_root() {
        assert_eq!(
            relative_path("/pkg/hearth_web.wasm"),
            Some(PathBuf::from("pkg/hearth_web.wasm"))
        );
        assert_eq!(relative_path("//a//b/"), Some(PathBuf::from("a/b")));
        assert_eq!(relative_path("/"), Some(PathBuf::new()));
        assert_eq!(relative_path("/a%20b.js"), Some(PathBuf::from("a b.js")));
    }

    #[test]
    fn module_scripts_and_wasm_get_exact_types() {
        assert_eq!(content_type(Path::new("a.wasm")), "application/wasm");
        assert_eq!(
            content_type(Path::new("a.mjs")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("A.JS")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("noext")), "application/octet-stream");
    }
}
