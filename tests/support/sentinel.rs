//! A Redis Sentinel deployment on loopback for the tests: a master, one replica and three
//! sentinels (quorum 2, a master unreachable for 3 s is down: with 1 s, a loaded machine made
//! the sentinels fail back), each a real process on a free port, killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jetstream_ingestor::local_redis::{LocalRedis, LocalRedisOptions, free_port};

pub const MASTER: &str = "mymaster";

pub struct Sentinels {
    pub master: LocalRedis,
    pub replica: LocalRedis,
    sentinels: Vec<(u16, Child)>,
    _dir: tempfile::TempDir,
}

impl Sentinels {
    pub fn start() -> Sentinels {
        let master = super::redis(false);
        let replica = LocalRedis::start(LocalRedisOptions {
            replica_of: Some(master.port()),
            ..LocalRedisOptions::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::Builder::new()
            .prefix("jsi-sentinel-")
            .tempdir()
            .unwrap();
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port().unwrap();
            let conf: PathBuf = dir.path().join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {dir}/sentinel-{i}.log\n\
                     sentinel monitor {MASTER} 127.0.0.1 {m} 2\n\
                     sentinel down-after-milliseconds {MASTER} 3000\n\
                     sentinel failover-timeout {MASTER} 6000\n\
                     sentinel parallel-syncs {MASTER} 1\n",
                    dir = dir.path().display(),
                    m = master.port()
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server --sentinel starts");
            sentinels.push((port, child));
        }
        let s = Sentinels {
            master,
            replica,
            sentinels,
            _dir: dir,
        };
        // Ready: every sentinel names the master and knows the replica and the others.
        super::wait_until(Duration::from_secs(30), "sentinels ready", || {
            s.sentinels.iter().all(|(port, _)| {
                let Ok(mut con) = s.sentinel_connection(*port) else {
                    return false;
                };
                let master: Option<(String, u16)> = redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(MASTER)
                    .query(&mut con)
                    .ok()
                    .flatten();
                let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg(MASTER)
                    .query(&mut con)
                    .unwrap_or_default();
                let others: Vec<redis::Value> = redis::cmd("SENTINEL")
                    .arg("SENTINELS")
                    .arg(MASTER)
                    .query(&mut con)
                    .unwrap_or_default();
                master.is_some_and(|(_, p)| p == s.master.port())
                    && replicas.len() == 1
                    && others.len() == 2
            })
        });
        s
    }

    fn sentinel_connection(&self, port: u16) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))?
            .get_connection_with_timeout(Duration::from_secs(2))
    }

    pub fn urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|(p, _)| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The master's port as the first sentinel sees it.
    pub fn master_port(&self) -> Option<u16> {
        let mut con = self.sentinel_connection(self.sentinels[0].0).ok()?;
        let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER)
            .query(&mut con)
            .ok()?;
        addr.map(|(_, p)| p)
    }

    /// `SENTINEL FAILOVER`: the replica is promoted, the master demoted.
    pub fn failover(&self) {
        let mut con = self.sentinel_connection(self.sentinels[0].0).unwrap();
        let _: () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER)
            .query(&mut con)
            .unwrap();
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for (_, c) in &mut self.sentinels {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
