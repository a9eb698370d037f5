//! The admin port: health, readiness, metrics and status.

use crate::support;

use support::manifests::{self, write};
use support::{backends, get, start_server};

#[tokio::test]
async fn admin_endpoints_report_health_readiness_metrics_and_status() {
    let backend = backends::echo("web").await;
    let dir = manifests::folder(&[("web", backend.port())]);
    write(
        dir.path(),
        "app.yaml",
        &manifests::policy("app", "app.test", "web", &["allUsers"]),
    );
    write(
        dir.path(),
        "orphan.yaml",
        &manifests::policy("orphan", "orphan.test", "web", &["allUsers"])
            .replace("name: idp", "name: missing"),
    );
    let server = start_server(dir.path()).await;
    let admin = server.admin_addr;

    assert_eq!(get(admin, "admin", "/healthz", &[]).await.status, 200);
    assert_eq!(
        get(admin, "admin", "/readyz", &[]).await.status,
        200,
        "ready once the first table is built"
    );
    assert_eq!(get(admin, "admin", "/nope", &[]).await.status, 404);

    assert_eq!(
        get(server.http_addr.unwrap(), "app.test", "/", &[])
            .await
            .status,
        200
    );
    assert_eq!(
        get(server.http_addr.unwrap(), "nowhere.test", "/", &[])
            .await
            .status,
        404
    );
    let metrics = get(admin, "admin", "/metrics", &[]).await.text();
    for expected in [
        "kube_iap_requests_total{route=\"default/app\",status=\"200\"} 1",
        "kube_iap_requests_total{route=\"-\",status=\"404\"} 1",
        "kube_iap_upstream_latency_seconds_count{route=\"default/app\"} 1",
        "kube_iap_table_build_seconds_count 1",
        "kube_iap_objects{kind=\"IapPolicy\"} 2",
        "kube_iap_objects{kind=\"Secret\"} 1",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected:?} in\n{metrics}"
        );
    }

    let status = get(admin, "admin", "/status", &[]).await.json();
    assert_eq!(status["routes"], 2);
    let orphan = status["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "orphan")
        .unwrap()
        .clone();
    assert_eq!(orphan["status"]["errorCode"], 13);
    assert_eq!(orphan["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(orphan["status"]["conditions"][0]["status"], "False");
    assert_eq!(
        orphan["status"]["conditions"][0]["reason"],
        "OAuthClientNotFound"
    );
    server.shutdown().await;
}
