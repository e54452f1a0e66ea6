//! The dashboard in a real browser: two node processes form a grid, one
//! serves its actuator (`run --http`), some traffic goes through it, and
//! headless Chromium loads the page, runs its scripts and shows numbers
//! that must match the JSON routes. The test also writes the screenshot
//! docs/operations.md shows.
//!
//! Needs Chromium (Debian package `chromium`): under `CI=true` a missing
//! browser fails the test, locally it skips with a reason.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hydracache-node");

struct Node {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Node {
    fn start(dir: &Path, id: &str, extra: &[&str]) -> Node {
        let mut child = Command::new(BIN)
            .args([
                "run",
                "--cluster",
                "web",
                "--node-id",
                id,
                "--gossip-ms",
                "50",
            ])
            .arg("--ca")
            .arg(dir.join("ca.pem"))
            .arg("--cert")
            .arg(dir.join(format!("{id}.pem")))
            .arg("--key")
            .arg(dir.join(format!("{id}.key")))
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Node {
            child,
            stdin,
            lines,
        }
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .expect("a line from the node")
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        self.line()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 GET on loopback; the body of a 200 answer.
fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    body.to_string()
}

fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("Chromium is required under CI=true (Debian package: chromium)");
        }
        eprintln!("skipping: Chromium is not installed (Debian package: chromium)");
    }
    found
}

/// Runs headless Chromium on `url` with a fresh profile; `mode` is
/// `--dump-dom` or `--screenshot=PATH`. Virtual time lets the page's
/// scripts fetch and render (once a virtual second) before the dump or the
/// shot, in less wall-clock time than the budget.
fn browse(browser: &Path, profile: &Path, url: &str, mode: &str, budget_ms: u32) -> String {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,1220",
        ])
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(mode)
        .arg(url)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium {mode}: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `data-value` of the element with this id in a dumped DOM.
fn shown(dom: &str, id: &str) -> String {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let rest = &dom[at..];
    let start = rest.find("data-value=\"").unwrap() + "data-value=\"".len();
    rest[start..][..rest[start..].find('"').unwrap()].to_string()
}

/// The text of the element with this id in a dumped DOM.
fn text(dom: &str, id: &str) -> String {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let rest = &dom[at..];
    let start = rest.find('>').unwrap() + 1;
    rest[start..][..rest[start..].find('<').unwrap()].to_string()
}

#[test]
fn the_dashboard_shows_what_the_json_routes_say() {
    let Some(browser) = chromium() else { return };
    let dir = std::env::temp_dir().join(format!("hydracache-dashboard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let certs = Command::new(BIN)
        .args(["certs", "--cluster", "web", "--out"])
        .arg(&dir)
        .args(["api-1", "api-2"])
        .output()
        .unwrap();
    assert!(certs.status.success());

    let mut n1 = Node::start(&dir, "api-1", &["--bootstrap", "--http", "127.0.0.1:0"]);
    let listen = n1.line();
    let seed = listen
        .strip_prefix("LISTEN ")
        .expect("LISTEN line")
        .to_string();
    let http = n1.line();
    let url = http.strip_prefix("HTTP ").expect("HTTP line").to_string();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut n2 = Node::start(&dir, "api-2", &["--seed", &seed]);
    let _ = n2.line();
    for _ in 0..400 {
        if n1.ask("view").starts_with("VIEW members=api-1,api-2 ") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(n1.ask("view").starts_with("VIEW members=api-1,api-2 "));

    // Traffic: puts, hits, misses, loads, a tag invalidation.
    for i in 0..40 {
        assert_eq!(n1.ask(&format!("put user:{i} name-{i} users")), "OK");
    }
    for i in 0..60 {
        let _ = n1.ask(&format!("get user:{i}"));
    }
    for i in 0..5 {
        assert!(n1.ask(&format!("load order:{i} o{i}")).starts_with("VALUE"));
    }
    assert_eq!(n1.ask("put session:1 s"), "OK");
    assert_eq!(n2.ask("invalidate-tag users"), "OK");

    let profile = dir.join("profile");
    let dom = browse(&browser, &profile, &url, "--dump-dom", 5_000);
    let diag: Value = serde_json::from_str(&http_get(&addr, "/caches/grid/diagnostics")).unwrap();
    let cluster: Value = serde_json::from_str(&http_get(&addr, "/cluster")).unwrap();
    let health: Value = serde_json::from_str(&http_get(&addr, "/health")).unwrap();

    let updates: u64 = dom
        .split("data-updates=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(updates >= 2, "the page refreshed {updates} times");
    let s = &diag["stats"];
    assert_eq!(s["hits"], 40);
    for (id, json) in [
        ("v-hits", &s["hits"]),
        ("v-misses", &s["misses"]),
        ("v-entries", &diag["entries"]),
        ("v-bytes", &diag["bytes"]),
        ("v-capacity", &diag["capacity_bytes"]),
        ("v-tags", &diag["tags"]),
        ("v-loads", &s["loads"]),
        ("v-joins", &s["single_flight_joins"]),
        ("v-invalidations", &s["invalidations"]),
        ("v-evicted-capacity", &s["evictions"]["capacity"]),
        ("v-evicted-invalidated", &s["evictions"]["invalidated"]),
        ("v-evicted-expired", &s["evictions"]["expired"]),
    ] {
        assert_eq!(shown(&dom, id), json.to_string(), "#{id}");
    }
    assert_eq!(shown(&dom, "v-hit-ratio"), s["hit_ratio"].to_string());
    assert_eq!(text(&dom, "health"), health["status"].as_str().unwrap());
    assert_eq!(text(&dom, "health"), "up");
    let node = &cluster["caches"][0];
    assert_eq!(text(&dom, "c-node"), "api-1");
    assert_eq!(text(&dom, "c-epoch"), node["epoch"].to_string());
    assert_eq!(text(&dom, "c-generation"), node["generation"].to_string());
    let leader = node["raft"]["leader"].as_str().unwrap();
    assert_eq!(
        text(&dom, "c-leader"),
        format!("{leader} ({})", node["raft"]["term"])
    );
    for id in ["api-1", "api-2"] {
        let row = &dom[dom
            .find(&format!("data-node=\"{id}\""))
            .expect("a row per member")..];
        let row = &row[..row.find("</tr>").unwrap()];
        assert!(
            row.contains("<td>member</td>") && row.contains(">live</td>"),
            "{row}"
        );
        assert_eq!(row.contains("<td>leader</td>"), id == leader, "{row}");
        let peer = node["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap();
        for cell in [
            peer["generation"].to_string(),
            peer["addr"].as_str().unwrap().to_string(),
        ] {
            assert!(row.contains(&format!("<td>{cell}</td>")), "{cell} in {row}");
        }
        assert_eq!(
            row.contains("<td>this node</td>"),
            id == "api-1",
            "last heard: {row}"
        );
        if id == "api-2" {
            assert!(row.contains(" s ago</td>"), "last heard: {row}");
        }
    }
    let inv = &node["invalidations"];
    assert_eq!(
        text(&dom, "c-acks"),
        format!("{} / {}", inv["acknowledged"], inv["late_nodes"])
    );
    assert_eq!(
        text(&dom, "c-gap-flushes"),
        inv["flushes_on_gap"].to_string()
    );
    let read = &node["read_path"];
    assert_eq!(
        text(&dom, "c-remote"),
        format!("{} / {}", read["remote_hits"], read["remote_misses"])
    );

    // The screenshot docs/operations.md shows, taken while reads go on so
    // the chart has something to draw (bounded: at most 20,000 reads). It
    // goes to the target directory; HYDRACACHE_UPDATE_SCREENSHOT=1 writes
    // docs/actuator-dashboard.png instead, so a test run leaves the tree clean.
    let shot = if std::env::var_os("HYDRACACHE_UPDATE_SCREENSHOT").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/actuator-dashboard.png")
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("actuator-dashboard.png")
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            for i in 0..20_000u32 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                // Every n-th read misses, n moving between 2 and 7 so the
                // per-second hit ratio changes over the chart.
                let every = 2 + (i / 400) % 6;
                if i % every == 0 {
                    let _ = n1.ask(&format!("get absent:{i}"));
                } else {
                    let _ = n1.ask(&format!("load user:{} v", i % 50));
                }
            }
            n1
        })
    };
    let _ = browse(
        &browser,
        &dir.join("profile-shot"),
        &url,
        &format!("--screenshot={}", shot.display()),
        90_000,
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let n1 = reader.join().unwrap();
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a screenshot of the page"
    );

    drop(n2);
    drop(n1);
    let _ = std::fs::remove_dir_all(&dir);
}
