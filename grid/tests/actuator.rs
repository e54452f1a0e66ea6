//! The actuator's routes on local grids, driven without a socket.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use hydracache::actuator::Actuator;
use hydracache::{CacheOptions, Grid, GridStats, Postcard};
use serde_json::Value;
use tower::ServiceExt;

async fn get(
    router: &Router,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String, String) {
    let mut request = Request::get(path);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

async fn get_json(router: &Router, path: &str) -> (StatusCode, Value) {
    let (status, content_type, body) = get(router, path, &[]).await;
    assert!(
        content_type.starts_with("application/json"),
        "{path}: {content_type}"
    );
    (status, serde_json::from_str(&body).unwrap())
}

/// Some traffic: hits, misses, a load, a tag invalidation.
async fn traffic(grid: &Grid) {
    for i in 0..5u32 {
        grid.put(&format!("user:{i}"), i, CacheOptions::new().tag("users"))
            .await
            .unwrap();
    }
    for i in 0..8u32 {
        let _ = grid.get::<u32>(&format!("user:{i}")).await.unwrap();
    }
    let v: u32 = grid
        .get_or_load("user:99", CacheOptions::new(), || async {
            Ok::<_, std::io::Error>(99)
        })
        .await
        .unwrap();
    assert_eq!(v, 99);
    grid.invalidate_tag("users").await.unwrap();
}

fn assert_stats_match(json: &Value, s: &GridStats) {
    assert_eq!(json["hits"], s.hits);
    assert_eq!(json["misses"], s.misses);
    assert_eq!(json["loads"], s.loads);
    assert_eq!(json["load_errors"], s.load_errors);
    assert_eq!(json["single_flight_joins"], s.single_flight_joins);
    assert_eq!(json["stale_loads_discarded"], s.stale_loads_discarded);
    assert_eq!(json["invalidations"], s.invalidations);
    assert_eq!(json["evictions"]["capacity"], s.evicted_capacity);
    assert_eq!(json["evictions"]["expired"], s.evicted_expired);
    assert_eq!(json["evictions"]["invalidated"], s.evicted_invalidated);
    assert_eq!(json["events_lagged"], s.subscriber_lag);
    assert_eq!(json["hit_ratio"].as_f64(), s.hit_ratio());
}

#[tokio::test]
async fn every_route_answers_for_local_grids_with_counts_that_match_stats() {
    let main = Grid::local().max_capacity_bytes(1 << 20).build();
    let users = Grid::local().codec::<Postcard>().build();
    traffic(&main).await;
    let router = Actuator::new()
        .cache("main", main.clone())
        .cache("users", users)
        .router();

    let (status, health) = get_json(&router, "/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "up");
    assert_eq!(health["caches"][0]["name"], "main");
    assert_eq!(health["caches"][0]["mode"], "local");
    assert_eq!(health["caches"][0]["reasons"], serde_json::json!([]));

    let (status, list) = get_json(&router, "/caches").await;
    assert_eq!(status, StatusCode::OK);
    let d = main.diagnostics();
    let names: Vec<_> = list["caches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(names, ["main", "users"]);
    assert_eq!(list["caches"][0]["entries"], d.entries);
    assert_eq!(list["caches"][0]["bytes"], d.bytes);
    assert_eq!(list["caches"][0]["capacity_bytes"], 1 << 20);

    let (status, stats) = get_json(&router, "/caches/main/stats").await;
    assert_eq!(status, StatusCode::OK);
    let s = main.stats();
    assert_eq!((s.hits, s.misses, s.loads), (5, 4, 1));
    assert_stats_match(&stats, &s);

    let (status, diag) = get_json(&router, "/caches/main/diagnostics").await;
    assert_eq!(status, StatusCode::OK);
    let d = main.diagnostics();
    assert_eq!(diag["name"], "main");
    assert_eq!(diag["entries"], d.entries);
    assert_eq!(diag["bytes"], d.bytes);
    assert_eq!(diag["tags"], d.tags);
    assert_eq!(diag["loads_in_flight"], 0);
    assert_eq!(diag["codec"], "rkyv");
    assert_stats_match(&diag["stats"], &d.stats);
    let (_, diag) = get_json(&router, "/caches/users/diagnostics").await;
    assert_eq!(diag["codec"], "postcard");

    let (status, cluster) = get_json(&router, "/cluster").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        cluster,
        serde_json::json!({ "caches": [
            { "name": "main", "mode": "local" },
            { "name": "users", "mode": "local" },
        ]})
    );

    let (status, content_type, page) = get(&router, "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/html"));
    assert!(page.contains("<canvas id=\"chart\""));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no CDN"
    );
}

#[tokio::test]
async fn no_route_exposes_a_key_or_a_value() {
    let grid = Grid::local().build();
    grid.put(
        "secret-key-41",
        "secret-value-42".to_string(),
        CacheOptions::new().tag("secret-tag-43"),
    )
    .await
    .unwrap();
    let _ = grid.get::<String>("secret-key-41").await.unwrap();
    let router = Actuator::new().cache("main", grid).router();
    for path in [
        "/health",
        "/caches",
        "/caches/main/stats",
        "/caches/main/diagnostics",
        "/cluster",
        "/metrics",
        "/",
    ] {
        let (status, _, body) = get(&router, path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(!body.contains("secret"), "{path} leaks: {body}");
    }
}

#[tokio::test]
async fn unknown_caches_and_routes_are_404_and_writes_are_refused() {
    let router = Actuator::new()
        .cache("main", Grid::local().build())
        .router();
    for path in ["/caches/nope/stats", "/caches/nope/diagnostics", "/nope"] {
        let (status, body) = get_json(&router, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(body["error"].is_string());
    }
    let response = router
        .clone()
        .oneshot(Request::post("/caches").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let response = router
        .oneshot(
            Request::delete("/caches/main/stats")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn with_a_token_every_route_wants_it() {
    let router = Actuator::new()
        .cache("main", Grid::local().build())
        .bearer_token("s3cret")
        .router();
    for path in [
        "/",
        "/health",
        "/caches",
        "/caches/main/stats",
        "/caches/main/diagnostics",
        "/cluster",
        "/metrics",
        "/nope",
    ] {
        let (status, _, _) = get(&router, path, &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} without a token");
        let (status, _, _) = get(&router, path, &[("authorization", "Bearer wrong")]).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{path} with a wrong token"
        );
        let (status, _, _) = get(&router, path, &[("authorization", "Bearer s3cret")]).await;
        let expected = if path == "/nope" {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        assert_eq!(status, expected, "{path} with the token");
    }
    let response = router
        .oneshot(Request::get("/health").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
}

#[test]
#[should_panic(expected = "given twice")]
fn a_cache_name_given_twice_is_refused() {
    let _ = Actuator::new()
        .cache("main", Grid::local().build())
        .cache("main", Grid::local().build());
}

#[test]
#[should_panic(expected = "ASCII letters")]
fn a_cache_name_that_cannot_be_a_path_segment_is_refused() {
    let _ = Actuator::new().cache("a/b", Grid::local().build());
}

/// `name{labels} value` lines of a text exposition, by series.
fn samples(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn metrics_match_stats_and_are_labelled_by_cache() {
    let main = Grid::local().max_capacity_bytes(1 << 20).build();
    traffic(&main).await;
    main.run_maintenance();
    let router = Actuator::new().cache("main", main.clone()).router();

    let (status, content_type, text) = get(&router, "/metrics", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let m = samples(&text);
    let s = main.stats();
    let d = main.diagnostics();
    let at = |series: &str| {
        *m.get(series)
            .unwrap_or_else(|| panic!("{series} missing in\n{text}"))
    };
    assert_eq!(at("hydracache_hits_total{cache=\"main\"}"), s.hits as f64);
    assert_eq!(
        at("hydracache_misses_total{cache=\"main\"}"),
        s.misses as f64
    );
    assert_eq!(at("hydracache_loads_total{cache=\"main\"}"), s.loads as f64);
    assert_eq!(
        at("hydracache_invalidations_total{cache=\"main\"}"),
        s.invalidations as f64
    );
    assert_eq!(
        at("hydracache_evictions_total{cache=\"main\",cause=\"invalidated\"}"),
        s.evicted_invalidated as f64
    );
    assert_eq!(at("hydracache_entries{cache=\"main\"}"), d.entries as f64);
    assert_eq!(
        at("hydracache_stored_bytes{cache=\"main\"}"),
        d.bytes as f64
    );
    assert_eq!(
        at("hydracache_capacity_bytes{cache=\"main\"}"),
        (1 << 20) as f64
    );
    assert_eq!(at("hydracache_up{cache=\"main\"}"), 1.0);
    assert!(text.contains("# TYPE hydracache_hits_total counter"));
    // Load durations: a histogram in seconds whose count is the loads'.
    assert!(d.load_latency.count() > 0);
    assert!(text.contains("# TYPE hydracache_load_duration_seconds histogram"));
    for series in [
        "hydracache_load_duration_seconds_count{cache=\"main\"}",
        "hydracache_load_duration_seconds_bucket{le=\"+Inf\",cache=\"main\"}",
    ] {
        assert_eq!(at(series), d.load_latency.count() as f64, "{series}");
    }
    let (ten_seconds, at_most) = d.load_latency.buckets().last().unwrap();
    assert_eq!(ten_seconds, std::time::Duration::from_secs(10));
    assert_eq!(
        at("hydracache_load_duration_seconds_bucket{le=\"10.0\",cache=\"main\"}"),
        at_most as f64
    );
    assert_eq!(
        at("hydracache_load_duration_seconds_sum{cache=\"main\"}"),
        d.load_latency.sum().as_secs_f64()
    );
    // Every sample's series is labelled by cache, and counters end in _total.
    for series in m.keys() {
        assert!(series.contains("cache=\"main\""), "{series}");
    }

    // Counters only grow.
    let _ = main.get::<u32>("user:99").await.unwrap();
    let (_, _, later) = get(&router, "/metrics", &[]).await;
    assert_eq!(
        samples(&later)["hydracache_hits_total{cache=\"main\"}"],
        (s.hits + 1) as f64
    );

    // A scraper that asks for OpenMetrics gets prometheus-client's own text.
    let (status, content_type, om) = get(
        &router,
        "/metrics",
        &[(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("application/openmetrics-text"));
    assert!(om.contains("# TYPE hydracache_hits counter"));
    assert!(om.ends_with("# EOF\n"));
}

#[tokio::test]
async fn metrics_pass_promtool_check_metrics() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let main = Grid::local().build();
    traffic(&main).await;
    let router = Actuator::new()
        .cache("main", main)
        .cache("other", Grid::local().codec::<Postcard>().build())
        .router();
    let (_, _, text) = get(&router, "/metrics", &[]).await;
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The path of a tool a test needs; under `CI=true` a missing tool fails
/// the test, locally it skips with a reason.
fn tool(name: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{name} is required under CI=true (Debian package: prometheus)");
        }
        eprintln!("skipping: {name} is not installed (Debian package: prometheus)");
    }
    found
}
