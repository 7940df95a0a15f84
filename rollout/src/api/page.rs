//! The live page at `GET /`: plain HTML, CSS and a small script, compiled
//! into the binary so the controller needs nothing else to show it (no build
//! step, no external URL). The script reads the API and its event stream;
//! this module only serves the three files.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("page/index.html");
const CSS: &str = include_str!("page/page.css");
const JS: &str = include_str!("page/page.js");

/// `GET /`, `GET /ui/page.css`, `GET /ui/page.js`, for any router state, so
/// the API can `merge` them.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { file("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/page.css",
            get(|| async { file("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/ui/page.js",
            get(|| async { file("text/javascript; charset=utf-8", JS) }),
        )
}

/// A file with its type; `no-cache` so a browser always revalidates and an
/// upgraded controller's page is the one shown.
fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One plain HTTP/1.1 GET; the whole answer, head and body.
    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: page\r\nConnection: close\r\n\r\n");
        conn.write_all(req.as_bytes()).await.unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn serves_the_three_files_with_their_types() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, routes::<()>()).await.unwrap();
        });
        for (path, kind, needle) in [
            ("/", "text/html", "/ui/page.js"),
            ("/ui/page.css", "text/css", "data-state"),
            ("/ui/page.js", "text/javascript", "/v1/events"),
        ] {
            let answer = get(addr, path).await.to_ascii_lowercase();
            let (head, body) = answer.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
            assert!(
                head.contains(&format!("content-type: {kind}")),
                "{path}: {head}"
            );
            assert!(head.contains("cache-control: no-cache"), "{path}: {head}");
            assert!(
                body.contains(&needle.to_ascii_lowercase()),
                "{path} lacks {needle}"
            );
        }
        server.abort();
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_never_parses_data_as_html() {
        for text in [INDEX, CSS, JS] {
            // The SVG namespace is a name, not something fetched.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://") && !text.contains("https://"));
            assert!(!text.contains("innerHTML") && !text.contains("outerHTML"));
        }
    }
}
