//! Enqueue from Rust, without the CLI: one job submitted and waited for, then a batch
//! of 100 followed to its end. Needs Redis and a config naming a server `echo`
//! (README, "The job formats") and a worker running it:
//! `cargo run -p mcpq-core --example producer -- mcpq.toml`.

use std::time::Duration;

use mcpq_core::job::{Job, JobId};
use mcpq_core::queue::{self, Keys, Producer};
use mcpq_core::Config;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "mcpq.toml".to_string());
    let config = Config::load(Some(path.as_ref()))?;
    let conn = queue::connect(&config.redis_connect_url()?).await?;
    let producer = Producer::new(
        conn,
        Keys::new(config.namespace.clone()),
        config.queue.clone(),
    );

    // One job: checked (fields, templates, size) when parsed, servers against the config.
    let job = Job::from_json(
        br#"{"kind": "agent", "payload": {"steps": [
            {"server": "echo", "tool": "echo", "arguments": {"text": "hi"}}]}}"#,
    )?;
    job.check_servers(config.server_names())?;
    let submitted = producer.submit(&job).await?;
    match producer
        .wait(&submitted.id, Duration::from_secs(30))
        .await?
    {
        Some(record) if record.status.is_finished() => {
            println!("job {}: {} {:?}", record.id, record.status, record.result)
        }
        Some(record) => println!("job {} is still {}", record.id, record.status),
        None => println!("job {} expired", submitted.id),
    }

    // A batch of 100 (no final job), followed until every job has ended.
    let jobs: Vec<Job> = (0..100)
        .map(|_| Job {
            id: JobId::generate(),
            ..job.clone()
        })
        .collect();
    let batch_id = producer.submit_batch(jobs, None).await?;
    let mut conn = producer.connection().clone();
    loop {
        let Some(status) = queue::batch::status(&mut conn, producer.keys(), &batch_id).await?
        else {
            break;
        };
        println!(
            "batch {batch_id}: {}/{} done, {} dead",
            status.done(),
            status.total,
            status.dead
        );
        if status.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}
