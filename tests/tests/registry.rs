//! The schema registry over HTTP, started in-process on 127.0.0.1:0 against the real broker, each test with
//! its own `_schemas` topic: every endpoint and error code, the compatibility rules, restart durability, and
//! a round trip through schema_registry_converter, a client nobody here wrote.

use std::time::Duration;

use anyhow::Context;
use apache_avro::types::Value as Avro;
use reqwest::Method;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedReference, SuppliedSchema,
};
use serde_json::{Value, json};
use sluice_registry::RegistryConfig;
use sluice_tests::{eventually, kafka_settings, unique};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A registry served in-process on an ephemeral port.
struct Registry {
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), sluice_registry::Error>>,
}

impl Registry {
    /// Starts a registry on `topic` and waits until `/readyz` says the log is replayed.
    async fn start(topic: &str) -> anyhow::Result<Self> {
        Self::start_with(RegistryConfig {
            kafka: kafka_settings(),
            topic: topic.to_owned(),
            ..RegistryConfig::default()
        })
        .await
    }

    /// Serves `config` without waiting for readiness.
    async fn spawn(config: RegistryConfig) -> anyhow::Result<Self> {
        sluice_tests::init_tracing();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(sluice_registry::serve(config, listener, shutdown.clone()));
        Ok(Self {
            base,
            http: reqwest::Client::new(),
            shutdown,
            task,
        })
    }

    async fn start_with(config: RegistryConfig) -> anyhow::Result<Self> {
        let registry = Self::spawn(config).await?;
        eventually("registry ready", Duration::from_secs(60), || async {
            let r = registry
                .http
                .get(format!("{}/readyz", registry.base))
                .send()
                .await?;
            Ok(r.status().is_success().then_some(()))
        })
        .await?;
        Ok(registry)
    }

    /// Cancels the server and waits for it to finish.
    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .context("registry did not stop")???;
        Ok(())
    }

    /// Sends `body` (as Confluent's media type) and returns the status and JSON answer.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Accept", CONTENT_TYPE);
        if let Some(body) = body {
            request = request
                .header("Content-Type", CONTENT_TYPE)
                .body(body.to_string());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await?;
        if status != 200
            || path.starts_with("/subjects")
            || path.starts_with("/schemas")
            || path.starts_with("/config")
        {
            assert_eq!(
                content_type.as_deref(),
                Some(CONTENT_TYPE),
                "{path} answered {text}"
            );
        }
        let value = serde_json::from_str(&text)
            .with_context(|| format!("{path} answered non-JSON {text:?}"))?;
        Ok((status, value))
    }

    async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        self.call(Method::PUT, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.call(Method::DELETE, path, None).await
    }

    /// Registers `schema` under `subject` and returns its id, failing on anything but 200.
    async fn register(&self, subject: &str, schema: &str) -> anyhow::Result<u64> {
        let (status, body) = self
            .post(
                &format!("/subjects/{subject}/versions"),
                json!({ "schema": schema }),
            )
            .await?;
        anyhow::ensure!(
            status == 200,
            "registering under {subject}: {status} {body}"
        );
        body["id"].as_u64().context("id in answer")
    }
}

/// Asserts a Confluent error answer.
fn assert_error(answer: (u16, Value), status: u16, code: u64) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error_code"].as_u64(), Some(code), "{}", answer.1);
    assert!(answer.1["message"].is_string(), "{}", answer.1);
}

fn record(name: &str, fields: &[Value]) -> String {
    json!({ "type": "record", "name": name, "namespace": "sluice.test", "fields": fields })
        .to_string()
}

fn field(name: &str, kind: &str) -> Value {
    json!({ "name": name, "type": kind })
}

fn field_with_default(name: &str, kind: &str, default: Value) -> Value {
    json!({ "name": name, "type": kind, "default": default })
}

#[tokio::test]
async fn registration_lookup_and_reads() -> anyhow::Result<()> {
    let reg = Registry::start(&unique("_schemas_test")).await?;
    let (a, b) = (unique("orders-value"), unique("refunds-value"));
    let v1 = record("Order", &[field("id", "long")]);

    let id = reg.register(&a, &v1).await?;
    // The same schema again, in different whitespace and key order: same id, no new version.
    let respelled = r#"{ "namespace":"sluice.test", "fields":[ {"type":"long", "name":"id", "doc":"key"} ],
                        "name":"Order", "type":"record" }"#;
    assert_eq!(reg.register(&a, respelled).await?, id);
    assert_eq!(
        reg.get(&format!("/subjects/{a}/versions")).await?,
        (200, json!([1]))
    );
    // The same schema under another subject shares the id.
    assert_eq!(reg.register(&b, &v1).await?, id);

    // Look-up in a subject.
    let (status, found) = reg
        .post(&format!("/subjects/{a}"), json!({ "schema": respelled }))
        .await?;
    assert_eq!(status, 200);
    assert_eq!(
        (
            found["subject"].as_str(),
            found["version"].as_u64(),
            found["id"].as_u64()
        ),
        (Some(a.as_str()), Some(1), Some(id))
    );
    assert_eq!(
        found["schema"].as_str(),
        Some(v1.as_str()),
        "the first text registered is kept"
    );
    let other = record("Order", &[field("id", "string")]);
    assert_error(
        reg.post(&format!("/subjects/{a}"), json!({ "schema": other }))
            .await?,
        404,
        40403,
    );
    assert_error(
        reg.post(
            &format!("/subjects/{}", unique("nobody")),
            json!({ "schema": v1 }),
        )
        .await?,
        404,
        40401,
    );

    // By id.
    assert_eq!(
        reg.get(&format!("/schemas/ids/{id}")).await?,
        (200, json!({ "schema": v1 }))
    );
    let (status, raw) = reg.get(&format!("/schemas/ids/{id}/schema")).await?;
    assert_eq!((status, raw), (200, serde_json::from_str::<Value>(&v1)?));
    assert_error(reg.get("/schemas/ids/999999").await?, 404, 40403);
    let (_, subjects) = reg.get(&format!("/schemas/ids/{id}/subjects")).await?;
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(subjects, json!(expected));
    assert_eq!(reg.get("/schemas/types").await?, (200, json!(["AVRO"])));

    // Subjects and versions.
    let v2 = record(
        "Order",
        &[
            field("id", "long"),
            field_with_default("note", "string", json!("")),
        ],
    );
    let id2 = reg.register(&a, &v2).await?;
    assert_ne!(id2, id);
    let (_, all) = reg.get("/subjects").await?;
    assert!(
        all.as_array()
            .is_some_and(|s| s.contains(&json!(a)) && s.contains(&json!(b))),
        "{all}"
    );
    assert_eq!(
        reg.get(&format!("/subjects/{a}/versions")).await?,
        (200, json!([1, 2]))
    );
    let (_, latest) = reg.get(&format!("/subjects/{a}/versions/latest")).await?;
    assert_eq!(
        latest,
        json!({ "subject": a, "version": 2, "id": id2, "schema": v2 })
    );
    let (_, first) = reg.get(&format!("/subjects/{a}/versions/1")).await?;
    assert_eq!(first["id"].as_u64(), Some(id));
    let (_, raw2) = reg
        .get(&format!("/subjects/{a}/versions/latest/schema"))
        .await?;
    assert_eq!(raw2, serde_json::from_str::<Value>(&v2)?);
    assert_error(
        reg.get(&format!("/subjects/{}/versions", unique("nobody")))
            .await?,
        404,
        40401,
    );
    assert_error(
        reg.get(&format!("/subjects/{}/versions/1", unique("nobody")))
            .await?,
        404,
        40401,
    );
    assert_error(
        reg.get(&format!("/subjects/{a}/versions/3")).await?,
        404,
        40402,
    );
    assert_error(
        reg.get(&format!("/subjects/{a}/versions/3/schema")).await?,
        404,
        40402,
    );
    for bad in ["0", "-2", "two", "2147483648"] {
        assert_error(
            reg.get(&format!("/subjects/{a}/versions/{bad}")).await?,
            422,
            42202,
        );
    }

    // Invalid schemas.
    assert_error(
        reg.post(
            &format!("/subjects/{a}/versions"),
            json!({ "schema": "{\"type\":\"record\"}" }),
        )
        .await?,
        422,
        42201,
    );
    assert_error(
        reg.post(
            &format!("/subjects/{a}/versions"),
            json!({ "schema": "not json" }),
        )
        .await?,
        422,
        42201,
    );
    assert_error(
        reg.post(&format!("/subjects/{a}/versions"), json!({}))
            .await?,
        422,
        42201,
    );
    let proto = json!({ "schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF" });
    assert_error(
        reg.post(&format!("/subjects/{a}/versions"), proto).await?,
        422,
        42201,
    );
    assert_eq!(
        reg.get(&format!("/subjects/{a}/versions")).await?.1,
        json!([1, 2]),
        "failures wrote nothing"
    );
    reg.stop().await
}

#[tokio::test]
async fn references_are_accepted() -> anyhow::Result<()> {
    let reg = Registry::start(&unique("_schemas_test")).await?;
    let (inner, outer) = (unique("address"), unique("customer-value"));
    let address = record("Address", &[field("city", "string")]);
    let address_id = reg.register(&inner, &address).await?;
    let customer = record(
        "Customer",
        &[
            field("name", "string"),
            field("home", "sluice.test.Address"),
        ],
    );
    let refs = json!([{ "name": "sluice.test.Address", "subject": inner, "version": 1 }]);
    let (status, body) = reg
        .post(
            &format!("/subjects/{outer}/versions"),
            json!({ "schema": customer, "references": refs }),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_u64().context("id")?;
    let (_, by_id) = reg.get(&format!("/schemas/ids/{id}")).await?;
    assert_eq!(by_id["references"], refs);
    assert_eq!(
        reg.get(&format!("/subjects/{inner}/versions/1/referencedby"))
            .await?,
        (200, json!([id]))
    );
    // Without its reference the type is unknown; with a missing one the reference is invalid.
    assert_error(
        reg.post(
            &format!("/subjects/{outer}/versions"),
            json!({ "schema": customer }),
        )
        .await?,
        422,
        42201,
    );
    let missing = json!([{ "name": "sluice.test.Address", "subject": inner, "version": 9 }]);
    assert_error(
        reg.post(
            &format!("/subjects/{outer}/versions"),
            json!({ "schema": customer, "references": missing }),
        )
        .await?,
        422,
        42201,
    );
    // A referenced version cannot be deleted.
    assert_error(
        reg.delete(&format!("/subjects/{inner}/versions/1")).await?,
        422,
        42206,
    );
    assert_eq!(reg.get(&format!("/schemas/ids/{address_id}")).await?.0, 200);
    reg.stop().await
}

#[tokio::test]
async fn soft_and_permanent_deletes() -> anyhow::Result<()> {
    let reg = Registry::start(&unique("_schemas_test")).await?;
    let s = unique("deletes-value");
    let v1 = record("D", &[field("a", "int")]);
    let v2 = record(
        "D",
        &[field("a", "int"), field_with_default("b", "int", json!(0))],
    );
    let v3 = record(
        "D",
        &[
            field("a", "int"),
            field_with_default("b", "int", json!(0)),
            field_with_default("c", "int", json!(0)),
        ],
    );
    let id1 = reg.register(&s, &v1).await?;
    reg.register(&s, &v2).await?;
    reg.register(&s, &v3).await?;

    // Permanent before soft: refused.
    assert_error(
        reg.delete(&format!("/subjects/{s}/versions/1?permanent=true"))
            .await?,
        404,
        40407,
    );
    assert_error(
        reg.delete(&format!("/subjects/{s}?permanent=true")).await?,
        404,
        40405,
    );
    // Soft delete of one version.
    assert_eq!(
        reg.delete(&format!("/subjects/{s}/versions/1")).await?,
        (200, json!(1))
    );
    assert_error(
        reg.delete(&format!("/subjects/{s}/versions/1")).await?,
        404,
        40406,
    );
    assert_eq!(
        reg.get(&format!("/subjects/{s}/versions")).await?.1,
        json!([2, 3])
    );
    assert_eq!(
        reg.get(&format!("/subjects/{s}/versions?deleted=true"))
            .await?
            .1,
        json!([1, 2, 3])
    );
    assert_error(
        reg.get(&format!("/subjects/{s}/versions/1")).await?,
        404,
        40402,
    );
    assert_eq!(
        reg.get(&format!("/subjects/{s}/versions/1?deleted=true"))
            .await?
            .1["id"]
            .as_u64(),
        Some(id1)
    );
    // Old data still decodes: the id stays readable.
    assert_eq!(reg.get(&format!("/schemas/ids/{id1}")).await?.0, 200);
    assert_eq!(
        reg.delete(&format!("/subjects/{s}/versions/latest"))
            .await?,
        (200, json!(3))
    );
    assert_error(
        reg.delete(&format!("/subjects/{s}/versions/9")).await?,
        404,
        40402,
    );
    assert_error(
        reg.delete(&format!("/subjects/{s}/versions/x")).await?,
        422,
        42202,
    );
    // Permanent delete of a soft-deleted version.
    assert_eq!(
        reg.delete(&format!("/subjects/{s}/versions/1?permanent=true"))
            .await?,
        (200, json!(1))
    );
    assert_eq!(
        reg.get(&format!("/subjects/{s}/versions?deleted=true"))
            .await?
            .1,
        json!([2, 3])
    );
    assert_error(reg.get(&format!("/schemas/ids/{id1}")).await?, 404, 40403);

    // Whole subject: soft, again (40404), then permanent.
    assert_eq!(
        reg.delete(&format!("/subjects/{s}")).await?,
        (200, json!([2]))
    );
    assert_error(reg.delete(&format!("/subjects/{s}")).await?, 404, 40404);
    assert_error(
        reg.get(&format!("/subjects/{s}/versions")).await?,
        404,
        40401,
    );
    let (_, listed) = reg.get("/subjects").await?;
    assert!(
        !listed.as_array().is_some_and(|l| l.contains(&json!(s))),
        "{listed}"
    );
    let (_, listed) = reg.get("/subjects?deleted=true").await?;
    assert!(
        listed.as_array().is_some_and(|l| l.contains(&json!(s))),
        "{listed}"
    );
    assert_eq!(
        reg.delete(&format!("/subjects/{s}?permanent=true")).await?,
        (200, json!([2, 3]))
    );
    assert_error(reg.delete(&format!("/subjects/{s}")).await?, 404, 40401);
    assert_error(
        reg.get(&format!("/subjects/{s}/versions?deleted=true"))
            .await?,
        404,
        40401,
    );
    reg.stop().await
}

#[tokio::test]
async fn config_endpoints() -> anyhow::Result<()> {
    let reg = Registry::start(&unique("_schemas_test")).await?;
    let s = unique("config-value");
    assert_eq!(
        reg.get("/config").await?,
        (200, json!({ "compatibilityLevel": "BACKWARD" }))
    );
    assert_error(reg.get(&format!("/config/{s}")).await?, 404, 40408);
    assert_eq!(
        reg.get(&format!("/config/{s}?defaultToGlobal=true"))
            .await?
            .1,
        json!({ "compatibilityLevel": "BACKWARD" })
    );
    for level in [
        "NONE",
        "BACKWARD",
        "BACKWARD_TRANSITIVE",
        "FORWARD",
        "FORWARD_TRANSITIVE",
        "FULL",
        "FULL_TRANSITIVE",
    ] {
        assert_eq!(
            reg.put(&format!("/config/{s}"), json!({ "compatibility": level }))
                .await?,
            (200, json!({ "compatibility": level }))
        );
        assert_eq!(
            reg.get(&format!("/config/{s}")).await?,
            (200, json!({ "compatibilityLevel": level }))
        );
    }
    assert_error(
        reg.put(
            &format!("/config/{s}"),
            json!({ "compatibility": "SIDEWAYS" }),
        )
        .await?,
        422,
        42203,
    );
    assert_eq!(
        reg.put("/config", json!({ "compatibility": "FULL" }))
            .await?,
        (200, json!({ "compatibility": "FULL" }))
    );
    assert_eq!(
        reg.get("/config").await?.1,
        json!({ "compatibilityLevel": "FULL" })
    );
    assert_eq!(
        reg.delete(&format!("/config/{s}")).await?,
        (200, json!({ "compatibilityLevel": "FULL_TRANSITIVE" }))
    );
    assert_eq!(
        reg.get(&format!("/config/{s}?defaultToGlobal=true"))
            .await?
            .1,
        json!({ "compatibilityLevel": "FULL" })
    );
    assert_eq!(
        reg.delete("/config").await?,
        (200, json!({ "compatibilityLevel": "FULL" }))
    );
    assert_eq!(
        reg.get("/config").await?.1,
        json!({ "compatibilityLevel": "BACKWARD" })
    );
    reg.stop().await
}

/// Registers `history` under a fresh subject with checks off, sets `level`, then registers `next`: the status.
async fn evolve(reg: &Registry, level: &str, history: &[&str], next: &str) -> anyhow::Result<u16> {
    let s = unique("evolve-value");
    reg.put(&format!("/config/{s}"), json!({ "compatibility": "NONE" }))
        .await?;
    for schema in history {
        reg.register(&s, schema).await?;
    }
    reg.put(&format!("/config/{s}"), json!({ "compatibility": level }))
        .await?;
    let answer = reg
        .post(
            &format!("/subjects/{s}/versions"),
            json!({ "schema": next }),
        )
        .await?;
    if answer.0 == 409 {
        assert_error(answer.clone(), 409, 409);
    }
    Ok(answer.0)
}

#[tokio::test]
async fn compatibility_rules() -> anyhow::Result<()> {
    let reg = Registry::start(&unique("_schemas_test")).await?;
    let base = record("User", &[field("id", "long")]);
    let added_with_default = record(
        "User",
        &[
            field("id", "long"),
            field_with_default("email", "string", json!("")),
        ],
    );
    let added_without_default = record("User", &[field("id", "long"), field("email", "string")]);
    let removed = record("User", &[]);
    let retyped = record("User", &[field("id", "string")]);
    let widened = record("User", &[field("id", "double")]);

    // Adding a field with a default: backward compatible (and forward, and full).
    for level in ["BACKWARD", "FORWARD", "FULL"] {
        assert_eq!(
            evolve(&reg, level, &[&base], &added_with_default).await?,
            200,
            "{level}"
        );
    }
    // Adding one without a default: new readers cannot fill it from old data.
    assert_eq!(
        evolve(&reg, "BACKWARD", &[&base], &added_without_default).await?,
        409
    );
    assert_eq!(
        evolve(&reg, "FORWARD", &[&base], &added_without_default).await?,
        200
    );
    assert_eq!(
        evolve(&reg, "FULL", &[&base], &added_without_default).await?,
        409
    );
    assert_eq!(
        evolve(&reg, "NONE", &[&base], &added_without_default).await?,
        200
    );
    // Removing a field (no default): new readers ignore it; old readers miss it.
    assert_eq!(evolve(&reg, "BACKWARD", &[&base], &removed).await?, 200);
    assert_eq!(evolve(&reg, "FORWARD", &[&base], &removed).await?, 409);
    // Changing a type: long to string never resolves; long widens to double one way only.
    assert_eq!(evolve(&reg, "BACKWARD", &[&base], &retyped).await?, 409);
    assert_eq!(evolve(&reg, "BACKWARD", &[&base], &widened).await?, 200);
    assert_eq!(evolve(&reg, "FORWARD", &[&base], &widened).await?, 409);

    // Transitive vs not: v1 {id: long}, v2 {} , v3 {id: string with default}. v3 reads v2 data but not v1's.
    let v3 = record("User", &[field_with_default("id", "string", json!(""))]);
    assert_eq!(
        evolve(&reg, "BACKWARD", &[&base, &removed], &v3).await?,
        200
    );
    assert_eq!(
        evolve(&reg, "BACKWARD_TRANSITIVE", &[&base, &removed], &v3).await?,
        409
    );
    assert_eq!(evolve(&reg, "FULL", &[&base, &removed], &v3).await?, 200);
    assert_eq!(
        evolve(&reg, "FULL_TRANSITIVE", &[&base, &removed], &v3).await?,
        409
    );

    // The compatibility endpoint answers without registering.
    let s = unique("check-value");
    reg.register(&s, &base).await?;
    reg.register(&s, &removed).await?;
    let check = |version: &str| format!("/compatibility/subjects/{s}/versions/{version}");
    assert_eq!(
        reg.post(&check("latest"), json!({ "schema": v3 })).await?,
        (200, json!({ "is_compatible": true }))
    );
    assert_eq!(
        reg.post(&check("1"), json!({ "schema": v3 })).await?,
        (200, json!({ "is_compatible": false }))
    );
    let (_, verbose) = reg
        .post(
            &format!("{}?verbose=true", check("1")),
            json!({ "schema": v3 }),
        )
        .await?;
    assert!(
        verbose["messages"]
            .as_array()
            .is_some_and(|m| !m.is_empty()),
        "{verbose}"
    );
    reg.put(
        &format!("/config/{s}"),
        json!({ "compatibility": "BACKWARD_TRANSITIVE" }),
    )
    .await?;
    assert_eq!(
        reg.post(&check("latest"), json!({ "schema": v3 })).await?.1,
        json!({ "is_compatible": false })
    );
    assert_eq!(
        reg.post(&check("2"), json!({ "schema": v3 })).await?.1,
        json!({ "is_compatible": true })
    );
    assert_eq!(
        reg.post(
            &format!("/compatibility/subjects/{s}/versions"),
            json!({ "schema": v3 })
        )
        .await?
        .1,
        json!({ "is_compatible": false })
    );
    assert_error(
        reg.post(&check("7"), json!({ "schema": v3 })).await?,
        404,
        40402,
    );
    assert_error(
        reg.post(&check("zero"), json!({ "schema": v3 })).await?,
        422,
        42202,
    );
    assert_error(
        reg.post(&check("latest"), json!({ "schema": "{" })).await?,
        422,
        42201,
    );
    let nobody = format!(
        "/compatibility/subjects/{}/versions/latest",
        unique("nobody")
    );
    assert_error(
        reg.post(&nobody, json!({ "schema": v3 })).await?,
        404,
        40401,
    );
    assert_eq!(
        reg.get(&format!("/subjects/{s}/versions")).await?.1,
        json!([1, 2]),
        "checks register nothing"
    );
    reg.stop().await
}

#[tokio::test]
async fn restart_loses_nothing() -> anyhow::Result<()> {
    let topic = unique("_schemas_test");
    let reg = Registry::start(&topic).await?;
    let (a, b) = (unique("keep-value"), unique("keep2-value"));
    let v1 = record("K", &[field("a", "int")]);
    let v2 = record(
        "K",
        &[
            field("a", "int"),
            field_with_default("b", "string", json!("x")),
        ],
    );
    let other = record("Other", &[field("z", "string")]);
    let id1 = reg.register(&a, &v1).await?;
    let id2 = reg.register(&a, &v2).await?;
    let id3 = reg.register(&b, &other).await?;
    reg.put(&format!("/config/{b}"), json!({ "compatibility": "FULL" }))
        .await?;
    reg.put("/config", json!({ "compatibility": "FORWARD" }))
        .await?;
    reg.delete(&format!("/subjects/{a}/versions/1")).await?;
    let before = (
        reg.get("/subjects?deleted=true").await?,
        reg.get(&format!("/subjects/{a}/versions?deleted=true"))
            .await?,
        reg.get(&format!("/subjects/{a}/versions/latest")).await?,
        reg.get(&format!("/schemas/ids/{id1}")).await?,
    );
    reg.stop().await?;

    let again = Registry::start(&topic).await?;
    let after = (
        again.get("/subjects?deleted=true").await?,
        again
            .get(&format!("/subjects/{a}/versions?deleted=true"))
            .await?,
        again.get(&format!("/subjects/{a}/versions/latest")).await?,
        again.get(&format!("/schemas/ids/{id1}")).await?,
    );
    assert_eq!(before, after);
    assert_eq!(
        again.get(&format!("/subjects/{a}/versions")).await?.1,
        json!([2]),
        "the soft delete survived"
    );
    assert_eq!(
        again.get(&format!("/config/{b}")).await?.1,
        json!({ "compatibilityLevel": "FULL" })
    );
    assert_eq!(
        again.get("/config").await?.1,
        json!({ "compatibilityLevel": "FORWARD" })
    );
    // Ids are stable: the same schemas keep theirs, a new one gets a fresh one.
    assert_eq!(again.register(&a, &v2).await?, id2);
    assert_eq!(again.register(&unique("elsewhere"), &other).await?, id3);
    let fresh = again
        .register(&unique("new-value"), &record("New", &[field("n", "int")]))
        .await?;
    assert!(fresh > id3.max(id2).max(id1), "{fresh} reuses an id");
    again.stop().await?;

    // A third start sees the writes of the second.
    let third = Registry::start(&topic).await?;
    assert_eq!(third.get(&format!("/schemas/ids/{fresh}")).await?.0, 200);
    third.stop().await
}

#[tokio::test]
async fn converter_encodes_and_decodes_through_the_registry() -> anyhow::Result<()> {
    let reg = Registry::start(&unique("_schemas_test")).await?;
    let topic = unique("events");
    let schema = record(
        "Event",
        &[
            field("id", "long"),
            field("name", "string"),
            json!({ "name": "tags", "type": { "type": "array", "items": "string" } }),
            json!({ "name": "note", "type": ["null", "string"], "default": null }),
        ],
    );
    let settings = SrSettings::new(reg.base.clone());
    let encoder = AvroEncoder::new(settings.clone());
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
        topic.clone(),
        false,
        SuppliedSchema::new(
            Some("sluice.test.Event".into()),
            SchemaType::Avro,
            schema.clone(),
        ),
    );
    let fields = vec![
        ("id", Avro::Long(42)),
        ("name", Avro::String("signup".into())),
        (
            "tags",
            Avro::Array(vec![Avro::String("a".into()), Avro::String("b".into())]),
        ),
        ("note", Avro::Union(1, Box::new(Avro::String("hi".into())))),
    ];
    let bytes = encoder
        .encode(fields.clone(), strategy.clone())
        .await
        .map_err(|e| anyhow::anyhow!("encode: {e:?}"))?;

    // The Confluent header carries the id this registry assigned under the topic's value subject.
    let (status, latest) = reg
        .get(&format!("/subjects/{topic}-value/versions/latest"))
        .await?;
    assert_eq!(status, 200, "{latest}");
    let (id, body) = sluice_schemas::wire::unframe(&bytes)?;
    assert_eq!(Some(u64::from(id)), latest["id"].as_u64());
    assert!(!body.is_empty());

    // A decoder that has never seen the schema fetches it by id and gets the record back.
    let decoder = AvroDecoder::new(SrSettings::new(reg.base.clone()));
    let decoded = decoder
        .decode(Some(&bytes))
        .await
        .map_err(|e| anyhow::anyhow!("decode: {e:?}"))?;
    let expected = Avro::Record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
    assert_eq!(decoded.value, expected);

    // Encoding again (fresh encoder, so no cache) reuses the id rather than minting a new version.
    let other = vec![
        ("id", Avro::Long(1)),
        ("name", Avro::String("x".into())),
        ("tags", Avro::Array(vec![])),
        ("note", Avro::Union(0, Box::new(Avro::Null))),
    ];
    let again = AvroEncoder::new(settings).encode(other, strategy).await;
    let again = again.map_err(|e| anyhow::anyhow!("encode again: {e:?}"))?;
    assert_eq!(sluice_schemas::wire::unframe(&again)?.0, id);
    assert_eq!(
        reg.get(&format!("/subjects/{topic}-value/versions"))
            .await?
            .1,
        json!([1])
    );
    reg.stop().await
}

#[tokio::test]
async fn ops_endpoints_and_unknown_paths() -> anyhow::Result<()> {
    let reg = Registry::start(&unique("_schemas_test")).await?;
    let s = unique("ops-value");
    reg.register(&s, "\"string\"").await?;
    let health = reg.http.get(format!("{}/healthz", reg.base)).send().await?;
    assert_eq!(health.status().as_u16(), 200);
    let ready = reg
        .http
        .get(format!("{}/readyz", reg.base))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        ready.contains("schema_log: ok") && ready.contains("kafka: ok"),
        "{ready}"
    );
    let metrics = reg
        .http
        .get(format!("{}/metrics", reg.base))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sluice_registry_http_requests_total")
                && l.contains(r#"route="/subjects/{subject}/versions""#)
                && l.contains(r#"status="200""#)),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_registry_log_writes_total{outcome=\"ok\"}"),
        "{metrics}"
    );
    assert_error(reg.get("/no/such/thing").await?, 404, 404);
    // Other clients' media types: plain JSON is fine, a form is not.
    let plain = reg
        .http
        .post(format!("{}/subjects/{s}", reg.base))
        .header("Content-Type", "application/json")
        .body(json!({ "schema": "\"string\"" }).to_string())
        .send()
        .await?;
    assert_eq!(plain.status().as_u16(), 200);
    let form = reg
        .http
        .post(format!("{}/subjects/{s}", reg.base))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("schema=x")
        .send()
        .await?;
    assert_eq!(form.status().as_u16(), 415);
    reg.stop().await
}

#[tokio::test]
async fn store_errors_are_50001() -> anyhow::Result<()> {
    // Nothing listens on this port: the log can be neither replayed nor written.
    let config = RegistryConfig {
        kafka: sluice_runtime::kafka::KafkaSettings {
            bootstrap_servers: "127.0.0.1:1".into(),
            ..kafka_settings()
        },
        topic: unique("_schemas_test"),
        write_timeout_ms: 1000,
        ..RegistryConfig::default()
    };
    let reg = Registry::spawn(config).await?;
    let health = eventually("healthz", Duration::from_secs(10), || async {
        Ok(reg
            .http
            .get(format!("{}/healthz", reg.base))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16()))
    })
    .await?;
    assert_eq!(health, 200, "alive even without a broker");
    assert_eq!(
        reg.http
            .get(format!("{}/readyz", reg.base))
            .send()
            .await?
            .status()
            .as_u16(),
        503
    );
    assert_error(
        reg.post("/subjects/s/versions", json!({ "schema": "\"int\"" }))
            .await?,
        503,
        50001,
    );
    assert_error(reg.get("/subjects").await?, 503, 50001);
    reg.stop().await
}

#[tokio::test]
async fn a_failed_write_answers_50001_and_changes_nothing() -> anyhow::Result<()> {
    // librdkafka refuses, locally, records over message.max.bytes: a write failure on a healthy broker.
    let mut kafka = kafka_settings();
    kafka
        .client
        .insert("message.max.bytes".into(), "1000".into());
    let config = RegistryConfig {
        kafka,
        topic: unique("_schemas_test"),
        ..RegistryConfig::default()
    };
    let reg = Registry::start_with(config).await?;
    let s = unique("big-value");
    reg.register(&s, &record("Small", &[field("a", "int")]))
        .await?;
    let many: Vec<Value> = (0..60)
        .map(|i| field(&format!("field_number_{i}"), "string"))
        .collect();
    let big = record("Big", &many);
    assert!(big.len() > 1000);
    let other = unique("big-value");
    let answer = reg
        .post(
            &format!("/subjects/{other}/versions"),
            json!({ "schema": big }),
        )
        .await?;
    assert_error(answer, 500, 50001);
    assert_error(
        reg.get(&format!("/subjects/{other}/versions")).await?,
        404,
        40401,
    );
    assert_error(
        reg.post(&format!("/subjects/{s}"), json!({ "schema": big }))
            .await?,
        404,
        40403,
    );
    // The registry keeps working after a failed write.
    reg.register(&other, &record("Small", &[field("a", "int")]))
        .await?;
    let metrics = reg
        .http
        .get(format!("{}/metrics", reg.base))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("sluice_registry_log_writes_total{outcome=\"error\"} 1"),
        "{metrics}"
    );
    reg.stop().await
}

#[tokio::test]
async fn converter_registers_and_resolves_references() -> anyhow::Result<()> {
    let reg = Registry::start(&unique("_schemas_test")).await?;
    let topic = unique("customers");
    let address_subject = unique("address");
    let address = record("Address", &[field("city", "string")]);
    // The parent names the type relative to its namespace: schema_registry_converter inlines references by
    // that spelling when it builds the writer schema.
    let customer = record(
        "Customer",
        &[field("name", "string"), field("home", "Address")],
    );
    let supplied = SuppliedSchema::new(
        Some("sluice.test.Customer".into()),
        SchemaType::Avro,
        customer,
    )
    .with_references(vec![SuppliedReference::new(
        "sluice.test.Address".into(),
        address_subject.clone(),
        address,
    )]);
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(topic.clone(), false, supplied);
    let fields = vec![
        ("name", Avro::String("ada".into())),
        (
            "home",
            Avro::Record(vec![("city".into(), Avro::String("london".into()))]),
        ),
    ];
    let encoder = AvroEncoder::new(SrSettings::new(reg.base.clone()));
    let bytes = encoder
        .encode(fields.clone(), strategy)
        .await
        .map_err(|e| anyhow::anyhow!("encode: {e:?}"))?;

    // The converter registered the reference under its own subject, then the schema pointing at it.
    assert_eq!(
        reg.get(&format!("/subjects/{address_subject}/versions"))
            .await?
            .1,
        json!([1])
    );
    let (_, latest) = reg
        .get(&format!("/subjects/{topic}-value/versions/latest"))
        .await?;
    assert_eq!(
        latest["references"],
        json!([{ "name": "sluice.test.Address", "subject": address_subject, "version": 1 }])
    );

    let decoder = AvroDecoder::new(SrSettings::new(reg.base.clone()));
    let decoded = decoder
        .decode(Some(&bytes))
        .await
        .map_err(|e| anyhow::anyhow!("decode: {e:?}"))?;
    assert_eq!(
        decoded.value,
        Avro::Record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    );
    reg.stop().await
}

#[tokio::test]
async fn refuses_a_topic_with_several_partitions() -> anyhow::Result<()> {
    let topic = unique("_schemas_test");
    let spec = sluice_runtime::kafka::TopicSpec {
        name: &topic,
        partitions: 3,
        config: vec![],
    };
    sluice_runtime::kafka::ensure_topics(&kafka_settings(), &[spec]).await?;
    let config = RegistryConfig {
        kafka: kafka_settings(),
        topic,
        ..RegistryConfig::default()
    };
    let reg = Registry::spawn(config).await?;
    let why = eventually(
        "readyz names the partition problem",
        Duration::from_secs(30),
        || async {
            let r = reg.http.get(format!("{}/readyz", reg.base)).send().await?;
            let (status, body) = (r.status().as_u16(), r.text().await?);
            Ok((status == 503 && body.contains("needs exactly one")).then_some(body))
        },
    )
    .await?;
    assert!(why.contains("3 partitions"), "{why}");
    assert_error(reg.get("/subjects").await?, 503, 50001);
    reg.stop().await
}
