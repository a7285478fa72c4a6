//! Retention keeps the log within its bounds while rows keep coming, deleting the
//! oldest first. Redaction (metadata only) is in `tests/llama_features.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use std::time::Duration;

use ollabridge::config::Retention;
use ollabridge::store::{LogRecord, Writer, open, retention, spawn_retention, timestamp_now};
use tokio_util::sync::CancellationToken;

fn record(i: usize) -> LogRecord {
    LogRecord {
        timestamp: timestamp_now(),
        endpoint: "/api/chat".into(),
        method: "POST".into(),
        model: Some("m".into()),
        prompt: Some(format!("{i:06} {}", "p".repeat(1000))),
        response: Some("r".repeat(1000)),
        request_id: format!("req-{i}"),
        ..Default::default()
    }
}

async fn count(pool: &sqlx::SqlitePool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM logs")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_rows_holds_during_a_long_insert_run() {
    let dir = tempfile::tempdir().unwrap();
    // The writer closes its pool when it stops; checks and retention use their own.
    let pool = open(&dir.path().join("log.db")).await.unwrap();
    let (logger, writer) = Writer::spawn(open(&dir.path().join("log.db")).await.unwrap(), 4096, 1 << 20);
    let policy = Retention {
        max_age: None,
        max_rows: Some(200),
        max_bytes: None,
        interval: Duration::from_millis(50),
    };
    let stop = CancellationToken::new();
    let task = spawn_retention(pool.clone(), policy.clone(), stop.clone());

    // Between bursts of 100 rows, the background task brings the table back under the
    // bound by itself (waits are polls, not timings: only a stopped task fails this).
    for batch in 0..30 {
        for i in 0..100 {
            logger.log(record(batch * 100 + i));
        }
        let mut polls = 0;
        while count(&pool).await > 200 || polls == 0 {
            polls += 1;
            assert!(
                polls < 500,
                "retention did not bring the log under 200 rows after batch {batch}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    drop(logger);
    writer.close().await;
    stop.cancel();
    task.await.unwrap();
    retention::enforce(&pool, &policy).await.unwrap();

    // 3,000 rows went in; the newest 200 are what is left.
    assert_eq!(count(&pool).await, 200);
    let oldest: String = sqlx::query_scalar("SELECT request_id FROM logs ORDER BY id LIMIT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(oldest, "req-2800", "the newest rows are kept");
}

#[tokio::test]
async fn old_rows_and_size_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    // The writer closes its pool when it stops; checks and retention use their own.
    let pool = open(&dir.path().join("log.db")).await.unwrap();
    let (logger, writer) = Writer::spawn(open(&dir.path().join("log.db")).await.unwrap(), 4096, 1 << 20);
    for i in 0..2000 {
        logger.log(record(i));
    }
    drop(logger);
    writer.close().await;
    sqlx::query("UPDATE logs SET timestamp = '2020-01-01 00:00:00.000' WHERE id <= 500")
        .execute(&pool)
        .await
        .unwrap();

    let by_age = Retention {
        max_age: Some(Duration::from_secs(86_400)),
        max_rows: None,
        max_bytes: None,
        interval: Duration::from_secs(60),
    };
    assert_eq!(retention::enforce(&pool, &by_age).await.unwrap(), 500);
    assert_eq!(count(&pool).await, 1500);

    let used = |pool: sqlx::SqlitePool| async move {
        let bytes: i64 = sqlx::query_scalar(
            "SELECT (page_count - freelist_count) * page_size FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        bytes
    };
    assert!(used(pool.clone()).await > 2_000_000);
    let by_size = Retention {
        max_age: None,
        max_rows: None,
        max_bytes: Some(1_000_000),
        interval: Duration::from_secs(60),
    };
    retention::enforce(&pool, &by_size).await.unwrap();
    let after = used(pool.clone()).await;
    assert!(after <= 1_000_000, "{after} bytes in use");
    // Oldest first, and no more than needed: a partly emptied B-tree keeps some pages,
    // so the cut lands below the bound, not on it.
    let kept = count(&pool).await;
    assert!((100..1500).contains(&kept), "{kept} rows kept");
    let newest: String = sqlx::query_scalar("SELECT request_id FROM logs ORDER BY id DESC LIMIT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(newest, "req-1999");
    // Incremental auto-vacuum gave the pages back: the file is small again.
    let free: i64 = sqlx::query_scalar("SELECT freelist_count FROM pragma_freelist_count()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(free, 0);
}
