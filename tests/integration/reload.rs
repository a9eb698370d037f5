//! Local mode's folder: edits apply without a restart, bad documents break nothing else, and the
//! table is swapped whole under requests in flight.

use crate::support;

use support::manifests::{self, write};
use support::{backends, eventually, get, start_server};

#[tokio::test]
async fn an_edited_manifest_applies_without_a_restart() {
    let (one, two) = (backends::echo("one").await, backends::echo("two").await);
    let dir = manifests::folder(&[("one", one.port()), ("two", two.port())]);
    write(
        dir.path(),
        "policy.yaml",
        &manifests::policy("app", "app.test", "one", &["allUsers"]),
    );
    let server = start_server(dir.path()).await;
    let http = server.http_addr.unwrap();
    assert_eq!(
        get(http, "app.test", "/", &[]).await.json()["backend"],
        "one"
    );

    write(
        dir.path(),
        "policy.yaml",
        &manifests::policy("app", "app.test", "two", &["allUsers"]),
    );
    eventually("the edit to reach the proxy", || async {
        get(http, "app.test", "/", &[]).await.json()["backend"] == "two"
    })
    .await;

    // A policy whose members no longer include allUsers fails closed on the very next request.
    write(
        dir.path(),
        "policy.yaml",
        &manifests::policy("app", "app.test", "two", &["allAuthenticatedUsers"]),
    );
    eventually("the tightened policy", || async {
        get(http, "app.test", "/", &[]).await.status == 401
    })
    .await;

    std::fs::remove_file(dir.path().join("policy.yaml")).unwrap();
    eventually("the deleted policy's route to go", || async {
        get(http, "app.test", "/", &[]).await.status == 404
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_malformed_file_is_reported_and_breaks_nothing_else() {
    let backend = backends::echo("web").await;
    let dir = manifests::folder(&[("web", backend.port())]);
    write(
        dir.path(),
        "good.yaml",
        &manifests::policy("good", "good.test", "web", &["allUsers"]),
    );
    write(
        dir.path(),
        "broken.yaml",
        "apiVersion: kube-iap.io/v1alpha1\nkind: IapPolicy\nmetadata: {name: broken}\nspec: {hosts: [unclosed\n",
    );
    write(
        dir.path(),
        "invalid.yaml",
        "apiVersion: kube-iap.io/v1alpha1\nkind: IapPolicy\nmetadata: {name: invalid}\nspec: {hosts: 42}\n",
    );
    write(dir.path(), "notes.txt", "not a manifest, not read");
    let server = start_server(dir.path()).await;
    let http = server.http_addr.unwrap();
    assert_eq!(get(http, "good.test", "/", &[]).await.status, 200);

    let status = get(server.admin_addr, "admin", "/status", &[]).await.json();
    let errors = status["manifestErrors"]
        .as_array()
        .expect("manifestErrors")
        .clone();
    assert_eq!(errors.len(), 2, "{status}");
    assert!(errors[0]["file"].as_str().unwrap().ends_with("broken.yaml"));
    assert!(
        errors[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not valid YAML")
    );
    assert!(
        errors[1]["file"]
            .as_str()
            .unwrap()
            .ends_with("invalid.yaml")
    );
    assert_eq!(errors[1]["document"], 1);
    let metrics = get(server.admin_addr, "admin", "/metrics", &[])
        .await
        .text();
    assert!(
        metrics.contains("kube_iap_manifest_errors_total 2"),
        "{metrics}"
    );

    // Breaking a file that served a route later keeps everything else serving.
    write(
        dir.path(),
        "web-service.yaml",
        &format!(
            "{}\n  garbage: [",
            manifests::service("web", backend.port())
        ),
    );
    eventually("the broken Service file to be read", || async {
        get(server.admin_addr, "admin", "/status", &[]).await.json()["manifestErrors"]
            .as_array()
            .unwrap()
            .len()
            == 3
    })
    .await;
    assert_eq!(
        get(http, "good.test", "/", &[]).await.status,
        503,
        "the Service is gone, the route fails closed"
    );
    write(
        dir.path(),
        "web-service.yaml",
        &manifests::service("web", backend.port()),
    );
    eventually("the repaired file", || async {
        get(http, "good.test", "/", &[]).await.status == 200
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_the_table_it_started_with() {
    let slow = backends::gated("slow").await;
    let dir = manifests::folder(&[("slow", slow.addr.port())]);
    write(
        dir.path(),
        "policy.yaml",
        &manifests::policy("app", "app.test", "slow", &["allUsers"]),
    );
    let server = start_server(dir.path()).await;
    let http = server.http_addr.unwrap();
    let generation = || server.published.report.load().generation;
    let before = generation();

    let in_flight = tokio::spawn(async move { get(http, "app.test", "/", &[]).await });
    // The table changes only once the request has reached the backend.
    slow.arrived.notified().await;
    std::fs::remove_file(dir.path().join("policy.yaml")).unwrap();
    eventually("the route's removal", || async { generation() > before }).await;
    assert_eq!(
        get(http, "app.test", "/", &[]).await.status,
        404,
        "new requests see the new table"
    );
    slow.release.notify_one();
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200, "the request in flight completed");
    assert_eq!(reply.json()["backend"], "slow");
    server.shutdown().await;
}
