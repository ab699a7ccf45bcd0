use hearth_core::testing::{TestClient, test_server};
use http::Method;

#[tokio::test]
async fn versions_lists_v1_and_unstable_features() {
    let (hs, _) = test_server(1).await;
    let c = TestClient::anonymous(&hs);
    let v = c.get("/_matrix/client/versions").await;
    let body = v.assert_ok();
    assert!(
        body["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "v1.12")
    );
    assert!(body["unstable_features"].is_object());
}

#[tokio::test]
async fn unknown_endpoint_is_unrecognized_and_wrong_method_is_405() {
    let (hs, _) = test_server(1).await;
    let c = TestClient::anonymous(&hs);
    c.get("/_matrix/client/v3/nope")
        .await
        .assert_error(404, "M_UNRECOGNIZED");
    c.request(Method::POST, "/_matrix/client/versions", None)
        .await
        .assert_error(405, "M_UNRECOGNIZED");
}

#[tokio::test]
async fn well_known_points_at_the_same_origin() {
    let (hs, _) = test_server(1).await;
    let c = TestClient::anonymous(&hs);
    let v = c.get("/.well-known/matrix/client").await;
    assert!(v.assert_ok()["m.homeserver"]["base_url"].is_string());
}

#[tokio::test]
async fn server_name_is_the_hex_public_key_and_survives_restart() {
    use std::rc::Rc;
    let store = Rc::new(hearth_core::storage::MemoryStorage::new());
    let world = Rc::new(hearth_core::testing::TestWorld::new(7));
    let a = hearth_core::Homeserver::new(store.clone(), world.clone(), Default::default())
        .await
        .unwrap();
    let b = hearth_core::Homeserver::new(store, world, Default::default())
        .await
        .unwrap();
    assert_eq!(a.server_name(), b.server_name());
    assert_eq!(a.server_name().as_str().len(), 64);
    assert!(
        a.server_name()
            .as_str()
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
}

#[tokio::test]
async fn well_known_keeps_the_scheme_of_an_absolute_request_url() {
    let (hs, _) = test_server(2).await;
    let req = http::Request::builder()
        .uri("https://chat.example:8443/.well-known/matrix/client")
        .body(Vec::new())
        .unwrap();
    let resp = hs.handle(req).await;
    let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(v["m.homeserver"]["base_url"], "https://chat.example:8443");
}
