//! Named owner loaders on 127.0.0.1: any node names a loader the members
//! registered; the key's owner runs it once for every concurrent caller in
//! the grid, and each failure comes back as its own typed error over a
//! connection that stays usable.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hydracache::cluster::DevCa;
use hydracache::{CacheError, CacheOptions, Grid, OwnerLoad, OwnerLoadRequest, RejectedArguments};

mod cluster_support;
use cluster_support::{addr, client, converge, member_builder};

#[derive(Debug)]
struct DbDown;

impl std::fmt::Display for DbDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("db down")
    }
}

impl std::error::Error for DbDown {}

/// A member with the test's named loaders, each counting its runs in `runs`:
/// `users.by-id` (text id -> "user <id>", after 50 ms; rejects non-numbers),
/// `fails`, `panics`. Argument limit `max_args`.
async fn member(
    ca: &DevCa,
    id: &str,
    seeds: &[SocketAddr],
    runs: Arc<AtomicUsize>,
    max_args: usize,
) -> Grid {
    let (r1, r2, r3) = (runs.clone(), runs.clone(), runs);
    member_builder(ca, id, seeds)
        .max_owner_load_args(max_args)
        .loader("users.by-id", move |req: OwnerLoadRequest| {
            let runs = r1.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                let id: u64 = req
                    .args_utf8()?
                    .parse()
                    .map_err(|_| RejectedArguments::new("not a user id"))?;
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok::<_, RejectedArguments>(format!("user {id}"))
            }
        })
        .loader("fails", move |_req: OwnerLoadRequest| {
            let runs = r2.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Err::<String, _>(DbDown)
            }
        })
        .loader("panics", move |_req: OwnerLoadRequest| {
            let runs = r3.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                if runs.load(Ordering::SeqCst) > 0 {
                    panic!("loader bug");
                }
                Ok::<String, std::io::Error>(String::new())
            }
        })
        .start()
        .await
        .unwrap()
}

/// `members` members and one client, converged; the members count their
/// loader runs in the returned counter.
async fn grid(members: usize, max_args: usize) -> (Vec<Grid>, Arc<AtomicUsize>) {
    let ca = DevCa::new("orders").unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let m0 = member(&ca, "m0", &[], runs.clone(), max_args).await;
    let seed = addr(&m0).await;
    let mut nodes = vec![m0];
    for i in 1..members {
        nodes.push(member(&ca, &format!("m{i}"), &[seed], runs.clone(), max_args).await);
    }
    nodes.push(client(&ca, "c0", &[seed]).await);
    converge(&nodes.iter().collect::<Vec<_>>(), members, 1).await;
    (nodes, runs)
}

fn user(id: &str) -> OwnerLoad {
    OwnerLoad::new("users.by-id").arg(id)
}

fn opts() -> CacheOptions {
    CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tag("users")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_callers_on_six_nodes_run_the_named_loader_once() {
    let (nodes, runs) = grid(5, 64 << 10).await;
    let mut calls = Vec::new();
    for i in 0..1000 {
        let node = nodes[i % nodes.len()].clone();
        calls.push(tokio::spawn(async move {
            node.get_or_load_on_owner::<String>("user:42", user("42"), opts())
                .await
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), "user 42");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the named loader ran once");
    let mut owner_loads = 0;
    for n in &nodes {
        owner_loads += n.cluster_diagnostics().await.unwrap().owner_loads;
        // Every node keeps the owner's bytes, TTL and tags as its copy.
        let entry = n.get_ref("user:42").expect("a copy on every node");
        assert!(entry.ttl_remaining().unwrap() <= Duration::from_secs(60));
        assert_eq!(entry.tags().collect::<Vec<_>>(), [b"users".as_slice()]);
        drop(entry);
        assert_eq!(
            n.get::<String>("user:42").await.unwrap().as_deref(),
            Some("user 42")
        );
    }
    assert_eq!(owner_loads, 1);
    // The tag reaches every copy; the next call loads again, once.
    nodes[5].invalidate_tag("users").await.unwrap();
    for n in &nodes {
        let v: String = n
            .get_or_load_on_owner("user:42", user("42"), opts())
            .await
            .unwrap();
        assert_eq!(v, "user 42");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// The node of `nodes` that owns `key`.
async fn owner_of(nodes: &[Grid], key: &str) -> Grid {
    let id = nodes[0].owner_for_key(key).unwrap();
    for n in nodes {
        if n.cluster_diagnostics().await.unwrap().node_id == id {
            return n.clone();
        }
    }
    panic!("no node owns {key}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_of_a_named_load_is_its_own_typed_error_and_stores_nothing() {
    let (nodes, runs) = grid(2, 16).await;
    let client = &nodes[2];
    let owner = owner_of(&nodes, "user:7").await;
    let owner_id = owner.cluster_diagnostics().await.unwrap().node_id;
    for caller in [client, &owner] {
        let err = caller
            .get_or_load_on_owner::<String>("user:7", OwnerLoad::new("no.such"), opts())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CacheError::UnknownLoader { loader } if loader == "no.such"),
            "{err:?}"
        );

        let err = caller
            .get_or_load_on_owner::<String>("user:7", user("seven"), opts())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CacheError::ArgumentsRejected { message, .. } if message == "not a user id"),
            "{err:?}"
        );

        let err = caller
            .get_or_load_on_owner::<String>("user:7", user(&"9".repeat(17)), opts())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                CacheError::ArgumentsTooLarge {
                    len: 17,
                    limit: 16,
                    ..
                }
            ),
            "{err:?}"
        );

        let err = caller
            .get_or_load_on_owner::<String>("user:7", OwnerLoad::new("fails"), opts())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CacheError::OwnerLoadFailed { node, message, .. }
                if *node == owner_id && message == "db down"),
            "{err:?}"
        );

        let err = caller
            .get_or_load_on_owner::<String>("user:7", OwnerLoad::new("panics"), opts())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CacheError::OwnerLoadFailed { message, .. } if message.contains("loader bug")),
            "{err:?}"
        );
        for n in &nodes {
            assert!(n.get_ref("user:7").is_none(), "nothing stored");
        }
    }
    // Rejected (twice), failed (twice), panicked (twice); unknown and
    // oversized never ran.
    assert_eq!(runs.load(Ordering::SeqCst), 6);
    // The connection stays usable: the next load over it succeeds.
    let v: String = client
        .get_or_load_on_owner("user:7", user("7"), opts())
        .await
        .unwrap();
    assert_eq!(v, "user 7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_over_the_owners_limit_are_refused_by_the_owner() {
    let ca = DevCa::new("orders").unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let m0 = member(&ca, "m0", &[], runs.clone(), 4).await;
    let seed = addr(&m0).await;
    // A client that would send up to 64 KiB.
    let c0 = client(&ca, "c0", &[seed]).await;
    converge(&[&m0, &c0], 1, 1).await;
    let err = c0
        .get_or_load_on_owner::<String>("user:12345", user("12345"), opts())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CacheError::ArgumentsTooLarge {
                len: 5,
                limit: 4,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    let v: String = c0
        .get_or_load_on_owner("user:1", user("1"), opts())
        .await
        .unwrap();
    assert_eq!(v, "user 1");
}
