//! Criterion micro-benchmarks for the broker's hot paths, through the public
//! `Broker` API in-process (no network): durable publish (one fsynced commit
//! per call) and pull + acknowledge (the ack waits for its commit). The push
//! token cache is not measured here: the public API hands out no tokens, only
//! pushes, and what the cache saves shows in `labrelay-bench --broker`'s push
//! rate (signing a token per push would cap it near 1,500/s).
//!
//! `cargo bench -p labrelay-broker`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use labrelay_broker::{Broker, BrokerConfig, pb};

const TOPIC: &str = "projects/bench/topics/lab-reports";
const SUBSCRIPTION: &str = "projects/bench/subscriptions/lab-reports-pull";

fn message() -> pb::PubsubMessage {
    pb::PubsubMessage {
        data: vec![b'x'; 1024],
        ..Default::default()
    }
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    broker: Broker,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = runtime.block_on(async {
        let broker = Broker::open(BrokerConfig::new(
            dir.path(),
            "127.0.0.1:8085".parse().unwrap(),
        ))
        .expect("opening the broker");
        broker
            .create_topic(pb::Topic {
                name: TOPIC.into(),
                ..Default::default()
            })
            .await
            .expect("topic");
        broker
            .create_subscription(pb::Subscription {
                name: SUBSCRIPTION.into(),
                topic: TOPIC.into(),
                ack_deadline_seconds: 600,
                ..Default::default()
            })
            .await
            .expect("subscription");
        broker
    });
    Fixture {
        runtime,
        broker,
        _dir: dir,
    }
}

/// Pulls and acknowledges everything outstanding (untimed cleanup).
async fn drain(broker: &Broker) {
    loop {
        let received = broker.pull(SUBSCRIPTION, 1000, true).await.expect("pull");
        if received.is_empty() {
            return;
        }
        let ids: Vec<String> = received.into_iter().map(|m| m.ack_id).collect();
        broker.acknowledge(SUBSCRIPTION, &ids).await.expect("ack");
    }
}

fn store(c: &mut Criterion) {
    let Fixture {
        runtime,
        broker,
        _dir,
    } = fixture();
    let mut group = c.benchmark_group("broker_store_1KiB_durable");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    for batch in [1usize, 100] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("publish {batch} (one commit)"), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let messages = vec![message(); batch];
                        let start = Instant::now();
                        black_box(broker.publish(TOPIC, messages).await.expect("publish"));
                        spent += start.elapsed();
                    }
                    drain(&broker).await;
                    spent
                })
            })
        });
    }

    for batch in [1usize, 100] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("pull + acknowledge {batch}"), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    drain(&broker).await;
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        broker
                            .publish(TOPIC, vec![message(); batch])
                            .await
                            .expect("publish");
                        let start = Instant::now();
                        let received = broker
                            .pull(SUBSCRIPTION, batch as i32, true)
                            .await
                            .expect("pull");
                        assert_eq!(received.len(), batch);
                        let ids: Vec<String> = received.into_iter().map(|m| m.ack_id).collect();
                        broker.acknowledge(SUBSCRIPTION, &ids).await.expect("ack");
                        spent += start.elapsed();
                    }
                    spent
                })
            })
        });
    }
    group.finish();

    runtime.block_on(broker.close());
}

criterion_group!(benches, store);
criterion_main!(benches);
