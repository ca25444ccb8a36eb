//! `ymera bench gateway`: cached `config.get` over HTTP through the gateway
//! (`POST /v1/config/get`) beside the same request over NATS, in the same run.

use std::process::ExitCode;

use serde_json::{Value, json};
use ymera_core::client::ServiceClient;

use crate::bench::{BenchOptions, finish_ratios, measure, report};
use crate::context::Context;
use crate::private_stack::PrivateStack;

/// Options of `ymera bench gateway`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub options: BenchOptions,
    /// The gateway's URL when not `--private` (default http://127.0.0.1:8088).
    #[arg(long, default_value = "http://127.0.0.1:8088")]
    pub gateway_url: String,
}

/// Runs the benchmark.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    let port = ymera_devstack::free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let (stack, base) = if args.options.private {
        let env = [
            ("GATEWAY_ADDR", addr.as_str()),
            // The benchmark is one client: no rate limit in the way.
            ("GATEWAY_RATE_LIMIT", "10000000"),
            ("GATEWAY_RATE_PERIOD", "1s"),
        ];
        let stack = PrivateStack::start(&["config", "gateway"], &env).await?;
        (Some(stack), format!("http://{addr}"))
    } else {
        (None, args.gateway_url.clone())
    };
    let nats = crate::bench::connect(&crate::bench::stack_url(stack.as_ref(), ctx)).await?;
    let credential = ctx.credential();
    let client = ServiceClient::new(nats.clone()).with_credential(credential.clone());
    let agent = "bench-gateway";
    let document =
        json!({"rate_limit": {"requests": 100, "period_ms": 1000}, "features": ["a", "b"]});
    let _: Value = client
        .request(
            "config.set",
            &json!({"agent": agent, "environment": "base", "config": document, "actor": "bench"}),
        )
        .await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.options.concurrency.max(1))
        .build()?;
    let url = format!("{base}/v1/config/get");
    let body = json!({"agent": agent, "environment": "production"}).to_string();
    // The gateway learns its routes from $SRV.INFO: wait until it routes config.get.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = http
            .post(&url)
            .body(body.clone())
            .send()
            .await
            .map(|r| r.status().as_u16());
        if matches!(status, Ok(200) | Ok(401)) {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the gateway at {base} does not route config.get ({status:?})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let over_nats = client.clone();
    let mut results = vec![
        measure(
            "config.get over NATS (baseline)",
            &args.options,
            move || {
                let c = over_nats.clone();
                async move {
                    let _: Value = c
                        .request(
                            "config.get",
                            &json!({"agent": agent, "environment": "production"}),
                        )
                        .await?;
                    Ok(())
                }
            },
        )
        .await,
    ];
    let header = credential.map(|c| match c {
        ymera_core::client::Credential::ApiKey(key) => ("X-API-Key", key),
        ymera_core::client::Credential::Bearer(token) => {
            ("Authorization", format!("Bearer {token}"))
        }
    });
    results.push(
        measure("POST /v1/config/get (gateway)", &args.options, move || {
            let (http, url, body, header) =
                (http.clone(), url.clone(), body.clone(), header.clone());
            async move {
                let mut request = http.post(url).body(body);
                if let Some((name, value)) = header {
                    request = request.header(name, value);
                }
                let response = request.send().await?;
                anyhow::ensure!(response.status().is_success(), "HTTP {}", response.status());
                response.bytes().await?;
                Ok(())
            }
        })
        .await,
    );
    finish_ratios(&mut results);
    report(ctx, "gateway", &results)?;
    drop(stack);
    Ok(ExitCode::SUCCESS)
}
