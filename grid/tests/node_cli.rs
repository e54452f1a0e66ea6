//! The node binary's command line: help for every subcommand, flags from
//! `HYDRACACHE_*` environment variables, errors that name the bad flag.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_hydracache-node");

fn node(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn every_subcommand_has_help_naming_its_flags_and_variables() {
    let out = node(&["--help"], &[]);
    assert!(out.status.success());
    let top = String::from_utf8_lossy(&out.stdout);
    assert!(top.contains("certs") && top.contains("run"), "{top}");

    let out = node(&["run", "--help"], &[]);
    assert!(out.status.success());
    let run = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--cluster",
        "--node-id",
        "--ca",
        "--cert",
        "--key",
        "--bind",
        "--seed",
        "--client",
        "--gossip-ms",
    ] {
        assert!(run.contains(flag), "run --help lacks {flag}:\n{run}");
    }
    for var in [
        "HYDRACACHE_CLUSTER",
        "HYDRACACHE_NODE_ID",
        "HYDRACACHE_SEEDS",
        "HYDRACACHE_GOSSIP_MS",
    ] {
        assert!(run.contains(var), "run --help lacks {var}:\n{run}");
    }
    #[cfg(feature = "actuator")]
    assert!(
        run.contains("--http") && run.contains("HYDRACACHE_HTTP_TOKEN"),
        "{run}"
    );

    let out = node(&["certs", "--help"], &[]);
    assert!(out.status.success());
    let certs = String::from_utf8_lossy(&out.stdout);
    assert!(
        certs.contains("--out") && certs.contains("HYDRACACHE_CERTS_OUT"),
        "{certs}"
    );
}

#[test]
fn a_bad_flag_is_named_in_the_error() {
    let base = [
        "run",
        "--cluster",
        "c",
        "--node-id",
        "n",
        "--ca",
        "a",
        "--cert",
        "b",
        "--key",
        "k",
    ];
    let mut args = base.to_vec();
    args.extend(["--gossip-ms", "soon"]);
    let out = node(&args, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--gossip-ms"), "{}", stderr(&out));

    let mut args = base.to_vec();
    args.extend(["--bind", "not-an-address"]);
    let out = node(&args, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--bind"), "{}", stderr(&out));

    let out = node(&["run", "--cluster", "c"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--node-id"), "{}", stderr(&out));

    #[cfg(feature = "actuator")]
    {
        let mut args = base.to_vec();
        args.extend(["--http-token", "t"]);
        let out = node(&args, &[]);
        assert_eq!(out.status.code(), Some(2), "a token without --http");
        assert!(stderr(&out).contains("--http <HTTP>"), "{}", stderr(&out));

        let mut args = base.to_vec();
        args.extend(["--http", "localhost"]);
        let out = node(&args, &[]);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("--http <HTTP>"), "{}", stderr(&out));
    }

    let out = node(&["run", "--frobnicate"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--frobnicate"), "{}", stderr(&out));
}

#[test]
fn flags_can_come_from_the_environment() {
    // Every required flag from the environment: parsing succeeds and the
    // node fails where it reads the (missing) certificate files.
    let env = [
        ("HYDRACACHE_CLUSTER", "c"),
        ("HYDRACACHE_NODE_ID", "n"),
        ("HYDRACACHE_CA", "/nonexistent/ca.pem"),
        ("HYDRACACHE_CERT", "/nonexistent/n.pem"),
        ("HYDRACACHE_KEY", "/nonexistent/n.key"),
        ("HYDRACACHE_SEEDS", "127.0.0.1:1,127.0.0.1:2"),
    ];
    let out = node(&["run"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));

    // A bad value from the environment names its flag too.
    let mut bad = env.to_vec();
    bad.push(("HYDRACACHE_GOSSIP_MS", "0"));
    let out = node(&["run"], &bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--gossip-ms"), "{}", stderr(&out));
}

#[test]
fn certs_writes_a_ca_and_node_certificates() {
    let dir = std::env::temp_dir().join(format!("hydracache-cli-certs-{}", std::process::id()));
    let out = node(
        &["certs", "--cluster", "c", "n1", "n2"],
        &[("HYDRACACHE_CERTS_OUT", dir.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for f in ["ca.pem", "n1.pem", "n1.key", "n2.pem", "n2.key"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let out = node(&["certs", "--cluster", "c", "--out", "/tmp"], &[]);
    assert_eq!(out.status.code(), Some(2), "no node given");
}

#[tokio::test]
async fn certs_issues_client_certificates_that_cannot_join_as_members() {
    use hydracache::cluster::{Handler, PeerIdentity, Reply, TlsConfig, Transport, TransportError};
    use hydracache_protocol::{Hello, Limits, Message, Role};

    struct Pong;
    impl Handler for Pong {
        fn request<'a>(&'a self, _: &'a PeerIdentity, _: Message) -> Reply<'a> {
            Box::pin(async { Message::Pong { nonce: 0 } })
        }
        fn message(&self, _: &PeerIdentity, _: Message) {}
    }

    let dir = std::env::temp_dir().join(format!("hydracache-cli-roles-{}", std::process::id()));
    let out = node(
        &[
            "certs",
            "--cluster",
            "c",
            "--out",
            dir.to_str().unwrap(),
            "m1",
            "--client",
            "w1",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let tls = |n: &str| {
        TlsConfig::from_pem_files(
            dir.join("ca.pem"),
            dir.join(format!("{n}.pem")),
            dir.join(format!("{n}.key")),
        )
        .unwrap()
    };
    let bind = |n: &str, role: Role| {
        let hello = Hello::new("c", (n, 1), role);
        let t = Transport::bind(
            "127.0.0.1:0".parse().unwrap(),
            &tls(n),
            hello,
            Limits::default(),
        )
        .unwrap();
        t.serve(std::sync::Arc::new(Pong));
        t
    };
    let member = bind("m1", Role::Member);
    let posing = bind("w1", Role::Member);
    let ping = Message::Ping { nonce: 1 };
    assert!(matches!(
        posing.request(member.local_addr(), ping.clone()).await,
        Err(TransportError::Refused { .. })
    ));
    let client = bind("w1", Role::Client);
    client.request(member.local_addr(), ping).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hydracache_log_sends_the_grids_events_to_stderr() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;

    let dir = std::env::temp_dir().join(format!("hydracache-cli-log-{}", std::process::id()));
    let out = node(
        &["certs", "--cluster", "c", "n1"],
        &[("HYDRACACHE_CERTS_OUT", dir.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--cluster",
            "c",
            "--node-id",
            "n1",
            "--gossip-ms",
            "50",
            "--bootstrap",
        ])
        .arg("--ca")
        .arg(dir.join("ca.pem"))
        .arg("--cert")
        .arg(dir.join("n1.pem"))
        .arg("--key")
        .arg(dir.join("n1.key"))
        .env("HYDRACACHE_LOG", "hydracache=info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("LISTEN "), "{line}");
    // The founder elects itself; then ask it to stop (bounded: the node
    // answers `status` once Raft has a leader, and quits on `quit`).
    for _ in 0..100 {
        writeln!(stdin, "status").unwrap();
        line.clear();
        stdout.read_line(&mut line).unwrap();
        if line.contains("leader=n1") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    writeln!(stdin, "quit").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let log = stderr(&out);
    assert!(
        log.contains("raft leader changed") && log.contains("INFO"),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
