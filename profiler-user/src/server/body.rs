//! Response bodies: whole ones, and streams fed through a channel (server-sent events).
use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use hyper::{
    Response, StatusCode,
    body::{Bytes, Frame, SizeHint},
    header::{self, HeaderValue},
};

pub enum Body {
    Full(Option<Bytes>),
    /// Ends when the sender is dropped; the sender sees the receiver gone once the client is.
    Stream(tokio::sync::mpsc::Receiver<Bytes>),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Self::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Stream(_) => SizeHint::default(),
        }
    }
}

pub type Reply = Response<Body>;

pub fn bytes(status: StatusCode, content_type: &'static str, b: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Body::Full(Some(b.into())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Answers depend on the moment (progress, process lists): never reuse one.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Reply {
    match serde_json::to_vec_pretty(value) {
        Ok(v) => bytes(status, "application/json", v),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("JSON: {e}")),
    }
}

/// An error as JSON, `{"error": "…"}`: one line a person can act on.
pub fn error(status: StatusCode, message: &str) -> Reply {
    let v = serde_json::json!({ "error": message });
    bytes(
        status,
        "application/json",
        serde_json::to_vec(&v).unwrap_or_default(),
    )
}

pub fn empty(status: StatusCode) -> Reply {
    let mut r = Response::new(Body::Full(None));
    *r.status_mut() = status;
    r
}

pub fn stream(content_type: &'static str, rx: tokio::sync::mpsc::Receiver<Bytes>) -> Reply {
    let mut r = Response::new(Body::Stream(rx));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
