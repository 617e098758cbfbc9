//! Usage accounts shared by replicas through Redis: per hourly bucket and dimension, three
//! sorted sets (`<prefix>usage:<hour>:<dimension>:req|bytes|err`, member = key, score = count)
//! and one hash of totals (`<prefix>usage:<hour>:total`). The accounting task adds a whole
//! batch in one pipeline (ZINCRBY, HINCRBY), then trims each touched set to its heaviest
//! [`KEEP_FACTOR`] x `top_keys` members (ZREMRANGEBYRANK) and sets it to expire after
//! `access.usage.keep`, so Redis memory is bounded too. Trimming drops the lightest keys of a
//! bucket; heavy hitters, which the report is about, stay. A query sums the buckets of its
//! window server-side (ZUNIONSTORE into short-lived keys).

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::topk::{Counts, Order};
use super::{Dimension, UsageReport, UsageRow};
use crate::quota::redis::CALL_TIMEOUT;

/// Members kept per set: this many times `top_keys`.
pub const KEEP_FACTOR: usize = 5;

/// The Redis side of the accounts.
pub(crate) struct SharedUsage {
    conn: ConnectionManager,
    prefix: String,
    keep: isize,
    ttl_secs: i64,
}

impl std::fmt::Debug for SharedUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedUsage").finish_non_exhaustive()
    }
}

/// One batch of an hour: per (dimension, key) and in total.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) hour: u64,
    pub(crate) keys: HashMap<(Dimension, String), Counts>,
    pub(crate) total: Counts,
}

impl Batch {
    /// Adds a record of `client`.
    pub(crate) fn add(&mut self, client: &str, r: &super::UsageRecord) {
        let d = super::delta(r);
        self.total.add(&d);
        for (dim, k) in super::keys(client, r) {
            self.keys.entry((dim, k.to_owned())).or_default().add(&d);
        }
    }
}

/// The leading rows (key, score) and the totals of each bucket.
type Answer = (Vec<(String, f64)>, Vec<HashMap<String, u64>>);

const METRICS: [&str; 3] = ["req", "bytes", "err"];

fn values(c: &Counts) -> [u64; 3] {
    [c.requests, c.bytes, c.errors]
}

impl SharedUsage {
    /// Accounts in Redis through `conn`, keys under `prefix`.
    pub(crate) fn new(
        conn: ConnectionManager,
        prefix: &str,
        top_keys: usize,
        keep: Duration,
    ) -> SharedUsage {
        SharedUsage {
            conn,
            prefix: format!("{prefix}usage:"),
            keep: (top_keys.max(1) * KEEP_FACTOR) as isize,
            ttl_secs: keep.as_secs().max(3600) as i64 + 3600,
        }
    }

    fn set(&self, hour: u64, d: Dimension, metric: &str) -> String {
        format!("{}{hour}:{}:{metric}", self.prefix, d.as_str())
    }

    /// Adds a batch (one pipeline).
    pub(crate) async fn add(&self, b: &Batch) -> Result<(), String> {
        let mut p = redis::pipe();
        let total = format!("{}{}:total", self.prefix, b.hour);
        for (field, v) in METRICS.iter().zip(values(&b.total)) {
            p.hincr(&total, *field, v).ignore();
        }
        p.expire(&total, self.ttl_secs).ignore();
        let mut touched = std::collections::BTreeSet::new();
        for ((d, key), c) in &b.keys {
            for (m, v) in METRICS.iter().zip(values(c)).filter(|(_, v)| *v > 0) {
                let set = self.set(b.hour, *d, m);
                p.zincr(&set, key, v).ignore();
                touched.insert(set);
            }
        }
        for set in &touched {
            p.zremrangebyrank(set, 0, -(self.keep + 1)).ignore();
            p.expire(set, self.ttl_secs).ignore();
        }
        let mut c = self.conn.clone();
        timed(p.query_async::<()>(&mut c)).await
    }

    /// The report of `by` over `hours` buckets up to `now`.
    pub(crate) async fn query(
        &self,
        now: u64,
        by: Dimension,
        hours: u64,
        top: usize,
        order: Order,
    ) -> Result<UsageReport, String> {
        let range: Vec<u64> = (0..hours).filter_map(|h| now.checked_sub(h)).collect();
        let tag: u64 = rand::random();
        let tmp: Vec<String> = METRICS
            .iter()
            .map(|m| format!("{}q:{tag:x}:{m}", self.prefix))
            .collect();
        let mut p = redis::pipe();
        for (m, t) in METRICS.iter().zip(&tmp) {
            let sets: Vec<String> = range.iter().map(|h| self.set(*h, by, m)).collect();
            p.zunionstore(t, &sets).ignore().expire(t, 30).ignore();
        }
        let lead = &tmp[usize::from(order == Order::Bytes)];
        p.zrevrange_withscores(lead, 0, top.max(1) as isize - 1);
        for h in &range {
            p.hgetall(format!("{}{h}:total", self.prefix));
        }
        let mut c = self.conn.clone();
        let raw: Vec<redis::Value> = timed(p.query_async(&mut c)).await?;
        let (lead_rows, totals): Answer = split(raw)?;
        let rows = self.rows(&mut c, &lead_rows, &tmp).await?;
        let mut total = Counts::default();
        for t in totals {
            let g = |k: &str| t.get(k).copied().unwrap_or(0);
            total.add(&Counts {
                requests: g("req"),
                bytes: g("bytes"),
                errors: g("err"),
            });
        }
        Ok(UsageReport {
            by,
            window_secs: hours * 3600,
            total,
            top: rows,
        })
    }
}

impl SharedUsage {
    /// The counts of the leading keys from the summed sets `tmp` (which are then dropped).
    async fn rows(
        &self,
        c: &mut ConnectionManager,
        lead_rows: &[(String, f64)],
        tmp: &[String],
    ) -> Result<Vec<UsageRow>, String> {
        let mut rows = Vec::with_capacity(lead_rows.len());
        let mut p = redis::pipe();
        for (key, _) in lead_rows {
            for t in tmp {
                p.zscore(t, key);
            }
        }
        p.del(tmp).ignore();
        let scores: Vec<Option<f64>> = timed(p.query_async(c)).await?;
        for ((key, _), s) in lead_rows.iter().zip(scores.chunks(3)) {
            let n = |i: usize| s.get(i).copied().flatten().unwrap_or(0.0) as u64;
            rows.push(UsageRow {
                key: key.clone(),
                counts: Counts {
                    requests: n(0),
                    bytes: n(1),
                    errors: n(2),
                },
                overestimate: 0,
            });
        }
        Ok(rows)
    }
}

fn split(raw: Vec<redis::Value>) -> Result<Answer, String> {
    let mut it = raw.into_iter();
    let lead = it.next().ok_or("empty answer")?;
    let lead: Vec<(String, f64)> = redis::from_redis_value(lead).map_err(|e| e.to_string())?;
    let totals = it
        .map(|v| redis::from_redis_value(v).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    Ok((lead, totals))
}

async fn timed<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT * 4, call).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("no answer in time".into()),
    }
}
