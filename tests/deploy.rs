//! The deployment files (issue 9) parse and agree with the binary: every `PCS_*` variable
//! they set is one `pcs` reads, and ports, probes and Service targets line up. No container
//! engine runs here, so images are not built and `docker compose config` is not run; this
//! reads the files as YAML (merge keys resolved) instead.

use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn deploy() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy"))
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let mut v = Value::deserialize(d).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
            v.apply_merge().unwrap();
            v
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Every environment variable `pcs` reads, from its own help texts.
fn known_env() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for command in [&["serve", "--help"][..], &["health", "--help"], &["get", "--help"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_pcs")).args(command).output().unwrap();
        let help = String::from_utf8(out.stdout).unwrap();
        for part in help.split("[env: ").skip(1) {
            names.insert(part.split(['=', ']']).next().unwrap().to_owned());
        }
    }
    assert!(names.contains("PCS_KAFKA_BROKERS") && names.contains("PCS_JWKS"), "{names:?}");
    names
}

fn check_env(name: &str, known: &BTreeSet<String>, file: &str) {
    if name.starts_with("PCS_") {
        assert!(known.contains(name), "{file} sets {name}, which pcs does not read");
    } else {
        assert!(name.starts_with("OTEL_") || name == "RUST_LOG", "{file} sets unexpected variable {name}");
    }
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn kubernetes_manifests_agree_with_the_binary() {
    let known = known_env();
    let k8s = deploy().join("k8s");
    let kustomization = &documents(&k8s.join("kustomization.yaml"))[0];
    let mut objects = Vec::new();
    for resource in kustomization["resources"].as_sequence().unwrap() {
        let file = resource.as_str().unwrap();
        objects.extend(documents(&k8s.join(file)).into_iter().map(|o| (file.to_owned(), o)));
    }
    let kind = |k: &'static str| objects.iter().filter(move |(_, o)| o["kind"] == k).map(|(_, o)| o);
    for k in ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap"] {
        assert!(kind(k).next().is_some(), "no {k} in the kustomization");
    }
    let config = kind("ConfigMap").find(|c| c["metadata"]["name"] == "pcs-config").expect("pcs-config");
    let data = config["data"].as_mapping().unwrap();
    for name in data.keys() {
        check_env(name.as_str().unwrap(), &known, "configmap.yaml");
    }
    let listen = port_of(data[&Value::from("PCS_LISTEN")].as_str().unwrap());
    let health = port_of(data[&Value::from("PCS_HEALTH_LISTEN")].as_str().unwrap());

    let deployment = kind("Deployment").next().unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    for env in container["env"].as_sequence().unwrap() {
        check_env(env["name"].as_str().unwrap(), &known, "deployment.yaml");
    }
    let ports: Vec<(String, u64)> = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["containerPort"].as_u64().unwrap()))
        .collect();
    assert!(ports.contains(&("grpc".into(), listen)), "container ports {ports:?} vs PCS_LISTEN {listen}");
    assert!(ports.contains(&("health".into(), health)), "container ports {ports:?} vs PCS_HEALTH_LISTEN {health}");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["grpc"]["port"].as_u64(), Some(health), "{probe} must use the health port");
    }
    // Mounted files are where the variables point.
    let mounts: Vec<&str> =
        container["volumeMounts"].as_sequence().unwrap().iter().map(|m| m["mountPath"].as_str().unwrap()).collect();
    for env in container["env"].as_sequence().unwrap() {
        if let Some(path) = env["value"].as_str().filter(|v| v.starts_with('/')) {
            assert!(mounts.iter().any(|m| path.starts_with(m)), "{path} is not under a volume mount {mounts:?}");
        }
    }
    let service = kind("Service").next().unwrap();
    let target = &service["spec"]["ports"][0]["targetPort"];
    assert!(target == "grpc" || target.as_u64() == Some(listen), "the Service targets {target:?}");
    let hpa = kind("HorizontalPodAutoscaler").next().unwrap();
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], deployment["metadata"]["name"]);
    let max = hpa["spec"]["maxReplicas"].as_u64().unwrap();
    let partitions: u64 = data[&Value::from("PCS_EVENTS_PARTITIONS")].as_str().unwrap().parse().unwrap();
    assert!(max <= partitions, "more replicas ({max}) than event partitions ({partitions}) would sit idle");
    assert!(container["resources"]["requests"]["cpu"].is_string(), "resource requests are set");
}

#[test]
fn the_compose_file_agrees_with_the_binary() {
    let known = known_env();
    let compose = &documents(&deploy().join("compose.yaml"))[0];
    let services = compose["services"].as_mapping().unwrap();
    let names: BTreeSet<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    for required in ["kafka", "redis", "otel-collector", "pcs-1", "pcs-2"] {
        assert!(names.contains(required), "compose has no {required} service");
    }
    let mut pcs_services = 0;
    for (name, service) in services {
        let name = name.as_str().unwrap();
        if let Some(depends) = service["depends_on"].as_mapping() {
            for dependency in depends.keys() {
                assert!(names.contains(dependency.as_str().unwrap()), "{name} depends on unknown {dependency:?}");
            }
        }
        let Some(env) = service["environment"].as_mapping() else { continue };
        let is_pcs = env.keys().any(|k| k.as_str().is_some_and(|k| k.starts_with("PCS_")));
        if !is_pcs {
            continue;
        }
        pcs_services += 1;
        for key in env.keys() {
            check_env(key.as_str().unwrap(), &known, &format!("compose.yaml service {name}"));
        }
        let listen = port_of(env[&Value::from("PCS_LISTEN")].as_str().unwrap());
        let published: Vec<&str> =
            service["ports"].as_sequence().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        assert!(
            published.iter().all(|p| port_of(p) == listen),
            "{name} publishes {published:?} but listens on {listen}"
        );
        assert!(env.contains_key("PCS_KAFKA_BROKERS"), "{name} has no broker");
        assert!(
            env.contains_key("PCS_REDIS_URL") || env.contains_key("PCS_REDIS_CLUSTER_NODES"),
            "{name} has no Redis"
        );
    }
    assert!(pcs_services >= 2, "two pcs replicas");
    // The score topic is created compacted.
    let text = std::fs::read_to_string(deploy().join("compose.yaml")).unwrap();
    assert!(text.contains("cleanup.policy=compact"));
}

#[test]
fn the_dockerfile_runs_as_non_root_with_a_health_check() {
    let text = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    assert!(text.matches("\nFROM ").count() + usize::from(text.starts_with("FROM ")) >= 2, "multi-stage");
    assert!(text.contains("\nUSER 10001"), "a non-root user");
    assert!(text.contains("HEALTHCHECK") && text.contains("\"health\""), "pcs health as the health check");
}
