//! Command line: parses arguments and dispatches. Everything long-running goes through
//! `app::run`; this file only turns arguments into settings, modes and exit codes.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::app::{self, Mode};
use crate::settings::Settings;
use crate::{demo, fake_jetstream, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "jetstream-ingestor",
    version,
    about = "Bluesky Jetstream firehose -> jobs in Redis Streams, exactly once"
)]
pub struct Cli {
    /// Config file (TOML); defaults + environment are used without it.
    #[arg(long, global = true, env = "JETSTREAM_INGESTOR_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Subscribe and ingest until SIGTERM/SIGINT.
    Run {
        /// Start here when Redis holds no cursor yet (overrides jetstream.initial_cursor):
        /// Jetstream `time_us`, unix microseconds.
        #[arg(long, value_name = "TIME_US")]
        cursor: Option<u64>,
    },
    /// Ingest [from, until] through the same pipeline, then exit 0. Serves no admin API
    /// unless `--admin` is given or `admin.listen` is set (config file or environment), so it
    /// runs beside a `run` that holds 127.0.0.1:8089.
    Replay {
        /// First event time to ingest: Jetstream `time_us`, unix microseconds
        /// (e.g. 1733400000000000).
        #[arg(long, value_name = "TIME_US")]
        from: u64,
        /// Last event time to ingest (inclusive), unix microseconds like --from; the replay
        /// exits 0 once everything up to it is committed.
        #[arg(long, value_name = "TIME_US")]
        until: u64,
        /// Serve the admin API (status, /metrics) during the replay on this address;
        /// port 0 picks a free one (logged).
        #[arg(long, value_name = "ADDR")]
        admin: Option<std::net::SocketAddr>,
    },
    /// Validate the configuration and print the effective settings.
    CheckConfig,
    /// Serve a Jetstream-compatible WebSocket from a file or a generated stream.
    FakeJetstream(FakeArgs),
    /// Write a deterministic corpus of realistic events (JSON lines) for tests and benches.
    GenerateCorpus {
        /// How many events to write.
        #[arg(long)]
        count: usize,
        /// The file to write (JSON lines; replaced if it exists).
        #[arg(long)]
        out: PathBuf,
        /// Seed of the generator: the same seed, count and start give the same file.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// time_us of the first event, unix microseconds (default: now minus one hour).
        #[arg(long)]
        start_us: Option<u64>,
    },
    /// Talk to a running ingestor's admin API: status, restart, pause, resume, filters,
    /// healthcheck. Address and token come from the same configuration.
    Admin(crate::admin::command::AdminArgs),
    /// Prove jobs against their authors' PDSes (signed commit + MST path) until
    /// SIGTERM/SIGINT, writing verdicts to <prefix>proven; run any number of these
    /// (settings: `[prove]`, docs/prove.md).
    Prove,
    /// A first look: fake Jetstream + Redis + the real pipeline for a few seconds.
    Demo {
        /// How long to ingest before the report, in seconds.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// After the report, keep the private redis-server running (its address and the
        /// command that stops it are printed) to look around with redis-cli.
        #[arg(long)]
        keep_redis: bool,
    },
}

#[derive(Debug, Args)]
pub struct FakeArgs {
    /// Address to serve the WebSocket on (`ws://ADDR/subscribe`); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:6008")]
    pub listen: std::net::SocketAddr,
    /// Serve this JSON-lines file (one event per line, sent verbatim).
    #[arg(long, conflicts_with = "generate")]
    pub file: Option<PathBuf>,
    /// Generate realistic live events at this many per second.
    #[arg(long)]
    pub generate: Option<u32>,
    /// File mode: pace at this many events per second (default: as fast as the client reads).
    #[arg(long)]
    pub rate: Option<u32>,
    /// Close every connection after this many events (tests reconnects).
    #[arg(long)]
    pub close_every: Option<u64>,
    /// File mode: close after the last line instead of idling.
    #[arg(long)]
    pub close_at_end: bool,
    /// A zstd dictionary file to compress with instead of the built-in Jetstream v1 one.
    #[arg(long)]
    pub zstd_dictionary: Option<PathBuf>,
    /// Generate mode: seed of the generator (the same seed gives the same accounts and
    /// records).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Shift every time_us served (and cursors read) by this many microseconds: simulates
    /// another host's clock.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub clock_offset_us: i64,
    /// After this many events on a connection, go silent (no events, no pongs, socket open).
    #[arg(long)]
    pub silent_after: Option<u64>,
    /// Keep only this much history (e.g. "1h"): older cursors are clamped, like real Jetstream.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub retention: Option<std::time::Duration>,
    /// Ignore the client's maxMessageSizeBytes (some hosts do).
    #[arg(long)]
    pub ignore_max_message_size: bool,
}

fn load(cli: &Cli) -> anyhow::Result<Settings> {
    Settings::from_process(cli.config.as_deref()).context("configuration rejected")
}

/// Runs the command; the returned code is the process exit code.
pub fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    // Before any TLS use (wss://, rediss://): ring, the one provider (CRATES.md F9).
    telemetry::install_crypto_provider();
    match &cli.command {
        Command::Run { cursor } => {
            let settings = load(&cli)?;
            telemetry::init_logging(&settings.log);
            run_pipeline(settings, Mode::Run { cursor: *cursor })
        }
        Command::Replay { from, until, admin } => {
            if until < from {
                anyhow::bail!("--until ({until}) is before --from ({from})");
            }
            let mut settings = load(&cli)?;
            replay_admin(&mut settings, *admin);
            settings.validate().context("configuration rejected")?;
            telemetry::init_logging(&settings.log);
            if !settings.admin.enabled {
                tracing::info!(
                    "replay: no admin API (give --admin ADDR, e.g. 127.0.0.1:0, to serve one)"
                );
            }
            run_pipeline(
                settings,
                Mode::Replay {
                    from: *from,
                    until: *until,
                },
            )
        }
        Command::CheckConfig => {
            let mut settings = load(&cli)?;
            settings.redis.url = actors::redis_target::redact(&settings.redis.url);
            let text = effective_json(&settings)?;
            println!("# configuration is valid; effective settings (secrets redacted):\n{text}");
            Ok(0)
        }
        Command::FakeJetstream(a) => {
            telemetry::init_logging(&Default::default());
            let source = match (&a.file, a.generate) {
                (Some(f), None) => fake_jetstream::Source::File(f.clone()),
                (None, Some(rate)) => fake_jetstream::Source::Generate { rate, seed: a.seed },
                _ => anyhow::bail!("give exactly one of --file F.jsonl or --generate RATE"),
            };
            let mut cfg = fake_jetstream::FakeJetstreamConfig::new(source);
            cfg.listen = a.listen;
            cfg.rate = a.rate;
            cfg.close_every = a.close_every;
            cfg.close_at_end = a.close_at_end;
            cfg.zstd_dictionary = a.zstd_dictionary.clone();
            cfg.clock_offset_us = a.clock_offset_us;
            cfg.silent_after = a.silent_after;
            cfg.retention = a.retention;
            cfg.honor_max_message_size = !a.ignore_max_message_size;
            fake_jetstream::serve_until_ctrl_c(cfg).context("fake jetstream failed")?;
            Ok(0)
        }
        Command::GenerateCorpus {
            count,
            out,
            seed,
            start_us,
        } => {
            let start = start_us.unwrap_or_else(|| {
                actors::model::Cursor::now()
                    .rewound(std::time::Duration::from_secs(3600))
                    .0
            });
            let lines = fake_jetstream::generate_corpus(*count, *seed, start);
            let mut text = lines.join("\n");
            text.push('\n');
            std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))?;
            eprintln!("wrote {} events to {}", lines.len(), out.display());
            Ok(0)
        }
        Command::Admin(args) => {
            let settings = load(&cli)?;
            Ok(crate::admin::command::run(&settings, args))
        }
        Command::Prove => {
            let settings = load(&cli)?;
            telemetry::init_logging(&settings.log);
            run_prove(settings)
        }
        Command::Demo {
            seconds,
            keep_redis,
        } => demo::run(*seconds, *keep_redis),
    }
}

/// `replay` serves the admin API only when asked: `--admin ADDR`, or `admin.listen` given in
/// the config file or environment. Otherwise it would take the default 127.0.0.1:8089 from
/// the `run` beside it and fail to start.
fn replay_admin(settings: &mut Settings, flag: Option<std::net::SocketAddr>) {
    if let Some(addr) = flag {
        settings.admin.enabled = true;
        settings.admin.listen = addr;
    } else if !settings.admin_listen_given {
        settings.admin.enabled = false;
    }
}

fn effective_json(settings: &Settings) -> anyhow::Result<String> {
    let value = serde_json::to_value(settings)?;
    Ok(serde_json::to_string_pretty(&value)?)
}

/// Runs the pipeline in an actix System until SIGTERM/SIGINT (or the replay's end).
pub fn run_pipeline(settings: Settings, mode: Mode) -> anyhow::Result<i32> {
    let system = actix::System::new();
    let outcome = system.block_on(app::run(settings, mode, shutdown_signal()))?;
    Ok(if outcome.drained { 0 } else { 1 })
}

/// Runs one `prove` worker until SIGTERM/SIGINT; the jobs in hand are finished first.
pub fn run_prove(settings: Settings) -> anyhow::Result<i32> {
    telemetry::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let stats = runtime
        .block_on(actors::prove::worker::run(
            settings.prove.clone(),
            &settings.redis.key_prefix,
            &settings.redis.target(),
            shutdown_signal(),
        ))
        .context("prove worker failed")?;
    eprintln!("prove: {stats:?}");
    Ok(0)
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    /// Every subcommand, nested ones included, with its path (`jetstream-ingestor admin status`).
    fn all_commands(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Command)>) {
        out.push((path.to_owned(), cmd.clone()));
        for sub in cmd.get_subcommands() {
            all_commands(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_subcommand_and_flag_has_help_text() {
        let mut root = Cli::command();
        root.build();
        let mut commands = Vec::new();
        all_commands(&root, "jetstream-ingestor", &mut commands);
        assert!(commands.len() >= 8, "{}", commands.len());
        let mut missing = Vec::new();
        for (path, cmd) in &commands {
            if path != "jetstream-ingestor" && cmd.get_about().is_none() {
                missing.push(format!("{path}: no about"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if ["help", "version"].contains(&id) {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
        }
        assert!(missing.is_empty(), "without help text: {missing:?}");
    }

    #[test]
    fn replay_from_and_until_say_their_unit() {
        let cmd = Cli::command();
        let replay = cmd.find_subcommand("replay").expect("replay");
        for id in ["from", "until"] {
            let arg = replay
                .get_arguments()
                .find(|a| a.get_id() == id)
                .expect("flag");
            let help = arg.get_help().expect("help").to_string();
            assert!(help.contains("unix microseconds"), "--{id}: {help}");
        }
    }

    #[test]
    fn every_help_page_renders() {
        let mut commands = Vec::new();
        all_commands(&Cli::command(), "jetstream-ingestor", &mut commands);
        for (path, mut cmd) in commands {
            let help = cmd.render_long_help().to_string();
            assert!(help.contains("Usage:"), "{path}: {help}");
        }
    }

    fn settings(listen_given: bool) -> Settings {
        Settings {
            admin_listen_given: listen_given,
            ..Settings::default()
        }
    }

    #[test]
    fn replay_serves_no_admin_api_unless_asked() {
        let mut s = settings(false);
        replay_admin(&mut s, None);
        assert!(
            !s.admin.enabled,
            "the default 127.0.0.1:8089 is left to `run`"
        );

        let mut s = settings(true);
        s.admin.listen = "127.0.0.1:9100".parse().expect("addr");
        replay_admin(&mut s, None);
        assert!(s.admin.enabled, "admin.listen given: served there");
        assert_eq!(s.admin.listen.port(), 9100);

        let mut s = settings(false);
        s.admin.enabled = false;
        replay_admin(&mut s, Some("127.0.0.1:0".parse().expect("addr")));
        assert!(s.admin.enabled, "--admin wins");
        assert_eq!(s.admin.listen.port(), 0);
    }

    #[test]
    fn replay_parses_its_flags() {
        let cli = Cli::try_parse_from([
            "jetstream-ingestor",
            "replay",
            "--from",
            "1",
            "--until",
            "2",
            "--admin",
            "127.0.0.1:0",
        ])
        .expect("parses");
        assert!(matches!(
            cli.command,
            Command::Replay { from: 1, until: 2, admin: Some(a) } if a.port() == 0
        ));
    }
}
