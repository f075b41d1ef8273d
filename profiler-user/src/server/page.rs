//! The web page, built into the binary: one HTML file with its script and style inline, so
//! nothing is fetched from elsewhere and no Node is needed at run time.
use hyper::{
    StatusCode,
    header::{self, HeaderValue},
};

use super::body::{self, Reply};

const INDEX: &str = include_str!("page/index.html");

pub fn index() -> Reply {
    let mut r = body::bytes(StatusCode::OK, "text/html; charset=utf-8", INDEX);
    // Its own script and style only; flame graphs run sandboxed in frames of blob: URLs;
    // the Perfetto UI is opened in its own window.
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; frame-src blob:; img-src 'self' data: blob:; connect-src 'self'",
        ),
    );
    r.headers_mut()
        .insert("x-frame-options", HeaderValue::from_static("DENY"));
    r
}
