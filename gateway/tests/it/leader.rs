//! Three gateway processes on one Postgres: the background work (sweep, host-down detection,
//! expiry) runs on exactly one, the holder of the `background` lease. When it is killed with
//! SIGKILL another takes the lease over once it expires; when the holder is paused (SIGSTOP)
//! past its lease and another has taken over, its first write after SIGCONT is refused by the
//! fencing token and it stands down.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sqlx::Connection as _;
use weft_testkit::{Backend, ServiceProcess, stack::StackOptions};

/// The lease's time to live in this test (the holder works and renews every third of it).
const TTL: Duration = Duration::from_secs(3);

/// The lease row: (holder, token).
async fn lease(url: &str) -> Option<(String, i64)> {
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(url).await.ok()?;
    gateway::store::leases::get(&mut c, gateway::leader::BACKGROUND)
        .await
        .ok()?
        .map(|r| (r.holder, r.token))
}

/// How many background passes `g` has logged.
fn passes(g: &ServiceProcess) -> usize {
    g.log_text().matches("background pass").count()
}

/// Waits until the lease is held by someone other than `not` (any holder when None): the
/// holder's index, its token, and how long it took.
async fn new_holder(url: &str, not: Option<usize>, within: Duration) -> (usize, i64, Duration) {
    let start = Instant::now();
    loop {
        if let Some((holder, token)) = lease(url).await {
            let i: usize = holder.trim_start_matches('g').parse().unwrap();
            if Some(i) != not {
                return (i, token, start.elapsed());
            }
        }
        assert!(
            start.elapsed() < within,
            "no new lease holder after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_postgres, ignore = "needs Postgres: WEFT_TEST_DATABASE_URL")]
async fn heavy_one_leader_a_takeover_after_kill_and_a_paused_leader_fenced() {
    let deps = StackOptions::new(Backend::Postgres).start_deps().await;
    let args = deps.gateway_args();
    let url = args[args.iter().position(|a| a == "--database-url").unwrap() + 1].clone();
    let bin = env!("CARGO_BIN_EXE_gateway");
    let mut gws = Vec::new();
    for i in 0..3 {
        let mut a = args.clone();
        a.extend(
            [
                "--replica-id",
                &format!("g{i}"),
                "--lease-ttl",
                "3s",
                "--sweep-interval",
                "1s",
                "--log-filter",
                "info,gateway::leader=debug",
            ]
            .map(str::to_owned),
        );
        gws.push(ServiceProcess::start(bin, &a).await);
    }

    // Exactly one holds the lease, and only it works.
    let (first, token1, _) = new_holder(&url, None, Duration::from_secs(30)).await;
    weft_testkit::wait_for(Duration::from_secs(10), "a few passes", || {
        let n = passes(&gws[first]);
        async move { (n >= 3).then_some(()) }
    })
    .await;
    for (i, g) in gws.iter().enumerate() {
        let leads = g.log_text().contains("now leads the background work");
        assert_eq!(leads, i == first, "g{i}:\n{}", g.log_text());
        if i != first {
            assert_eq!(passes(g), 0, "g{i} worked without the lease");
        }
    }

    // SIGKILL of the holder: another takes over once the lease has expired.
    gws[first].kill9();
    let (second, token2, took) = new_holder(&url, Some(first), TTL * 4).await;
    println!("the lease went from g{first} (SIGKILL) to g{second} in {took:?} (lease {TTL:?})");
    assert!(token2 > token1);
    assert!(took <= TTL + Duration::from_secs(3), "took {took:?}");
    let third = 3 - first - second;

    // SIGSTOP of the new holder past its lease: the last replica takes over; SIGCONT: the
    // paused one's first write (its pass's expiry) is refused by the token; it stands down.
    gws[second].signal(Signal::SIGSTOP);
    let (now, token3, _) = new_holder(&url, Some(second), TTL * 4).await;
    assert_eq!(now, third);
    assert!(token3 > token2);
    gws[second].signal(Signal::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = gws[second].log_text();
        if log.contains("refused by the fencing token") && log.contains("standing down") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "g{second} did not stand down:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = gws[second]
        .log_text()
        .lines()
        .find(|l| l.contains("refused by the fencing token"))
        .unwrap_or_default()
        .to_owned();
    println!("g{second} after SIGCONT: {refused}");
    assert_eq!(lease(&url).await.unwrap(), (format!("g{third}"), token3));
    // It works no more; the holder does.
    let (stale, holder) = (passes(&gws[second]), passes(&gws[third]));
    tokio::time::sleep(TTL).await;
    assert_eq!(passes(&gws[second]), stale, "{}", gws[second].log_text());
    assert!(passes(&gws[third]) > holder);
    assert_eq!(lease(&url).await.unwrap(), (format!("g{third}"), token3));
}

/// The case that once held a takeover up for ever: a holder paused inside a fenced transaction
/// keeps the lease's row locked, and the next holder's take waits on that lock. Postgres ends
/// the paused session after the idle-in-transaction limit (the gateway sets it to the lease's
/// time to live); the take then goes through and the paused transaction cannot commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_postgres, ignore = "needs Postgres: WEFT_TEST_DATABASE_URL")]
async fn a_holder_paused_inside_its_fenced_transaction_cannot_hold_a_takeover_up() {
    use gateway::store::leases;
    use weft_store::{Db, StoreOptions};
    let tdb = weft_testkit::TestDb::postgres().await;
    let limit = Duration::from_millis(700);
    let open = || async {
        let opts = StoreOptions {
            postgres_idle_in_transaction: limit,
            ..StoreOptions::default()
        };
        let db = Db::open(&tdb.url, &opts).await.unwrap();
        db.migrate(
            &gateway::store::SQLITE_MIGRATIONS,
            &gateway::store::POSTGRES_MIGRATIONS,
        )
        .await
        .unwrap();
        db
    };
    let (a, b) = (open().await, open().await);
    let mut conn = a.write().acquire().await.unwrap();
    let token = leases::acquire(&mut conn, "bg", "a", 0, 1)
        .await
        .unwrap()
        .unwrap();
    drop(conn);
    // a: in a write transaction, the fence locks the row; then a goes quiet (paused).
    let mut tx = gateway::store::write_transaction(&a).await.unwrap();
    assert!(leases::fence(&mut tx, "bg", token).await.unwrap());
    // b: the lease has expired (at 1 ms); its take waits for the lock, then gets it.
    let start = Instant::now();
    let mut conn = b.write().acquire().await.unwrap();
    let took = tokio::time::timeout(
        Duration::from_secs(10),
        leases::acquire(&mut conn, "bg", "b", 2, i64::MAX / 2),
    )
    .await
    .expect("the take is still waiting on the paused transaction's lock")
    .unwrap();
    assert_eq!(took, Some(token + 1));
    assert!(start.elapsed() >= limit / 2, "{:?}", start.elapsed());
    // a wakes: its transaction is gone and writes nothing.
    assert!(tx.commit().await.is_err());
    let row = leases::get(&mut conn, "bg").await.unwrap().unwrap();
    assert_eq!((row.holder.as_str(), row.token), ("b", token + 1));
}
