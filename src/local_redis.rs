//! A private `redis-server` on a free loopback port, for the demo and the tests: never the
//! shared one on 6379. Killed on drop; its data directory is a temp dir removed with it,
//! unless [`LocalRedis::keep_running`] hands both over (the demo's `--keep-redis`).
//!
//! With [`LocalTls`] the server listens on TLS only (`--port 0 --tls-port P`), for the tests
//! of `rediss://`, CA files and client certificates; its URL is then `rediss://…`.
//!
//! Failure: if `redis-server` is not installed, `start` says so with the install command.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actors::redis_target::{RedisTarget, TlsFiles};

#[derive(Debug, thiserror::Error)]
pub enum LocalRedisError {
    #[error(
        "redis-server is not installed (Debian/Ubuntu: `sudo apt-get install -y redis-server`; macOS: `brew install redis`), or set REDIS_URL"
    )]
    NotInstalled,
    /// The cause is in the message (so not a `source`: it would read twice in a chain).
    #[error("cannot start redis-server: {0}")]
    Io(std::io::Error),
    #[error(
        "redis-server on port {port} did not accept connections within {waited:?}; its log: {log}"
    )]
    NotReady {
        port: u16,
        waited: Duration,
        log: String,
    },
}

impl From<std::io::Error> for LocalRedisError {
    fn from(e: std::io::Error) -> Self {
        LocalRedisError::Io(e)
    }
}

/// Options of a private server.
#[derive(Debug, Clone, Default)]
pub struct LocalRedisOptions {
    /// Persist with AOF (`appendfsync always`), so a kill -9 + restart keeps every ack'd write.
    pub appendonly: bool,
    /// `maxmemory` in bytes (with `noeviction`), to provoke OOM refusals.
    pub maxmemory: Option<u64>,
    /// Listen on TLS only, with these files.
    pub tls: Option<LocalTls>,
    /// Start as a replica of the server on 127.0.0.1 at this port (Sentinel tests).
    pub replica_of: Option<u16>,
    /// Start as a Redis Cluster node (`cluster-enabled`, its `nodes.conf` in the data
    /// directory, a node unreachable for 2 s is failing); the caller forms the cluster.
    pub cluster: bool,
}

/// A private server's TLS: its certificate and key, and the CA that client certificates must
/// come from (redis-server wants `tls-ca-cert-file` even when clients need none).
#[derive(Debug, Clone)]
pub struct LocalTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
    /// `tls-auth-clients yes`: a client without a certificate from `ca_file` is refused.
    pub auth_clients: bool,
    /// What this harness connects with (readiness, [`LocalRedis::connection`]): a CA file
    /// that trusts the server and, with `auth_clients`, a client certificate and key.
    pub client: TlsFiles,
}

pub struct LocalRedis {
    port: u16,
    dir: tempfile::TempDir,
    opts: LocalRedisOptions,
    child: Option<Child>,
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalRedis {
    /// Starts a server on a free port (a few tries, in case another process takes the port
    /// between our probe and redis-server's bind).
    pub fn start(opts: LocalRedisOptions) -> Result<LocalRedis, LocalRedisError> {
        let mut last = None;
        for _ in 0..5 {
            let dir = tempfile::Builder::new().prefix("jsi-redis-").tempdir()?;
            let mut r = LocalRedis {
                port: free_port()?,
                dir,
                opts: opts.clone(),
                child: None,
            };
            match r.spawn() {
                Ok(()) => return Ok(r),
                Err(e @ LocalRedisError::NotInstalled) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(LocalRedisError::NotInstalled))
    }

    fn spawn(&mut self) -> Result<(), LocalRedisError> {
        let mut cmd = Command::new("redis-server");
        match &self.opts.tls {
            None => cmd.arg("--port").arg(self.port.to_string()),
            Some(tls) => cmd
                .args(["--port", "0", "--tls-port"])
                .arg(self.port.to_string())
                .arg("--tls-cert-file")
                .arg(&tls.cert_file)
                .arg("--tls-key-file")
                .arg(&tls.key_file)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca_file)
                .arg("--tls-auth-clients")
                .arg(if tls.auth_clients { "yes" } else { "no" }),
        };
        cmd.arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .arg("--save")
            .arg("")
            .arg("--daemonize")
            .arg("no");
        if self.opts.appendonly {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        if self.opts.cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .arg("--cluster-config-file")
                .arg(self.dir.path().join("nodes.conf"));
        }
        if let Some(port) = self.opts.replica_of {
            cmd.args(["--replicaof", "127.0.0.1", &port.to_string()]);
        }
        if let Some(m) = self.opts.maxmemory {
            cmd.args([
                "--maxmemory",
                &m.to_string(),
                "--maxmemory-policy",
                "noeviction",
            ]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LocalRedisError::NotInstalled);
            }
            Err(e) => return Err(e.into()),
        };
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(10))
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), LocalRedisError> {
        let started = Instant::now();
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        while started.elapsed() < limit {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                break;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() && self.ping()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        Err(LocalRedisError::NotReady {
            port: self.port,
            waited: started.elapsed(),
            log,
        })
    }

    fn ping(&self) -> bool {
        let Ok(client) = self.target().client() else {
            return false;
        };
        let Ok(mut con) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
            return false;
        };
        redis::cmd("PING").query::<String>(&mut con).is_ok()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:P`, or `rediss://127.0.0.1:P` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.opts.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The URL with the harness's own TLS files (see [`LocalTls::client`]).
    pub fn target(&self) -> RedisTarget {
        let files = self
            .opts
            .tls
            .as_ref()
            .map(|t| t.client.clone())
            .unwrap_or_default();
        RedisTarget::new(self.url(), files)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's process id while it runs (for SIGSTOP/SIGCONT in fault tests).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, like a crash: unsynced data is lost unless AOF is on.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and directory (AOF data comes back if enabled).
    pub fn restart(&mut self) -> Result<(), LocalRedisError> {
        self.kill9();
        self.spawn()
    }

    /// Lets the server outlive this value (and this process): not killed, its directory not
    /// removed. The caller tells the user how to stop it ([`Kept`]).
    pub fn keep_running(mut self) -> Kept {
        self.dir.disable_cleanup(true);
        Kept {
            port: self.port,
            pid: self.child.take().map(|c| c.id()),
            dir: self.dir.path().to_path_buf(),
        }
    }

    /// A blocking connection for assertions.
    pub fn connection(&self) -> redis::RedisResult<redis::Connection> {
        self.target()
            .client()?
            .get_connection_with_timeout(Duration::from_secs(5))
    }
}

/// A private server left running by [`LocalRedis::keep_running`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub port: u16,
    pub pid: Option<u32>,
    /// Its data directory and log, to remove once it is stopped.
    pub dir: PathBuf,
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        self.kill9();
    }
}
