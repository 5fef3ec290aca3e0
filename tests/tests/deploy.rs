//! The deployment files against the services' real config structs.
//!
//! Every config file and `SLUICE_*` variable that `docker-compose.yml` and the rendered k8s manifests give a
//! service is loaded with `sluice_runtime::config_file::load_from` into that service's config struct, which denies
//! unknown fields, so a misspelt or stale key fails here instead of at a customer's start-up. On top, the loaded
//! values must fit the deployment: services listen on all interfaces on the port their probes use, the topic job
//! creates what the producer writes, and KEDA watches the group and topic the consumer reads, never allowing more
//! replicas than partitions. Static only: no stack needed; `kubectl` renders the manifests (`kubectl kustomize`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use base64::Engine;
use serde::Deserialize as _;
use serde::de::DeserializeOwned;
use serde_yaml::Value;
use sluice_runtime::config_file::load_from;
use sluice_tests::unique;

const PRODUCER_PORT: u16 = 8080;
const REGISTRY_PORT: u16 = 8081;
const CONSUMER_PORT: u16 = 8082;
/// The lake sink's ops port (`lake.listen`).
const LAKE_PORT: u16 = 8083;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Sluice services, named as Dockerfile targets and as `app.kubernetes.io/component` labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Service {
    Producer,
    Consumer,
    Registry,
}

impl Service {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "producer" => Some(Self::Producer),
            "consumer" => Some(Self::Consumer),
            "registry" => Some(Self::Registry),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Producer => "producer",
            Self::Consumer => "consumer",
            Self::Registry => "registry",
        }
    }
}

/// What one deployment gives one service: its config file's text and its environment.
#[derive(Debug, Clone)]
struct Deployed {
    /// Where this came from, for messages (`docker-compose.yml service producer`).
    origin: String,
    service: Service,
    /// The TOML the service reads (`None`: no file, built-in defaults).
    file: Option<String>,
    /// The container's environment (only `SLUICE_*` matters to the loader; the rest is passed as it would be).
    env: Vec<(String, String)>,
    /// The consumer image run as `sluice-consumer lake` (its `[lake]` keys matter, not ClickHouse's).
    lake: bool,
}

impl Deployed {
    /// Loads this deployment's config into `T` exactly as the service's `main` would.
    fn load<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        let path = match &self.file {
            Some(text) => {
                let path = std::env::temp_dir().join(format!("{}.toml", unique("sluice_deploy")));
                std::fs::write(&path, text)?;
                Some(path)
            }
            None => None,
        };
        let loaded = load_from::<T, _>(path.as_deref(), self.env.clone());
        if let Some(p) = &path {
            let _ = std::fs::remove_file(p);
        }
        loaded.with_context(|| {
            format!(
                "{}: config does not load into the {} config",
                self.origin,
                self.service.name()
            )
        })
    }
}

/// The configs of one deployment (compose, or one kustomize rendering), loaded.
#[derive(Default)]
struct Loaded {
    producer: Vec<(String, sluice_producer::Config)>,
    consumer: Vec<(String, sluice_consumer::config::Config)>,
    /// Consumer images run as the lake sink.
    lake: Vec<(String, sluice_consumer::config::Config)>,
    registry: Vec<(String, sluice_registry::RegistryConfig)>,
}

fn load_all(deployed: &[Deployed], problems: &mut Vec<String>) -> Loaded {
    let mut loaded = Loaded::default();
    for d in deployed {
        let result = match d.service {
            Service::Producer => d.load::<sluice_producer::Config>().and_then(|c| {
                c.check()
                    .with_context(|| format!("{}: producer config is rejected", d.origin))?;
                loaded.producer.push((d.origin.clone(), c));
                Ok(())
            }),
            Service::Registry => d
                .load::<sluice_registry::RegistryConfig>()
                .map(|c| loaded.registry.push((d.origin.clone(), c))),
            Service::Consumer => d.load::<sluice_consumer::config::Config>().and_then(|c| {
                c.validate()
                    .and_then(|()| if d.lake { c.lake.validate() } else { Ok(()) })
                    .map_err(|e| {
                        anyhow::anyhow!("{}: consumer config is rejected: {e}", d.origin)
                    })?;
                if d.lake {
                    loaded.lake.push((d.origin.clone(), c));
                } else {
                    loaded.consumer.push((d.origin.clone(), c));
                }
                Ok(())
            }),
        };
        if let Err(e) = result {
            problems.push(format!("{e:#}"));
        }
    }
    loaded
}

fn expect_listen(problems: &mut Vec<String>, origin: &str, listen: SocketAddr, port: u16) {
    if !listen.ip().is_unspecified() || listen.port() != port {
        problems.push(format!(
            "{origin}: listens on {listen}, but other containers reach it on 0.0.0.0:{port}"
        ));
    }
}

fn report(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "deployment config problems:\n  - {}",
        problems.join("\n  - ")
    );
}

// ------------------------------------------------------------------------------------------------ YAML helpers

fn str_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn get_str(v: &Value, path: &[&str]) -> Option<String> {
    get(v, path).and_then(str_of)
}

/// Compose's variable substitution, with every variable unset (so each `${X:-default}` takes its default, as on a
/// fresh checkout) and `$$` meaning a literal `$`.
fn interpolate(s: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = r
                .find('}')
                .with_context(|| format!("unclosed ${{ in {s:?}"))?;
            let expr = &r[..end];
            // `${X:-default}` and `${X-default}` give the default when X is unset; a bare `${X}` gives "".
            if let Some((_, default)) = expr.split_once(":-").or_else(|| expr.split_once('-')) {
                out.push_str(default);
            }
            rest = &r[end + 1..];
        } else {
            // `$NAME`: unset, so empty, as compose does.
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn compose_env(svc: &Value) -> anyhow::Result<Vec<(String, String)>> {
    let mut env = Vec::new();
    match svc.get("environment") {
        None => {}
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                let k = str_of(k).context("environment key")?;
                let v = if v.is_null() {
                    String::new()
                } else {
                    str_of(v).with_context(|| format!("value of {k}"))?
                };
                env.push((k, interpolate(&v)?));
            }
        }
        Some(Value::Sequence(items)) => {
            for item in items {
                let s = str_of(item).context("environment entry")?;
                let (k, v) = s.split_once('=').unwrap_or((s.as_str(), ""));
                env.push((k.to_owned(), interpolate(v)?));
            }
        }
        Some(other) => bail!("environment is neither a map nor a list: {other:?}"),
    }
    Ok(env)
}

// ------------------------------------------------------------------------------------------------ compose

struct Compose {
    services: BTreeMap<String, Value>,
}

fn read_compose() -> anyhow::Result<Compose> {
    let text = std::fs::read_to_string(root().join("docker-compose.yml"))?;
    let mut doc: Value = serde_yaml::from_str(&text).context("docker-compose.yml is not YAML")?;
    // `<<: *anchor` merge keys, as compose applies them.
    doc.apply_merge().context("docker-compose.yml merge keys")?;
    let mut services = BTreeMap::new();
    for (name, svc) in doc
        .get("services")
        .and_then(Value::as_mapping)
        .context("no services")?
    {
        services.insert(str_of(name).context("service name")?, svc.clone());
    }
    Ok(Compose { services })
}

fn compose_deployed(compose: &Compose) -> anyhow::Result<Vec<Deployed>> {
    let mut out = Vec::new();
    for (name, svc) in &compose.services {
        let Some(service) = get_str(svc, &["build", "target"])
            .as_deref()
            .and_then(Service::from_name)
        else {
            continue;
        };
        let env = compose_env(svc).with_context(|| format!("service {name}"))?;
        if env.iter().any(|(k, _)| k == "SLUICE_CONFIG") {
            bail!(
                "service {name} sets SLUICE_CONFIG; this test reads the file the Dockerfile bakes in"
            );
        }
        // The image's own file (Dockerfile: COPY config/<service>.toml /etc/sluice/ + SLUICE_CONFIG).
        let file = std::fs::read_to_string(root().join(format!("config/{}.toml", service.name())))
            .with_context(|| {
                format!(
                    "config/{}.toml, baked into the {} image",
                    service.name(),
                    service.name()
                )
            })?;
        let command: Vec<String> = svc
            .get("command")
            .and_then(Value::as_sequence)
            .map(|c| c.iter().filter_map(str_of).collect())
            .unwrap_or_default();
        out.push(Deployed {
            origin: format!("docker-compose.yml service {name}"),
            service,
            file: Some(file),
            env,
            lake: command.first().is_some_and(|c| c == "lake"),
        });
    }
    Ok(out)
}

#[test]
fn compose_config_loads_into_every_service() -> anyhow::Result<()> {
    report(check_compose(&read_compose()?)?);
    Ok(())
}

fn check_compose(compose: &Compose) -> anyhow::Result<Vec<String>> {
    let deployed = compose_deployed(compose)?;
    let mut problems = Vec::new();
    for want in [Service::Producer, Service::Consumer, Service::Registry] {
        if !deployed.iter().any(|d| d.service == want) {
            problems.push(format!(
                "docker-compose.yml has no service built from target {}",
                want.name()
            ));
        }
    }
    let loaded = load_all(&deployed, &mut problems);
    check_consistency("docker-compose.yml", &loaded, &mut problems);
    let is_service = |url: &str| compose.services.contains_key(url_host(url));

    for (origin, c) in &loaded.producer {
        expect_listen(&mut problems, origin, c.listen, PRODUCER_PORT);
        if !is_service(&c.registry_url) {
            problems.push(format!(
                "{origin}: registry_url {} names no compose service",
                c.registry_url
            ));
        }
    }
    for (origin, c) in &loaded.lake {
        expect_listen(&mut problems, origin, c.lake.listen, LAKE_PORT);
        if !is_service(&c.registry_url) {
            problems.push(format!(
                "{origin}: {} names no compose service",
                c.registry_url
            ));
        }
    }
    for (origin, c) in &loaded.consumer {
        expect_listen(&mut problems, origin, c.listen, CONSUMER_PORT);
        for url in [&c.registry_url, &c.clickhouse.url] {
            if !is_service(url) {
                problems.push(format!("{origin}: {url} names no compose service"));
            }
        }
        // `docker-compose stop` must outlast the consumer's own flush deadline, or it is killed mid-commit.
        let stop = compose
            .services
            .get(origin.rsplit(' ').next().unwrap_or_default())
            .and_then(|svc| get_str(svc, &["stop_grace_period"]))
            .map_or(Ok(10), |g| parse_seconds(&g))?;
        if stop * 1000 <= c.shutdown_grace_ms {
            problems.push(format!(
                "{origin}: stop_grace_period {stop}s does not outlast shutdown_grace_ms {}",
                c.shutdown_grace_ms
            ));
        }
    }
    for (origin, c) in &loaded.registry {
        expect_listen(&mut problems, origin, c.listen, REGISTRY_PORT);
        // Each registry must be the only writer of its topic.
        for (name, svc) in &compose.services {
            if get_str(svc, &["environment", "SCHEMA_REGISTRY_KAFKASTORE_TOPIC"]).as_deref()
                == Some(c.topic.as_str())
            {
                problems.push(format!(
                    "{origin}: shares its topic {} with {name}",
                    c.topic
                ));
            }
        }
    }
    for (origin, broker) in brokers(&loaded) {
        if broker != "kafka:9092" {
            problems.push(format!(
                "{origin}: bootstrap servers {broker} are not the compose broker kafka:9092"
            ));
        }
    }

    // kafka-init must create every topic the services use, with the partition count their configs declare.
    match compose.services.get("kafka-init") {
        None => problems.push("docker-compose.yml has no kafka-init topic job".into()),
        Some(init) => {
            let env: BTreeMap<String, String> = compose_env(init)?.into_iter().collect();
            let created: Vec<&str> = env
                .get("TOPICS")
                .map(|t| t.split_whitespace().collect())
                .unwrap_or_default();
            let partitions = env.get("PARTITIONS").and_then(|p| p.parse::<i32>().ok());
            for (origin, topic, want) in declared_topics(&loaded) {
                if !created.contains(&topic.as_str()) {
                    problems.push(format!(
                        "kafka-init does not create {topic}, which {origin} uses"
                    ));
                } else if partitions != Some(want) {
                    problems.push(format!("kafka-init makes {topic} with {partitions:?} partitions, {origin} says {want}"));
                }
            }
        }
    }
    Ok(problems)
}

/// Every topic the loaded configs name, with the partition count each declares for it.
fn declared_topics(loaded: &Loaded) -> Vec<(String, String, i32)> {
    let mut out = Vec::new();
    for (origin, c) in &loaded.producer {
        out.extend(
            c.streams
                .values()
                .map(|s| (origin.clone(), s.topic.clone(), s.partitions)),
        );
    }
    for (origin, c) in &loaded.consumer {
        for s in &c.streams {
            out.push((origin.clone(), s.topic.clone(), s.partitions));
            out.push((origin.clone(), s.dlq_topic(), s.partitions));
        }
    }
    out
}

/// Each service's bootstrap servers.
fn brokers(loaded: &Loaded) -> Vec<(String, String)> {
    let p = loaded
        .producer
        .iter()
        .map(|(o, c)| (o.clone(), c.kafka.bootstrap_servers.clone()));
    let k = loaded
        .consumer
        .iter()
        .map(|(o, c)| (o.clone(), c.kafka.bootstrap_servers.clone()));
    let r = loaded
        .registry
        .iter()
        .map(|(o, c)| (o.clone(), c.kafka.bootstrap_servers.clone()));
    p.chain(k).chain(r).collect()
}

/// What must hold between the services of one deployment, wherever it runs.
fn check_consistency(name: &str, loaded: &Loaded, problems: &mut Vec<String>) {
    let distinct: std::collections::BTreeSet<String> =
        brokers(loaded).into_iter().map(|(_, b)| b).collect();
    if distinct.len() > 1 {
        problems.push(format!(
            "{name}: services point at different Kafka clusters: {distinct:?}"
        ));
    }
    // The topic is created by whichever service starts first, so they must agree on its partition count, and
    // the consumer must read what the producer writes.
    for (origin, c) in &loaded.consumer {
        for s in &c.streams {
            let writers: Vec<(&String, i32)> = loaded
                .producer
                .iter()
                .filter_map(|(po, p)| {
                    p.streams
                        .values()
                        .find(|ps| ps.topic == s.topic)
                        .map(|ps| (po, ps.partitions))
                })
                .collect();
            if writers.is_empty() && !loaded.producer.is_empty() {
                problems.push(format!(
                    "{origin}: reads topic {}, which no producer stream writes",
                    s.topic
                ));
            }
            for (po, partitions) in writers {
                if partitions != s.partitions {
                    problems.push(format!(
                        "{origin} creates {} with {} partitions but {po} with {partitions}",
                        s.topic, s.partitions
                    ));
                }
            }
        }
    }
}

fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', ':']).next().unwrap_or_default()
}

/// Compose durations such as `30s`, `1m30s`, `2m`.
fn parse_seconds(s: &str) -> anyhow::Result<u64> {
    let mut total = 0;
    let mut num = String::new();
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            num.push(ch);
            continue;
        }
        let n: u64 = num.parse().with_context(|| format!("duration {s:?}"))?;
        total += match ch {
            'h' => n * 3600,
            'm' => n * 60,
            's' => n,
            _ => bail!("duration {s:?}: unit {ch:?}"),
        };
        num.clear();
    }
    if !num.is_empty() {
        total += num.parse::<u64>()?;
    }
    Ok(total)
}

// ------------------------------------------------------------------------------------------------ k8s

/// Every kustomization under k8s/: the base and each overlay.
fn kustomizations() -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs = vec![root().join("k8s/base")];
    let overlays = root().join("k8s/overlays");
    for entry in std::fs::read_dir(&overlays).with_context(|| format!("{}", overlays.display()))? {
        let path = entry?.path();
        if path.join("kustomization.yaml").exists() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

fn render(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .context(
            "running `kubectl kustomize` (kubectl renders k8s/; the machine image ships it)",
        )?;
    if !out.status.success() {
        bail!(
            "kubectl kustomize {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    let mut docs = Vec::new();
    for de in serde_yaml::Deserializer::from_str(&text) {
        let v = Value::deserialize(de)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

struct Rendering {
    name: String,
    docs: Vec<Value>,
}

impl Rendering {
    fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.docs.iter().find(|d| {
            get_str(d, &["kind"]).as_deref() == Some(kind)
                && get_str(d, &["metadata", "name"]).as_deref() == Some(name)
        })
    }

    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.docs
            .iter()
            .filter(move |d| get_str(d, &["kind"]).as_deref() == Some(kind))
    }

    /// A key of a rendered ConfigMap or Secret (decoded), as a string.
    fn data(&self, kind: &str, name: &str, key: &str) -> anyhow::Result<String> {
        let obj = self
            .find(kind, name)
            .with_context(|| format!("no {kind} {name}"))?;
        if let Some(v) = get_str(obj, &["data", key]) {
            return if kind == "Secret" {
                // kustomize folds long values over several lines.
                let compact: String = v.chars().filter(|c| !c.is_whitespace()).collect();
                let bytes = base64::engine::general_purpose::STANDARD.decode(compact.as_bytes())?;
                Ok(String::from_utf8(bytes)?)
            } else {
                Ok(v)
            };
        }
        get_str(obj, &["stringData", key])
            .with_context(|| format!("{kind} {name} has no key {key}"))
    }

    /// Every key of a ConfigMap or Secret, as environment variables (`envFrom`).
    fn data_as_env(&self, kind: &str, name: &str) -> anyhow::Result<Vec<(String, String)>> {
        let obj = self
            .find(kind, name)
            .with_context(|| format!("no {kind} {name}"))?;
        let mut env = Vec::new();
        for field in ["data", "stringData"] {
            if let Some(m) = obj.get(field).and_then(Value::as_mapping) {
                for k in m.keys().filter_map(str_of) {
                    let v = if field == "data" {
                        self.data(kind, name, &k)?
                    } else {
                        get_str(obj, &[field, &k]).unwrap_or_default()
                    };
                    env.push((k, v));
                }
            }
        }
        Ok(env)
    }

    /// What each Sluice Deployment gives its service: the mounted file SLUICE_CONFIG names, and its environment.
    fn deployed(&self) -> anyhow::Result<Vec<Deployed>> {
        let mut out = Vec::new();
        for dep in self.of_kind("Deployment") {
            let name = get_str(dep, &["metadata", "name"]).unwrap_or_default();
            let Some(service) = get_str(
                dep,
                &[
                    "spec",
                    "template",
                    "metadata",
                    "labels",
                    "app.kubernetes.io/component",
                ],
            )
            .as_deref()
            .and_then(Service::from_name) else {
                continue;
            };
            let origin = format!("{} Deployment {name}", self.name);
            let pod = get(dep, &["spec", "template", "spec"]).context("no pod spec")?;
            let container = get(pod, &["containers"])
                .and_then(|c| c.get(0))
                .context("no container")?;
            let mut env = Vec::new();
            for from in container
                .get("envFrom")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                if let Some(n) = get_str(from, &["secretRef", "name"]) {
                    env.extend(self.data_as_env("Secret", &n)?);
                }
                if let Some(n) = get_str(from, &["configMapRef", "name"]) {
                    env.extend(self.data_as_env("ConfigMap", &n)?);
                }
            }
            for e in container
                .get("env")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                let k = get_str(e, &["name"]).context("env without name")?;
                let Some(v) = get_str(e, &["value"]) else {
                    bail!(
                        "{origin}: env {k} is not a literal value; teach this test to resolve it"
                    );
                };
                env.retain(|(old, _)| *old != k);
                env.push((k, v));
            }
            // The image's default when the Deployment does not say.
            let config_path = env
                .iter()
                .find(|(k, _)| k == "SLUICE_CONFIG")
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| format!("/etc/sluice/{}.toml", service.name()));
            let file = self
                .mounted_file(pod, container, &config_path)
                .with_context(|| format!("{origin}: {config_path}"))?;
            out.push(Deployed {
                origin,
                service,
                file: Some(file),
                env,
                lake: false,
            });
        }
        Ok(out)
    }

    /// The content of `path` inside the container, from a ConfigMap or Secret volume mount.
    fn mounted_file(&self, pod: &Value, container: &Value, path: &str) -> anyhow::Result<String> {
        for mount in container
            .get("volumeMounts")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let mount_path = get_str(mount, &["mountPath"]).unwrap_or_default();
            let Some(rel) = path.strip_prefix(&format!("{}/", mount_path.trim_end_matches('/')))
            else {
                continue;
            };
            let vol_name = get_str(mount, &["name"]).unwrap_or_default();
            let vol = pod
                .get("volumes")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
                .find(|v| get_str(v, &["name"]).as_deref() == Some(vol_name.as_str()))
                .with_context(|| format!("no volume {vol_name}"))?;
            let (kind, source, name_key) = if let Some(s) = vol.get("configMap") {
                ("ConfigMap", s, "name")
            } else if let Some(s) = vol.get("secret") {
                ("Secret", s, "secretName")
            } else {
                bail!("volume {vol_name} is neither a ConfigMap nor a Secret");
            };
            let obj_name = get_str(source, &[name_key]).context("volume source without a name")?;
            // With `items`, the file at `path` holds item `key`; without, every key is a file of its own name.
            let key = match source.get("items").and_then(Value::as_sequence) {
                Some(items) => items
                    .iter()
                    .find(|i| get_str(i, &["path"]).as_deref() == Some(rel))
                    .and_then(|i| get_str(i, &["key"]))
                    .with_context(|| format!("volume {vol_name} projects nothing to {rel}"))?,
                None => rel.to_owned(),
            };
            return self.data(kind, &obj_name, &key);
        }
        bail!("nothing is mounted at {path}")
    }
}

fn renderings() -> anyhow::Result<Vec<Rendering>> {
    kustomizations()?
        .into_iter()
        .map(|dir| {
            let name = dir
                .strip_prefix(root())
                .unwrap_or(&dir)
                .display()
                .to_string();
            Ok(Rendering {
                docs: render(&dir)?,
                name,
            })
        })
        .collect()
}

fn container_port(r: &Rendering, deployment: &str) -> Option<u16> {
    let dep = r.find("Deployment", deployment)?;
    let c = get(dep, &["spec", "template", "spec", "containers"])?.get(0)?;
    c.get("ports")?
        .get(0)?
        .get("containerPort")?
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
}

#[test]
fn k8s_config_loads_into_every_service() -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for r in renderings()? {
        problems.extend(check_rendering(&r)?);
    }
    report(problems);
    Ok(())
}

fn check_rendering(r: &Rendering) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    let deployed = r.deployed()?;
    for want in [Service::Producer, Service::Consumer, Service::Registry] {
        if !deployed.iter().any(|d| d.service == want) {
            problems.push(format!("{}: no Deployment for the {}", r.name, want.name()));
        }
    }
    let loaded = load_all(&deployed, &mut problems);
    check_consistency(&r.name, &loaded, &mut problems);
    let is_service = |url: &str| r.find("Service", url_host(url)).is_some();
    for (origin, c) in &loaded.producer {
        expect_listen(
            &mut problems,
            origin,
            c.listen,
            container_port(r, "sluice-producer").unwrap_or(PRODUCER_PORT),
        );
        if !is_service(&c.registry_url) {
            problems.push(format!(
                "{origin}: registry_url {} names no Service in {}",
                c.registry_url, r.name
            ));
        }
    }
    for (origin, c) in &loaded.registry {
        expect_listen(
            &mut problems,
            origin,
            c.listen,
            container_port(r, "sluice-registry").unwrap_or(REGISTRY_PORT),
        );
    }
    for (origin, c) in &loaded.consumer {
        expect_listen(
            &mut problems,
            origin,
            c.listen,
            container_port(r, "sluice-consumer").unwrap_or(CONSUMER_PORT),
        );
        if !is_service(&c.registry_url) {
            problems.push(format!(
                "{origin}: registry_url {} names no Service in {}",
                c.registry_url, r.name
            ));
        }
        // Kubernetes kills the pod at terminationGracePeriodSeconds: it must outlast the consumer's own flush
        // deadline plus a commit and leaving the group.
        let grace = r
            .find("Deployment", "sluice-consumer")
            .and_then(|d| {
                get(
                    d,
                    &["spec", "template", "spec", "terminationGracePeriodSeconds"],
                )
            })
            .and_then(Value::as_u64)
            .unwrap_or(30);
        if grace * 1000 < c.shutdown_grace_ms + 10_000 {
            problems.push(format!(
                "{origin}: terminationGracePeriodSeconds {grace} leaves under 10 s after shutdown_grace_ms {}",
                c.shutdown_grace_ms
            ));
        }
    }

    // KEDA watches the consumer's own group, topic and brokers, and never asks for more replicas than the
    // topic has partitions (the extra ones would idle).
    for so in r.of_kind("ScaledObject") {
        let where_ = format!(
            "{} ScaledObject {}",
            r.name,
            get_str(so, &["metadata", "name"]).unwrap_or_default()
        );
        let max = get(so, &["spec", "maxReplicaCount"])
            .and_then(Value::as_i64)
            .unwrap_or(100);
        for trig in get(so, &["spec", "triggers"])
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            if get_str(trig, &["type"]).as_deref() != Some("kafka") {
                continue;
            }
            let meta = |k: &str| get_str(trig, &["metadata", k]).unwrap_or_default();
            let (topic, group, bootstrap) = (
                meta("topic"),
                meta("consumerGroup"),
                meta("bootstrapServers"),
            );
            for (origin, c) in &loaded.consumer {
                if c.group_id != group {
                    problems.push(format!(
                        "{where_}: watches group {group:?} but {origin} joins {:?}",
                        c.group_id
                    ));
                }
                // With no committed offset KEDA counts lag from where it assumes the consumer starts; the
                // consumer starts at `earliest` unless kafka.client overrides it (KEDA's own default is latest).
                let reset = c
                    .kafka
                    .client
                    .get("auto.offset.reset")
                    .map_or("earliest", String::as_str);
                let keda_reset = get_str(trig, &["metadata", "offsetResetPolicy"])
                    .unwrap_or_else(|| "latest".into());
                if keda_reset != reset {
                    problems.push(format!(
                        "{where_}: offsetResetPolicy {keda_reset} but {origin} starts at {reset}"
                    ));
                }
                if c.kafka.bootstrap_servers != bootstrap {
                    problems.push(format!(
                        "{where_}: watches brokers {bootstrap} but {origin} reads from {}",
                        c.kafka.bootstrap_servers
                    ));
                }
                match c.streams.iter().find(|s| s.topic == topic) {
                    None => problems.push(format!("{where_}: topic {topic:?} is not consumed by {origin}")),
                    Some(s) if i64::from(s.partitions) < max => problems.push(format!(
                        "{where_}: maxReplicaCount {max} exceeds the {} partitions of {topic} ({origin})",
                        s.partitions
                    )),
                    Some(_) => {}
                }
            }
            for (origin, c) in &loaded.producer {
                if let Some(s) = c.streams.values().find(|s| s.topic == topic)
                    && i64::from(s.partitions) < max
                {
                    problems.push(format!(
                        "{where_}: maxReplicaCount {max} exceeds the {} partitions of {topic} ({origin})",
                        s.partitions
                    ));
                }
            }
        }
    }
    Ok(problems)
}

// ------------------------------------------------------------------------------------------------ the checks can fail

fn assert_caught(problems: &[String], expected: &str) {
    assert!(
        problems.iter().any(|p| p.contains(expected)),
        "expected a problem containing {expected:?}, got {problems:#?}"
    );
}

fn compose_env_mut<'a>(compose: &'a mut Compose, service: &str) -> &'a mut serde_yaml::Mapping {
    compose
        .services
        .get_mut(service)
        .and_then(|s| s.get_mut("environment"))
        .and_then(Value::as_mapping_mut)
        .unwrap_or_else(|| panic!("compose service {service} has an environment map"))
}

/// Each breakage of a good compose file must be reported, or the compose checks prove nothing.
#[test]
fn compose_checks_catch_breakage() -> anyhow::Result<()> {
    type Break = fn(&mut Compose);
    let cases: [(Break, &str); 6] = [
        (
            |c| drop(compose_env_mut(c, "sluice-registry").remove("SLUICE_TOPIC")),
            "shares its topic _schemas",
        ),
        (
            |c| {
                drop(
                    compose_env_mut(c, "producer")
                        .insert("SLUICE_KAFKA__BOOTSTRAP_SERVER".into(), "kafka:9092".into()),
                )
            },
            "bootstrap_server",
        ),
        (
            |c| {
                drop(
                    compose_env_mut(c, "consumer")
                        .insert("SLUICE_CLICKHOUSE__PASSWROD".into(), "x".into()),
                )
            },
            "passwrod",
        ),
        (
            |c| drop(compose_env_mut(c, "producer").remove("SLUICE_LISTEN")),
            "listens on 127.0.0.1:8080",
        ),
        (
            |c| drop(compose_env_mut(c, "kafka-init").insert("PARTITIONS".into(), "8".into())),
            "partitions",
        ),
        (
            |c| {
                drop(
                    compose_env_mut(c, "consumer")
                        .insert("SLUICE_REGISTRY_URL".into(), "http://nowhere:8081".into()),
                )
            },
            "names no compose service",
        ),
    ];
    for (i, (break_it, expected)) in cases.into_iter().enumerate() {
        let mut compose = read_compose()?;
        break_it(&mut compose);
        let problems = check_compose(&compose)?;
        assert!(!problems.is_empty(), "case {i}: no problem reported");
        assert_caught(&problems, expected);
    }
    Ok(())
}

/// The YAML helpers above must read what compose means, or the checks prove nothing.
#[test]
fn interpolation_follows_compose() -> anyhow::Result<()> {
    assert_eq!(
        interpolate("http://${HOST:-schema-registry}:8081")?,
        "http://schema-registry:8081"
    );
    assert_eq!(interpolate("${A-x}/${B}/$C/$$D")?, "x///$D");
    assert_eq!(interpolate("plain")?, "plain");
    assert!(interpolate("${OPEN").is_err());
    assert_eq!(parse_seconds("1m30s")?, 90);
    assert_eq!(parse_seconds("30s")?, 30);
    assert_eq!(url_host("http://schema-registry:8081/x"), "schema-registry");
    assert_eq!(url_host("http://clickhouse"), "clickhouse");
    Ok(())
}

fn find_mut<'a>(r: &'a mut Rendering, kind: &str, name: &str) -> &'a mut Value {
    r.docs
        .iter_mut()
        .find(|d| {
            get_str(d, &["kind"]).as_deref() == Some(kind)
                && get_str(d, &["metadata", "name"]).as_deref() == Some(name)
        })
        .unwrap_or_else(|| panic!("rendering has {kind} {name}"))
}

fn set(v: &mut Value, path: &[&str], to: Value) {
    let (last, parents) = path.split_last().expect("non-empty path");
    let parent = parents.iter().fold(v, |v, k| {
        v.get_mut(*k)
            .unwrap_or_else(|| panic!("no {k} in {path:?}"))
    });
    parent
        .as_mapping_mut()
        .expect("a mapping")
        .insert((*last).into(), to);
}

fn kafka_trigger(r: &mut Rendering) -> &mut Value {
    let so = find_mut(r, "ScaledObject", "sluice-consumer");
    so.get_mut("spec")
        .and_then(|s| s.get_mut("triggers"))
        .and_then(|t| t.get_mut(0))
        .expect("a trigger")
}

fn consumer_pod(r: &mut Rendering) -> &mut Value {
    let d = find_mut(r, "Deployment", "sluice-consumer");
    d.get_mut("spec")
        .and_then(|s| s.get_mut("template"))
        .and_then(|t| t.get_mut("spec"))
        .expect("a pod spec")
}

/// Each breakage of a good rendering must be reported, or the k8s checks prove nothing.
#[test]
fn k8s_checks_catch_breakage() -> anyhow::Result<()> {
    type Break = fn(&mut Rendering);
    let cases: [(Break, &str); 6] = [
        (
            |r| {
                set(
                    kafka_trigger(r),
                    &["metadata", "consumerGroup"],
                    "other".into(),
                )
            },
            "watches group \"other\"",
        ),
        (
            |r| {
                set(
                    kafka_trigger(r),
                    &["metadata", "offsetResetPolicy"],
                    "latest".into(),
                )
            },
            "offsetResetPolicy latest",
        ),
        (
            |r| {
                set(
                    find_mut(r, "ScaledObject", "sluice-consumer"),
                    &["spec", "maxReplicaCount"],
                    100.into(),
                )
            },
            "maxReplicaCount 100 exceeds",
        ),
        (
            |r| {
                set(
                    consumer_pod(r),
                    &["terminationGracePeriodSeconds"],
                    30.into(),
                )
            },
            "terminationGracePeriodSeconds 30",
        ),
        (
            |r| {
                let env = consumer_pod(r)
                    .get_mut("containers")
                    .and_then(|c| c.get_mut(0))
                    .and_then(|c| c.get_mut("env"));
                let env = env.and_then(Value::as_sequence_mut).expect("an env list");
                let mut var = serde_yaml::Mapping::new();
                var.insert("name".into(), "SLUICE_BATCH__MAX_ROW".into());
                var.insert("value".into(), "5".into());
                env.push(Value::Mapping(var));
            },
            "max_row",
        ),
        (
            |r| set(kafka_trigger(r), &["metadata", "topic"], "clicks".into()),
            "topic \"clicks\" is not consumed",
        ),
    ];
    let good = renderings()?.pop().expect("at least one kustomization");
    assert!(
        check_rendering(&good)?.is_empty(),
        "the unbroken rendering passes"
    );
    for (i, (break_it, expected)) in cases.into_iter().enumerate() {
        let mut r = Rendering {
            name: good.name.clone(),
            docs: good.docs.clone(),
        };
        break_it(&mut r);
        let problems = check_rendering(&r)?;
        assert!(!problems.is_empty(), "case {i}: no problem reported");
        assert_caught(&problems, expected);
    }
    Ok(())
}
