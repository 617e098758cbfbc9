//! `ferry usage` and `ferry bans`: clients of a running server's admin API (`/admin/v1/...`,
//! `docs/access.md`), authenticated with an admin token (`--token`, `FERRY_ADMIN_TOKEN`) or an
//! admin user (`--user NAME:PASSWORD`, `FERRY_ADMIN_USER`).

use std::process::ExitCode;

use clap::{Args as ClapArgs, Subcommand, ValueEnum};
use serde_json::Value;

/// How to reach the admin API.
#[derive(Debug, ClapArgs)]
pub struct Conn {
    /// The server's base URL.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:5000",
        env = "FERRY_ADMIN_SERVER"
    )]
    server: String,
    /// An admin token (`access.admin.tokens`).
    #[arg(long, global = true, env = "FERRY_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// An admin user and password (`NAME:PASSWORD`, a user with `admin: true`).
    #[arg(long, global = true, env = "FERRY_ADMIN_USER", hide_env_values = true)]
    user: Option<String>,
}

/// What usage is grouped by.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum By {
    /// Client address.
    Client,
    /// Logged-in user.
    User,
    /// Upstream registry.
    Upstream,
    /// Repository.
    Repository,
    /// Blob digest.
    Blob,
}

/// `ferry usage`.
#[derive(Debug, ClapArgs)]
pub struct UsageArgs {
    /// How many rows.
    #[arg(long, default_value_t = 20)]
    top: usize,
    /// What to group by.
    #[arg(long, value_enum, default_value = "client")]
    by: By,
    /// How far back (`1h`, `24h`, `7d`; hourly buckets).
    #[arg(long, default_value = "24h")]
    window: String,
    /// Order by requests instead of bytes.
    #[arg(long)]
    by_requests: bool,
    /// Print the JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// `ferry bans`.
#[derive(Debug, ClapArgs)]
pub struct BansArgs {
    #[command(subcommand)]
    command: BansCommand,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, Subcommand)]
enum BansCommand {
    /// List bans and slow-downs in force.
    List {
        /// Print the JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Lift the ban or slow-down of an address (or `user NAME`).
    Lift {
        /// The address, user name or subject (`ip 203.0.113.7`).
        address: String,
    },
}

impl Conn {
    async fn call(&self, method: reqwest::Method, path: &str) -> Result<Value, String> {
        let url = format!("{}{path}", self.server.trim_end_matches('/'));
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let mut req = client.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        } else if let Some(u) = &self.user {
            let (name, password) = u.split_once(':').unwrap_or((u, ""));
            req = req.basic_auth(name, Some(password));
        }
        let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = body["errors"][0]["message"]
                .as_str()
                .unwrap_or("no message");
            return Err(format!("{url}: {status}: {msg}"));
        }
        Ok(body)
    }
}

fn finish(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs `ferry usage`.
pub async fn usage(a: UsageArgs) -> ExitCode {
    let by =
        a.by.to_possible_value()
            .expect("a value")
            .get_name()
            .to_owned();
    let order = if a.by_requests { "requests" } else { "bytes" };
    let path = format!(
        "/admin/v1/usage?by={by}&top={}&window={}&order={order}",
        a.top,
        url_part(&a.window)
    );
    finish(a.conn.call(reqwest::Method::GET, &path).await.map(|v| {
        if a.json {
            println!("{v:#}");
        } else {
            print_usage(&by, &v);
        }
    }))
}

fn print_usage(by: &str, v: &Value) {
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let total = &v["total"];
    println!(
        "{} requests, {}, {} error answers in the last {}",
        n(total, "requests"),
        human_bytes(n(total, "bytes")),
        n(total, "errors"),
        humantime::format_duration(std::time::Duration::from_secs(n(v, "window_secs")))
    );
    println!(
        "{:<72} {:>10} {:>12} {:>8}",
        by.to_uppercase(),
        "REQUESTS",
        "BYTES",
        "ERRORS"
    );
    for row in v["top"].as_array().into_iter().flatten() {
        let approx = if n(row, "overestimate") > 0 { "~" } else { "" };
        println!(
            "{:<72} {:>10} {:>12} {:>8}",
            format!("{approx}{}", row["key"].as_str().unwrap_or("")),
            n(row, "requests"),
            human_bytes(n(row, "bytes")),
            n(row, "errors")
        );
    }
}

fn human_bytes(b: u64) -> String {
    ferry_config::ByteSize(b).human()
}

/// Percent-encodes a path segment or query value.
fn url_part(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Runs `ferry bans`.
pub async fn bans(a: BansArgs) -> ExitCode {
    match a.command {
        BansCommand::List { json } => finish(
            a.conn
                .call(reqwest::Method::GET, "/admin/v1/bans")
                .await
                .map(|v| {
                    if json {
                        println!("{v:#}");
                    } else {
                        print_bans(&v);
                    }
                }),
        ),
        BansCommand::Lift { address } => {
            let path = format!("/admin/v1/bans/{}", url_part(&address));
            finish(a.conn.call(reqwest::Method::DELETE, &path).await.map(|v| {
                println!("lifted: {}", v["lifted"].as_str().unwrap_or(&address));
            }))
        }
    }
}

fn print_bans(v: &Value) {
    let list = v["bans"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no bans or slow-downs in force");
        return;
    }
    println!(
        "{:<28} {:<6} {:<22} {:<20} REASON",
        "SUBJECT", "ACTION", "UNTIL", "RULE"
    );
    for b in list {
        let until = std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(b["until"].as_u64().unwrap_or(0));
        println!(
            "{:<28} {:<6} {:<22} {:<20} {}",
            b["subject"].as_str().unwrap_or(""),
            b["action"].as_str().unwrap_or(""),
            humantime::format_rfc3339_seconds(until).to_string(),
            b["rule"].as_str().unwrap_or(""),
            b["reason"].as_str().unwrap_or("")
        );
    }
}
