//! A Redis Cluster of three masters on loopback for the tests, formed with
//! `redis-cli --cluster create`, and a slot migration done by hand the way `redis-cli
//! --cluster reshard` does it (IMPORTING/MIGRATING, MIGRATE in pages, SETSLOT NODE).

use std::process::Command;
use std::time::Duration;

use jetstream_ingestor::local_redis::{LocalRedis, LocalRedisOptions};

pub struct Cluster {
    pub nodes: Vec<LocalRedis>,
}

fn con(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap()
}

impl Cluster {
    pub fn start() -> Cluster {
        let nodes: Vec<LocalRedis> = (0..3)
            .map(|_| {
                LocalRedis::start(LocalRedisOptions {
                    cluster: true,
                    ..LocalRedisOptions::default()
                })
                .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let c = Cluster { nodes };
        super::wait_until(
            Duration::from_secs(30),
            "cluster state ok everywhere",
            || {
                c.nodes.iter().all(|n| {
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query(&mut con(n.port()))
                        .unwrap_or_default();
                    info.contains("cluster_state:ok")
                })
            },
        );
        c
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.nodes[0].port())
    }

    pub fn slot_of(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut con(self.nodes[0].port()))
            .unwrap()
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(LocalRedis::port).collect()
    }

    /// The port of the master serving `slot`, as node 0 sees it.
    pub fn owner(&self, slot: u16) -> u16 {
        owner(&self.ports(), slot)
    }

    pub fn connection(&self, port: u16) -> redis::Connection {
        con(port)
    }
}

/// The port of the master serving `slot`, as the first node sees it.
pub fn owner(ports: &[u16], slot: u16) -> u16 {
    {
        let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut con(ports[0]))
            .unwrap();
        for range in slots {
            let redis::Value::Array(parts) = range else {
                continue;
            };
            let (redis::Value::Int(a), redis::Value::Int(b)) = (&parts[0], &parts[1]) else {
                continue;
            };
            if (*a..=*b).contains(&i64::from(slot)) {
                let redis::Value::Array(m) = &parts[2] else {
                    continue;
                };
                let redis::Value::Int(p) = m[1] else { continue };
                return u16::try_from(p).unwrap();
            }
        }
        panic!("slot {slot} has no owner");
    }
}

/// Moves `slot` from its owner to another master, keys and all, while clients write.
/// Returns the new owner's port. Blocking: run it beside the pipeline.
pub fn migrate(ports: &[u16], slot: u16) -> u16 {
    {
        let from = owner(ports, slot);
        let to = ports.iter().copied().find(|p| *p != from).unwrap();
        let id = |port: u16| -> String {
            redis::cmd("CLUSTER")
                .arg("MYID")
                .query(&mut con(port))
                .unwrap()
        };
        let (from_id, to_id) = (id(from), id(to));
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("IMPORTING")
            .arg(&from_id)
            .query(&mut con(to))
            .unwrap();
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("MIGRATING")
            .arg(&to_id)
            .query(&mut con(from))
            .unwrap();
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(10)
                .query(&mut con(from))
                .unwrap();
            if keys.is_empty() {
                break;
            }
            let _: () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(10_000)
                .arg("KEYS")
                .arg(&keys)
                .query(&mut con(from))
                .unwrap();
        }
        for port in ports {
            let _: () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("NODE")
                .arg(&to_id)
                .query(&mut con(*port))
                .unwrap();
        }
        to
    }
}
