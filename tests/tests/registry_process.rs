//! The `sluice-registry` binary as the stack runs it (`SLUICE_CONFIG=config/registry.toml`, overridden by
//! `SLUICE_*` variables), killed with SIGKILL: every write it acknowledged must be there after a restart.

use anyhow::Context;
use serde_json::{Value, json};
use sluice_tests::registry_node::start;
use sluice_tests::unique;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

async fn post(base: &str, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("Content-Type", CONTENT_TYPE)
        .body(body.to_string())
        .send()
        .await?;
    Ok((r.status().as_u16(), r.json().await?))
}

async fn get(base: &str, path: &str) -> anyhow::Result<(u16, Value)> {
    let r = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .send()
        .await?;
    Ok((r.status().as_u16(), r.json().await?))
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() -> anyhow::Result<()> {
    let topic = unique("_schemas_proc");
    let (mut child, base) = start(&topic).await?;
    let subject = unique("killed-value");
    let mut registered = Vec::new();
    for i in 0..5 {
        let fields: Vec<Value> = (0..=i)
            .map(|f| json!({ "name": format!("f{f}"), "type": "int", "default": 0 }))
            .collect();
        let schema = json!({ "type": "record", "name": "K", "fields": fields }).to_string();
        let (status, body) = post(
            &base,
            &format!("/subjects/{subject}/versions"),
            json!({ "schema": schema }),
        )
        .await?;
        assert_eq!(status, 200, "{body}");
        registered.push((i + 1, body["id"].as_u64().context("id")?, schema));
    }
    let (status, _) = post(
        &base,
        &format!("/subjects/{subject}/versions"),
        json!({ "schema": "{" }),
    )
    .await?;
    assert_eq!(status, 422);

    // SIGKILL: no graceful shutdown, nothing flushed after the last answer.
    child.start_kill()?;
    child.wait().await?;

    let (mut again, base) = start(&topic).await?;
    assert_eq!(
        get(&base, &format!("/subjects/{subject}/versions")).await?,
        (200, json!([1, 2, 3, 4, 5]))
    );
    for (version, id, schema) in &registered {
        let (status, body) = get(&base, &format!("/subjects/{subject}/versions/{version}")).await?;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["id"].as_u64(), Some(*id));
        assert_eq!(body["schema"].as_str(), Some(schema.as_str()));
    }
    again.start_kill()?;
    again.wait().await?;
    Ok(())
}
