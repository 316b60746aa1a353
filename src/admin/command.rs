//! `jetstream-ingestor admin …`: the operator's commands against a running ingestor's admin
//! API (address and token from the same settings the server reads; `--addr` overrides the
//! address). Prints a readable result on stdout; the exit code is 0 on success, 1 when the
//! API refused or could not be reached (the reason on stderr).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::{AdminClient, Response};
use super::view::StatusView;
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The admin API address (default: `admin.listen` from the configuration).
    #[arg(long)]
    pub addr: Option<SocketAddr>,
    #[command(subcommand)]
    pub action: AdminAction,
}

#[derive(Debug, Subcommand)]
pub enum AdminAction {
    /// State, cursor and lag, rates, totals, failures.
    Status {
        /// Print the raw JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Tear the session down and dial again, from --cursor or the committed cursor.
    Restart {
        /// Dial from this Jetstream `time_us` (unix microseconds) instead of the committed
        /// cursor; older than the cursor replays that stretch.
        #[arg(long, value_name = "TIME_US")]
        cursor: Option<u64>,
    },
    /// Close the socket and stop reading until `resume`.
    Pause,
    /// Dial again after `pause`, from the committed cursor.
    Resume,
    /// Replace the subscription's filters (sent as Jetstream `options_update`, no reconnect).
    /// Empty lists mean everything.
    Filters {
        /// Comma-separated NSIDs or `prefix.*`.
        #[arg(long, value_delimiter = ',')]
        collections: Vec<String>,
        /// Comma-separated DIDs.
        #[arg(long, value_delimiter = ',')]
        dids: Vec<String>,
    },
    /// Exit 0 when `/healthz` answers 200 (for container health checks), else 1.
    Healthcheck,
}

/// Runs one admin command; the result is the process exit code.
pub fn run(settings: &Settings, args: &AdminArgs) -> i32 {
    let mut client = AdminClient::from_config(&settings.admin);
    if let Some(addr) = args.addr {
        client = AdminClient::new(addr, settings.admin.token.clone());
    }
    if matches!(args.action, AdminAction::Healthcheck) {
        return healthcheck(client.with_timeout(Duration::from_secs(3)));
    }
    let result = match &args.action {
        AdminAction::Status { .. } => client.get("/admin/status"),
        AdminAction::Restart { cursor } => {
            let body = cursor.map(|c| json!({ "cursor": c }));
            client.post("/admin/restart", body.as_ref())
        }
        AdminAction::Pause => client.post("/admin/pause", None),
        AdminAction::Resume => client.post("/admin/resume", None),
        AdminAction::Filters { collections, dids } => client.put(
            "/admin/filters",
            &json!({ "wantedCollections": collections, "wantedDids": dids }),
        ),
        AdminAction::Healthcheck => return 1,
    };
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if !(200..300).contains(&response.status) {
        eprintln!("error: {}", refusal(&response));
        return 1;
    }
    match &args.action {
        AdminAction::Status { json: true } => println!("{}", response.text().trim_end()),
        AdminAction::Status { json: false } => match serde_json::from_slice(&response.body) {
            Ok(view) => print!("{}", render_status(&view)),
            Err(_) => println!("{}", response.text().trim_end()),
        },
        AdminAction::Restart { cursor } => {
            let session = response
                .json()
                .and_then(|v| v.get("session_id").and_then(serde_json::Value::as_u64));
            let from = cursor.map_or_else(
                || "the committed cursor (minus the rewind)".to_owned(),
                |c| format!("cursor {c}"),
            );
            match session {
                Some(s) => println!("restart accepted: session {s} dials from {from}"),
                None => println!("restart accepted: dials from {from}"),
            }
        }
        AdminAction::Pause => println!("pause accepted: the socket closes, reading stops"),
        AdminAction::Resume => println!("resume accepted: dialing from the committed cursor"),
        AdminAction::Filters { collections, dids } => println!(
            "filters applied: collections [{}], dids [{}]",
            collections.join(", "),
            dids.join(", ")
        ),
        AdminAction::Healthcheck => {}
    }
    0
}

fn healthcheck(client: AdminClient) -> i32 {
    match client.get("/healthz") {
        Ok(r) if r.status == 200 => 0,
        Ok(r) => {
            eprintln!("unhealthy: /healthz answered {}", r.status);
            1
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            1
        }
    }
}

/// A non-2xx answer, explained.
fn refusal(r: &Response) -> String {
    let detail = r
        .json()
        .and_then(|v| v.get("error").and_then(|e| e.as_str().map(str::to_owned)));
    match (r.status, detail) {
        (401, _) => "401 unauthorized: admin.token is missing or wrong".to_owned(),
        (status, Some(d)) => format!("{status}: {d}"),
        (status, None) if r.body.is_empty() => format!("HTTP {status}"),
        (status, None) => format!("{status}: {}", r.text().trim()),
    }
}

/// The status, for people.
pub fn render_status(v: &StatusView) -> String {
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".to_owned());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "state        {}{}",
        v.state,
        if v.ready { " (ready)" } else { "" }
    );
    if let Some(reason) = &v.not_ready_reason {
        let _ = writeln!(out, "not ready    {reason}");
    }
    let _ = writeln!(out, "instance     {} (version {})", v.instance, v.version);
    if let Some(ha) = &v.ha {
        let who = match (ha.role, ha.token, &ha.holder) {
            (actors::messages::HaRole::Leader, Some(token), _) => {
                format!("leader, fencing token {token}")
            }
            (_, _, Some(holder)) => format!("standby, lease held by {holder}"),
            _ => "standby".to_owned(),
        };
        let _ = writeln!(
            out,
            "ha           {who} (owner {}, {} acquisitions, {} handovers)",
            ha.owner, ha.acquisitions, ha.handovers
        );
    }
    let _ = writeln!(
        out,
        "endpoint     {} (session {})",
        dash(&v.endpoint),
        v.session_id
            .map_or_else(|| "-".to_owned(), |s| s.to_string())
    );
    let _ = writeln!(
        out,
        "cursor       {} (lag {})",
        v.committed_cursor
            .map_or_else(|| "none yet".to_owned(), |c| c.to_string()),
        v.lag_seconds
            .map_or_else(|| "-".to_owned(), |l| format!("{l:.1} s"))
    );
    let _ = writeln!(
        out,
        "rates        {:.1} events/s, {:.1} jobs/s",
        v.events_per_second, v.jobs_per_second
    );
    let _ = writeln!(
        out,
        "totals       {} events, {} jobs written, {} skipped as already committed, {} dead letters, {} commits",
        v.events_received, v.jobs_written, v.jobs_skipped, v.dead_letters, v.commits
    );
    let _ = writeln!(
        out,
        "failures     {} consecutive (reader), {} consecutive (commits), {} gap alarms",
        v.consecutive_failures, v.consecutive_commit_failures, v.gaps
    );
    let _ = writeln!(out, "last error   {}", dash(&v.last_error));
    if v.last_failover.is_some() {
        let _ = writeln!(out, "failover     {}", dash(&v.last_failover));
    }
    if v.last_commit_error.is_some() {
        let _ = writeln!(out, "commit error {}", dash(&v.last_commit_error));
    }
    let _ = writeln!(
        out,
        "uptime       {} ({} restarts, {} sessions)",
        humantime::format_duration(Duration::from_secs(v.uptime_secs)),
        v.reader_restarts,
        v.sessions_started
    );
    out
}
