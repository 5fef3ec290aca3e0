//! The `sluice-registry` binary as the stack runs it (`SLUICE_CONFIG=config/registry.toml`, overridden by
//! `SLUICE_*` variables), killed with SIGKILL: every write it acknowledged must be there after a restart.

mod producer_support;

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

/// Lowercase hex SHA-256, as `[auth.users.*].password_sha256` holds a password.
fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

#[tokio::test]
async fn writes_need_a_credential_and_permanent_deletes_an_admin() -> anyhow::Result<()> {
    let (writer_hash, admin_hash) = (sha256_hex("w-secret"), sha256_hex("a-secret"));
    let (_child, base) = sluice_tests::registry_node::start_with(
        &unique("_schemas_auth"),
        &[
            (
                "SLUICE_AUTH__USERS__WRITER__PASSWORD_SHA256",
                writer_hash.as_str(),
            ),
            ("SLUICE_AUTH__USERS__WRITER__ROLE", "write"),
            (
                "SLUICE_AUTH__USERS__ADMIN__PASSWORD_SHA256",
                admin_hash.as_str(),
            ),
            ("SLUICE_AUTH__USERS__ADMIN__ROLE", "admin"),
        ],
    )
    .await?;
    let http = reqwest::Client::new();
    let config = json!({"compatibility": "NONE"}).to_string();
    let put_config = |user: Option<(&str, &str)>| {
        let mut r = http
            .put(format!("{base}/config"))
            .header("Content-Type", CONTENT_TYPE)
            .body(config.clone());
        if let Some((u, p)) = user {
            r = r.basic_auth(u, Some(p));
        }
        r.send()
    };
    // No credential, or a wrong one: 401 with a Basic challenge and Confluent's error shape.
    let r = put_config(None).await?;
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let body: Value = r.json().await?;
    assert_eq!(body["error_code"], 40101, "{body}");
    assert_eq!(put_config(Some(("writer", "wrong"))).await?.status(), 401);
    assert_eq!(
        put_config(Some(("writer", "w-secret"))).await?.status(),
        200
    );
    // Reads stay open.
    assert_eq!(get(&base, "/subjects").await?.0, 200);

    // Sluice's producer sends its credential from its config (`user:password@` in `registry_url`, as Confluent's
    // clients take it): it registers its schemas at start-up and ingests.
    let mut cfg = producer_support::config();
    cfg.registry_url = base.replacen("http://", "http://writer:w-secret@", 1);
    let producer = producer_support::Producer::ready(cfg).await?;
    let r = producer_support::client()
        .post(producer.events_url("events"))
        .bearer_auth(producer_support::KEY)
        .json(&producer_support::event(1))
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    producer.stop().await?;

    // Confluent's own Python client registers with `basic.auth.user.info`.
    let subject = unique("auth-value");
    let python = std::env::var("SLUICE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import sys
from confluent_kafka.schema_registry import SchemaRegistryClient, Schema
url, user, subject = sys.argv[1:4]
schema = Schema('{"type":"record","name":"A","fields":[{"name":"a","type":"int"}]}', 'AVRO')
try:
    SchemaRegistryClient({'url': url}).register_schema(subject, schema)
    print('registered without credentials')
except Exception as e:
    print('refused', getattr(e, 'http_status_code', e))
print('id', SchemaRegistryClient({'url': url, 'basic.auth.user.info': user}).register_schema(subject, schema))
"#;
    let out = tokio::process::Command::new(&python)
        .args(["-c", script, &base, "writer:w-secret", &subject])
        .output()
        .await
        .with_context(|| format!("running {python} (SLUICE_TEST_PYTHON)"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("refused 401"), "{stdout}");
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("id "))
        .with_context(|| format!("no id in {stdout}"))?;
    let (status, schema) = get(&base, &format!("/schemas/ids/{id}")).await?;
    assert_eq!(status, 200);
    assert!(
        schema["schema"]
            .as_str()
            .is_some_and(|s| s.contains("\"A\"")),
        "{schema}"
    );

    // Deleting: soft with a writer, permanently only with an admin.
    let delete = |path: String, user: (&str, &str)| {
        http.delete(format!("{base}{path}"))
            .basic_auth(user.0, Some(user.1))
            .send()
    };
    let writer = ("writer", "w-secret");
    assert_eq!(
        delete(format!("/subjects/{subject}"), writer)
            .await?
            .status(),
        200
    );
    let r = delete(format!("/subjects/{subject}?permanent=true"), writer).await?;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await?;
    assert_eq!(body["error_code"], 40301, "{body}");
    let r = delete(
        format!("/subjects/{subject}?permanent=true"),
        ("admin", "a-secret"),
    )
    .await?;
    assert_eq!(r.status(), 200, "{}", r.text().await?);
    Ok(())
}

#[tokio::test]
async fn a_second_instance_on_the_same_topic_fences_the_first_and_no_id_names_two_schemas()
-> anyhow::Result<()> {
    let topic = unique("_schemas_two");
    let (_a, first) = start(&topic).await?;
    let (_b, second) = start(&topic).await?;
    // Both take writes at once, each for schemas of its own.
    let register = |base: String, who: &'static str, i: usize| async move {
        let schema = json!({"type": "record", "name": format!("{who}{i}"), "fields": [{"name": "f", "type": "int"}]})
            .to_string();
        let subject = format!("{who}-{i}-value");
        let (status, body) = post(
            &base,
            &format!("/subjects/{subject}/versions"),
            json!({ "schema": schema }),
        )
        .await?;
        anyhow::Ok((status, body["id"].as_u64(), schema))
    };
    let writes = (0..10).flat_map(|i| {
        [
            register(first.clone(), "first", i),
            register(second.clone(), "second", i),
        ]
    });
    let answers = futures::future::join_all(writes).await;
    let mut ids = std::collections::HashMap::new();
    let mut refused = 0;
    for answer in answers {
        let (status, id, schema) = answer?;
        match (status, id) {
            (200, Some(id)) => {
                if let Some(other) = ids.insert(id, schema.clone()) {
                    anyhow::bail!("id {id} was given to two schemas: {other} and {schema}");
                }
            }
            _ => refused += 1,
        }
    }
    assert!(
        refused >= 10,
        "the fenced instance refuses its writes ({refused} refused)"
    );
    // Every id given out names the schema it was given for, on the instance that writes now.
    for (id, schema) in &ids {
        let (status, body) = get(&second, &format!("/schemas/ids/{id}")).await?;
        assert_eq!(status, 200);
        let served: Value = serde_json::from_str(body["schema"].as_str().unwrap_or_default())?;
        assert_eq!(served, serde_json::from_str::<Value>(schema)?, "id {id}");
    }
    // The fenced one says so.
    let r = reqwest::get(format!("{first}/readyz")).await?;
    assert_eq!(r.status(), 503);
    assert!(r.text().await?.contains("fenced"));
    Ok(())
}
