//! The request logic against an in-memory log.

use super::*;
use crate::log::memory::MemoryLog;

fn registry() -> (Registry, Arc<MemoryLog>) {
    let log = Arc::new(MemoryLog::default());
    let metrics = Metrics::new(&prometheus::Registry::new()).expect("metrics");
    let r = Registry::new(log.clone(), CompatibilityLevel::Backward, metrics);
    r.install(Index::default());
    (r, log)
}

fn req(schema: &str) -> SchemaRequest {
    SchemaRequest {
        schema: Some(schema.to_owned()),
        ..SchemaRequest::default()
    }
}

fn record(fields: &str) -> SchemaRequest {
    req(&format!(
        r#"{{"type":"record","name":"R","fields":[{fields}]}}"#
    ))
}

const A: &str = r#"{"name":"a","type":"int"}"#;
const B_DEFAULT: &str = r#"{"name":"b","type":"string","default":""}"#;
const B: &str = r#"{"name":"b","type":"string"}"#;

#[tokio::test]
async fn not_ready_until_installed() {
    let log = Arc::new(MemoryLog::default());
    let metrics = Metrics::new(&prometheus::Registry::new()).expect("metrics");
    let r = Registry::new(log, CompatibilityLevel::Backward, metrics);
    assert!(matches!(r.subjects(false), Err(Error::NotReady)));
    assert!(matches!(
        r.register("s", &req(r#""int""#)).await,
        Err(Error::NotReady)
    ));
}

#[tokio::test]
async fn same_schema_same_id_across_subjects_and_whitespace() {
    let (r, log) = registry();
    let id = r.register("a", &record(A)).await.expect("registers");
    let again = r
        .register(
            "a",
            &req(r#"{ "name" : "R", "type":"record", "fields":[{"type":"int","name":"a"}] }"#),
        )
        .await;
    assert_eq!(again.ok(), Some(id));
    assert_eq!(r.register("b", &record(A)).await.ok(), Some(id));
    assert_eq!(r.versions("a", false).ok(), Some(vec![1]));
    assert_eq!(log.records().len(), 2, "re-registering writes nothing");
    let other = r
        .register("a", &record(&format!("{A},{B_DEFAULT}")))
        .await
        .expect("compatible");
    assert_ne!(other, id);
    assert_eq!(r.versions("a", false).ok(), Some(vec![1, 2]));
}

#[tokio::test]
async fn backward_rejects_a_field_without_default_and_none_allows_it() {
    let (r, _) = registry();
    r.register("s", &record(A)).await.expect("v1");
    let err = r
        .register("s", &record(&format!("{A},{B}")))
        .await
        .expect_err("incompatible");
    assert!(matches!(err, Error::Incompatible { .. }), "{err}");
    r.set_config(Some("s"), "NONE").await.expect("config");
    assert!(r.register("s", &record(&format!("{A},{B}"))).await.is_ok());
}

#[tokio::test]
async fn transitive_checks_every_version() {
    let (r, _) = registry();
    // v1 {a}, v2 {} (drop a: backward fine), v3 {a:string default} (fine against v2, not v1's int a).
    r.register("s", &record(A)).await.expect("v1");
    r.register("s", &record("")).await.expect("v2");
    let v3 = record(r#"{"name":"a","type":"string","default":""}"#);
    assert!(
        r.check_compatibility("s", None, &v3)
            .expect("checks")
            .is_empty()
    );
    r.set_config(Some("s"), "BACKWARD_TRANSITIVE")
        .await
        .expect("config");
    assert_eq!(
        r.check_compatibility("s", None, &v3).expect("checks").len(),
        1
    );
    assert_eq!(
        r.check_compatibility("s", Some(VersionSpec::Latest), &v3)
            .expect("checks")
            .len(),
        1
    );
    assert!(
        r.check_compatibility("s", Some(VersionSpec::Number(2)), &v3)
            .expect("checks")
            .is_empty()
    );
    assert!(matches!(
        r.register("s", &v3).await,
        Err(Error::Incompatible { .. })
    ));
}

#[tokio::test]
async fn soft_then_permanent_delete() {
    let (r, _) = registry();
    let id = r.register("s", &record(A)).await.expect("v1");
    r.register("s", &record(&format!("{A},{B_DEFAULT}")))
        .await
        .expect("v2");
    assert!(matches!(
        r.delete_subject("s", true).await,
        Err(Error::SubjectNotSoftDeleted(_))
    ));
    assert!(matches!(
        r.delete_version("s", VersionSpec::Number(1), true).await,
        Err(Error::VersionNotSoftDeleted(..))
    ));
    assert_eq!(
        r.delete_version("s", VersionSpec::Number(1), false)
            .await
            .ok(),
        Some(1)
    );
    assert!(matches!(
        r.delete_version("s", VersionSpec::Number(1), false).await,
        Err(Error::VersionSoftDeleted(..))
    ));
    assert_eq!(r.versions("s", false).ok(), Some(vec![2]));
    assert_eq!(r.versions("s", true).ok(), Some(vec![1, 2]));
    assert!(
        r.schema_by_id(id).is_ok(),
        "soft-deleted schemas still resolve by id"
    );
    assert_eq!(r.delete_subject("s", false).await.ok(), Some(vec![2]));
    assert!(matches!(
        r.delete_subject("s", false).await,
        Err(Error::SubjectSoftDeleted(_))
    ));
    assert!(matches!(
        r.versions("s", false),
        Err(Error::SubjectNotFound(_))
    ));
    assert_eq!(r.delete_subject("s", true).await.ok(), Some(vec![1, 2]));
    assert!(matches!(
        r.delete_subject("s", true).await,
        Err(Error::SubjectNotFound(_))
    ));
    assert!(matches!(r.schema_by_id(id), Err(Error::SchemaNotFound(_))));
}

#[tokio::test]
async fn re_registering_a_soft_deleted_schema_makes_a_new_version_with_the_same_id() {
    let (r, _) = registry();
    let id = r.register("s", &record(A)).await.expect("v1");
    r.delete_subject("s", false).await.expect("soft delete");
    assert_eq!(r.register("s", &record(A)).await.ok(), Some(id));
    assert_eq!(r.versions("s", false).ok(), Some(vec![2]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_get_distinct_versions_and_one_id_per_schema() {
    let (r, log) = registry();
    r.set_config(Some("s"), "NONE").await.expect("config");
    let r = Arc::new(r);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let r = r.clone();
        // Ten distinct schemas, each registered twice at once.
        tasks.push(tokio::spawn(async move {
            r.register(
                "s",
                &req(&format!(
                    r#"{{"type":"fixed","name":"F","size":{}}}"#,
                    i % 10 + 1
                )),
            )
            .await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("joins").expect("registers"));
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids, (1..=10).collect::<Vec<u32>>());
    assert_eq!(r.versions("s", false).ok(), Some((1..=10).collect()));
    assert_eq!(
        log.records().len(),
        11,
        "one config and one record per distinct schema"
    );
}

#[tokio::test]
async fn lookup() {
    let (r, _) = registry();
    let id = r.register("s", &record(A)).await.expect("v1");
    let found = r.lookup("s", &record(A), false).expect("found");
    assert_eq!((found.version, found.id), (1, id));
    assert!(matches!(
        r.lookup("s", &record(B), false),
        Err(Error::SchemaNotFound(None))
    ));
    assert!(matches!(
        r.lookup("t", &record(A), false),
        Err(Error::SubjectNotFound(_))
    ));
    assert!(matches!(
        r.lookup("s", &req("{"), false),
        Err(Error::InvalidSchema(_))
    ));
}

#[tokio::test]
async fn invalid_input() {
    let (r, _) = registry();
    assert!(matches!(
        r.register("s", &req("nope")).await,
        Err(Error::InvalidSchema(_))
    ));
    assert!(matches!(
        r.register("s", &SchemaRequest::default()).await,
        Err(Error::InvalidSchema(_))
    ));
    let proto = SchemaRequest {
        schema_type: Some("PROTOBUF".into()),
        ..req("syntax = \"proto3\";")
    };
    assert!(matches!(
        r.register("s", &proto).await,
        Err(Error::InvalidSchema(_))
    ));
    assert!(matches!(
        r.set_config(None, "SIDEWAYS").await,
        Err(Error::InvalidCompatibility(_))
    ));
}

#[tokio::test]
async fn a_failed_write_changes_nothing() {
    let (r, log) = registry();
    log.set_failing(true);
    assert!(matches!(
        r.register("s", &record(A)).await,
        Err(Error::Store(_))
    ));
    assert!(matches!(
        r.versions("s", false),
        Err(Error::SubjectNotFound(_))
    ));
    log.set_failing(false);
    assert_eq!(r.register("s", &record(A)).await.ok(), Some(1));
}

#[tokio::test]
async fn replaying_the_written_log_rebuilds_the_same_state() {
    let (r, log) = registry();
    r.register("s", &record(A)).await.expect("v1");
    r.register("s", &record(&format!("{A},{B_DEFAULT}")))
        .await
        .expect("v2");
    r.register("t", &req(r#""string""#)).await.expect("t");
    r.set_config(Some("s"), "FULL").await.expect("config");
    r.delete_version("s", VersionSpec::Number(1), false)
        .await
        .expect("delete");
    let mut replayed = Index::default();
    for rec in log.records() {
        let (k, v) = rec.encode();
        if let Ok(Some(decoded)) = Record::decode(Some(&k), v.as_deref()) {
            replayed.apply(&decoded);
        }
    }
    let (again, _) = registry();
    again.install(replayed);
    assert_eq!(again.versions("s", true).ok(), Some(vec![1, 2]));
    assert_eq!(again.versions("s", false).ok(), Some(vec![2]));
    assert_eq!(
        again
            .subject_config("s", false)
            .ok()
            .map(|c| c.compatibility_level),
        Some(CompatibilityLevel::Full)
    );
    assert_eq!(again.register("t", &req(r#""string""#)).await.ok(), Some(3));
}

#[tokio::test]
async fn references_are_resolved_and_protected() {
    let (r, _) = registry();
    r.register(
        "inner",
        &req(r#"{"type":"record","name":"ns.Inner","fields":[{"name":"x","type":"int"}]}"#),
    )
    .await
    .expect("inner");
    let outer = SchemaRequest {
        references: Some(vec![crate::api::ReferenceRequest {
            name: "ns.Inner".into(),
            subject: "inner".into(),
            version: 1,
        }]),
        ..req(r#"{"type":"record","name":"ns.Outer","fields":[{"name":"i","type":"ns.Inner"}]}"#)
    };
    let id = r.register("outer", &outer).await.expect("outer");
    assert_eq!(r.schema_by_id(id).map(|s| s.references.len()).ok(), Some(1));
    assert_eq!(
        r.referenced_by("inner", VersionSpec::Number(1)).ok(),
        Some(vec![id])
    );
    assert!(matches!(
        r.delete_version("inner", VersionSpec::Number(1), false)
            .await,
        Err(Error::ReferenceExists(..))
    ));
}
