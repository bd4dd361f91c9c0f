//! Apply → agent starts work, with the agent's own long-poll client.

use std::time::{Duration, Instant};

use sdp_agent::client::Client;
use sdp_agent::config::AgentConfig;
use sdp_spec::wire::{ApplyRequest, SourceDocument};
use tokio::sync::{mpsc, watch};

const ROUNDS: usize = 300;

pub async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = sdp_controller::Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: dir.path().join("data"),
        settings: Default::default(),
    };
    let bound = sdp_controller::bind(&config).await?;
    let url = format!("http://{}", bound.local_addr());
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let server = tokio::spawn(bound.serve(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let http = reqwest::Client::new();
    let apply = |docs: Vec<SourceDocument>| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let resp = http
                .post(format!("{url}/v1/apply"))
                .json(&ApplyRequest {
                    documents: docs,
                    dry_run: false,
                    applied_by: Some("bench".into()),
                })
                .send()
                .await?;
            anyhow::ensure!(
                resp.status().is_success(),
                "apply failed: {}",
                resp.text().await?
            );
            Ok::<_, anyhow::Error>(())
        }
    };
    let service = "kind = \"service\"\nname = \"svc\"\nrepo = \"/srv/git/svc.git\"\nagent = \"bench\"\nimage = \"x\"\ncontainer_port = 8080\n";
    let sandbox = |i: usize| {
        format!(
            "kind = \"sandbox\"\nname = \"bench\"\n[services.svc]\nbranch = \"main\"\nhost_port = 9001\nenv = {{ ROUND = \"{i}\" }}\n"
        )
    };
    let doc = |content: String| SourceDocument {
        file: "bench.toml".into(),
        content,
    };
    apply(vec![doc(service.into()), doc(sandbox(0))]).await?;

    // The agent's loop: poll with the last etag; each answer is "start work".
    let cfg = AgentConfig::new("bench", &url, dir.path().join("agent"), "127.0.0.1");
    let client = Client::new(&cfg);
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Instant>();
    let first = client.poll(None, Duration::ZERO).await?;
    let poller = tokio::spawn(async move {
        let mut etag = first.etag;
        loop {
            match client.poll(Some(&etag), Duration::from_secs(30)).await {
                Ok(a) if a.etag != etag => {
                    etag = a.etag;
                    if seen_tx.send(Instant::now()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });

    let mut samples = Vec::with_capacity(ROUNDS);
    let mut from_sent = Vec::with_capacity(ROUNDS);
    let mut early = 0;
    for i in 1..=ROUNDS {
        // Let the poller get back into its long-poll first.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let sent = Instant::now();
        apply(vec![doc(sandbox(i))]).await?;
        let returned = Instant::now();
        let started = seen_rx.recv().await.expect("poller runs");
        // The long-poll is woken when the change is committed, which can be
        // before the apply's own response arrives: that counts as zero.
        let ms = started.saturating_duration_since(returned).as_secs_f64() * 1000.0;
        if started < returned {
            early += 1;
        }
        samples.push(ms);
        from_sent.push(started.duration_since(sent).as_secs_f64() * 1000.0);
    }
    poller.abort();
    let _ = stop_tx.send(true);
    let _ = server.await;

    let (p50, p90, p99, max) = crate::summary(samples);
    let (s50, s90, s99, smax) = crate::summary(from_sent);
    println!("### Apply → agent starts work (long-poll), {ROUNDS} applies\n");
    println!("| measured from | median | p90 | p99 | max |");
    println!("|---|---|---|---|---|");
    println!(
        "| `apply` returning (agent woken first in {early} of {ROUNDS}: counted as 0) | {p50:.2} ms | {p90:.2} ms | {p99:.2} ms | {max:.2} ms |"
    );
    println!(
        "| `apply` sent (includes validation and the redb commit) | {s50:.2} ms | {s90:.2} ms | {s99:.2} ms | {smax:.2} ms |"
    );
    Ok(())
}
