//! Headless Chromium (Debian's `chromium`) driven through the DevTools protocol over a pipe
//! (`--remote-debugging-pipe`: JSON messages ended by NUL on descriptors 3 and 4), so the
//! page test needs no WebSocket client, no Node and nothing downloaded at test time.
use std::{
    fs::File,
    io::{BufRead, BufReader, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::process::CommandExt,
    },
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use serde_json::{Value, json};

pub struct Browser {
    child: Child,
    to: File,
    from: mpsc::Receiver<Value>,
    next_id: u64,
    session: Option<String>,
    /// Events received while waiting for answers.
    events: Vec<Value>,
    runtime_enabled: bool,
    /// The page's target.
    target_id: String,
}

/// A pipe whose ends are above the descriptors the child gets (3, 4), close-on-exec.
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: a two-element array for pipe2 to fill; checked below.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let high = |fd: i32| {
        // SAFETY: duplicating a descriptor we own to one >= 10, then closing the original.
        let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
        assert!(new >= 10);
        unsafe { libc::close(fd) };
        // SAFETY: a fresh descriptor nobody else owns.
        unsafe { OwnedFd::from_raw_fd(new) }
    };
    (high(fds[0]), high(fds[1]))
}

impl Browser {
    pub fn launch(profile_dir: &Path) -> Self {
        let (child_reads, we_write) = pipe();
        let (we_read, child_writes) = pipe();
        let (r, w) = (child_reads.as_raw_fd(), child_writes.as_raw_fd());
        let mut cmd = Command::new("chromium");
        cmd.args([
            "--headless=new",
            // Root cannot use Chromium's sandbox; the page is our own.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-pipe",
            "--window-size=1400,1000",
        ])
        .arg(format!("--user-data-dir={}", profile_dir.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only dup2 between fork and exec (async-signal-safe); dup2 clears
        // close-on-exec on the new descriptors, so exactly these two reach Chromium.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .expect("chromium starts (cargo xtask setup installs Debian's chromium)");
        drop(child_reads);
        drop(child_writes);
        let (tx, from) = mpsc::channel();
        let reader = File::from(we_read);
        std::thread::spawn(move || {
            let mut r = BufReader::new(reader);
            loop {
                let mut msg = Vec::new();
                match r.read_until(0, &mut msg) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                msg.pop();
                if let Ok(v) = serde_json::from_slice::<Value>(&msg)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        let mut b = Self {
            child,
            to: File::from(we_write),
            from,
            next_id: 0,
            session: None,
            events: Vec::new(),
            runtime_enabled: false,
            target_id: String::new(),
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        b.target_id.clone_from(&target_id);
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        b.session = Some(
            attached["sessionId"]
                .as_str()
                .expect("sessionId")
                .to_string(),
        );
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
        );
        b
    }

    /// Sends a command (to the page once attached) and waits for its answer.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call_in(session.as_deref(), method, params)
    }

    /// Sends a command to a session (a page or a frame) and waits for its answer.
    pub fn call_in(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.try_call_in(session, method, params)
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// As [`Self::call_in`], with Chromium's error given back rather than failing the test.
    fn try_call_in(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).expect("JSON");
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        loop {
            let v = self
                .from
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("chromium did not answer {method}"));
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    return Err(e.clone());
                }
                return Ok(v["result"].clone());
            }
            if v.get("method").is_some() {
                self.events.push(v);
            }
        }
    }

    /// `expression` evaluated in every child frame of the page, newest first: in-process
    /// frames through their default execution context, out-of-process ones (Chromium
    /// isolates sandboxed frames) through a session attached to their own target.
    pub fn eval_in_frames(&mut self, expression: &str) -> Vec<Value> {
        if !self.runtime_enabled {
            // Announces every execution context, existing ones first.
            self.call("Runtime.enable", json!({}));
            self.runtime_enabled = true;
        }
        let tree = self.call("Page.getFrameTree", json!({}));
        let children: Vec<Value> = tree["frameTree"]["childFrames"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["frame"]["id"].clone())
            .collect();
        let destroyed: Vec<u64> = self
            .events
            .iter()
            .filter(|e| e["method"] == "Runtime.executionContextDestroyed")
            .filter_map(|e| e["params"]["executionContextId"].as_u64())
            .collect();
        let contexts: Vec<u64> = self
            .events
            .iter()
            .filter(|e| e["method"] == "Runtime.executionContextCreated")
            .map(|e| &e["params"]["context"])
            .filter(|c| {
                c["auxData"]["isDefault"] == true && children.contains(&c["auxData"]["frameId"])
            })
            .filter_map(|c| c["id"].as_u64())
            .filter(|id| !destroyed.contains(id))
            .collect();
        let targets = self.call_in(None, "Target.getTargets", json!({}));
        let page = json!(self.target_id);
        let frame_targets: Vec<String> = targets["targetInfos"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["type"] == "iframe" && t["parentId"] == page)
            .filter_map(|t| t["targetId"].as_str().map(String::from))
            .collect();
        let mut out = Vec::new();
        for id in contexts.into_iter().rev() {
            let session = self.session.clone();
            let r = self.try_call_in(
                session.as_deref(),
                "Runtime.evaluate",
                json!({"expression": expression, "contextId": id, "returnByValue": true}),
            );
            match r {
                Ok(r) => out.push(r["result"]["value"].clone()),
                // A frame the page replaced after the events above were read: its document
                // is gone, and the new one is asked at the caller's next poll.
                Err(e) if e["message"] == "Cannot find context with specified id" => {}
                Err(e) => panic!("Runtime.evaluate: {e}"),
            }
        }
        for t in frame_targets.into_iter().rev() {
            let attached = self.call_in(
                None,
                "Target.attachToTarget",
                json!({"targetId": t, "flatten": true}),
            );
            let Some(session) = attached["sessionId"].as_str().map(String::from) else {
                continue;
            };
            let r = self.call_in(
                Some(&session),
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            );
            out.push(r["result"]["value"].clone());
            self.call_in(
                None,
                "Target.detachFromTarget",
                json!({"sessionId": session}),
            );
        }
        out
    }

    /// Evaluates `expression` in the page, awaiting a promise; its value as JSON. A thrown
    /// error fails the test with its message.
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("page script failed: {e}");
        }
        r["result"]["value"].clone()
    }

    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        for _ in 0..200 {
            if self.eval("document.readyState") == "complete" {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{url} did not load");
    }

    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64_decode(shot["data"].as_str().expect("data"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
