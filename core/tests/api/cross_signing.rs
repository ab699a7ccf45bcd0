//! Cross-signing: key upload (`/keys/device_signing/upload`, with UIA), signature upload
//! (`/keys/signatures/upload`), what `/keys/query` shows to whom, and how the changes reach
//! `/keys/changes` and `/sync`. Keys and signatures are real ed25519, made with ruma.

use hearth_core::testing::{TestClient, TestResponse, enc, test_server};
use ruma::CanonicalJsonObject;
use ruma::serde::Base64;
use ruma::signatures::{Ed25519KeyPair, sign_json};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

/// An ed25519 key pair whose key id is `ed25519:<name>`.
struct Key {
    pair: Ed25519KeyPair,
    public: String,
}

impl Key {
    /// A cross-signing key: named after its own public key.
    fn cross_signing() -> Self {
        let doc = Ed25519KeyPair::generate();
        let probe = Ed25519KeyPair::from_der(&doc, "probe".to_owned()).unwrap();
        let public =
            Base64::<ruma::serde::base64::Standard>::new(probe.public_key().to_vec()).encode();
        let pair = Ed25519KeyPair::from_der(&doc, public.clone()).unwrap();
        Self { pair, public }
    }

    /// A device's ed25519 key: named after the device.
    fn device(device_id: &str) -> Self {
        let doc = Ed25519KeyPair::generate();
        let pair = Ed25519KeyPair::from_der(&doc, device_id.to_owned()).unwrap();
        let public =
            Base64::<ruma::serde::base64::Standard>::new(pair.public_key().to_vec()).encode();
        Self { pair, public }
    }

    fn key_id(&self) -> String {
        format!("ed25519:{}", self.pair.version())
    }
}

/// `object` with a signature by `signer`'s `key` added.
fn signed(object: &Value, signer: &str, key: &Key) -> Value {
    let mut canonical: CanonicalJsonObject = serde_json::from_value(object.clone()).unwrap();
    sign_json(signer, &key.pair, &mut canonical).unwrap();
    serde_json::to_value(canonical).unwrap()
}

fn cross_signing_key(user: &str, usage: &str, key: &Key) -> Value {
    json!({
        "user_id": user,
        "usage": [usage],
        "keys": { key.key_id(): key.public },
    })
}

/// A user's three cross-signing keys, the self-signing and user-signing ones signed by the master.
struct Identity {
    master: Key,
    self_signing: Key,
    user_signing: Key,
}

impl Identity {
    fn new() -> Self {
        Self {
            master: Key::cross_signing(),
            self_signing: Key::cross_signing(),
            user_signing: Key::cross_signing(),
        }
    }

    fn master_json(&self, user: &str) -> Value {
        cross_signing_key(user, "master", &self.master)
    }

    fn self_signing_json(&self, user: &str) -> Value {
        signed(
            &cross_signing_key(user, "self_signing", &self.self_signing),
            user,
            &self.master,
        )
    }

    fn user_signing_json(&self, user: &str) -> Value {
        signed(
            &cross_signing_key(user, "user_signing", &self.user_signing),
            user,
            &self.master,
        )
    }

    fn upload_body(&self, user: &str) -> Value {
        json!({
            "master_key": self.master_json(user),
            "self_signing_key": self.self_signing_json(user),
            "user_signing_key": self.user_signing_json(user),
        })
    }
}

const UPLOAD_KEYS: &str = "/_matrix/client/v3/keys/device_signing/upload";
const UPLOAD_SIGS: &str = "/_matrix/client/v3/keys/signatures/upload";

async fn upload_identity(c: &TestClient, id: &Identity) {
    c.post(UPLOAD_KEYS, id.upload_body(&c.user_id))
        .await
        .assert_ok();
}

fn password_auth(c: &TestClient, session: &str) -> Value {
    let localpart = c.user_id.trim_start_matches('@').split(':').next().unwrap();
    json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": localpart },
        "password": PASSWORD,
        "session": session,
    })
}

/// Uploads with UIA: a first request for the session, then the password.
async fn upload_with_password(c: &TestClient, mut body: Value) -> TestResponse {
    let first = c.post(UPLOAD_KEYS, body.clone()).await;
    assert_eq!(first.status.as_u16(), 401, "body: {}", first.body);
    let session = first.body["session"].as_str().unwrap().to_owned();
    body["auth"] = password_auth(c, &session);
    c.post(UPLOAD_KEYS, body).await
}

/// Device keys of `c`'s device, signed by the device's own key.
fn device_keys(c: &TestClient, key: &Key) -> Value {
    let unsigned = json!({
        "user_id": c.user_id,
        "device_id": c.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{}", c.device_id): "curve25519+key+placeholder+AAAAAAAAAAAAAAAAAA",
            key.key_id(): key.public,
        },
    });
    signed(&unsigned, &c.user_id, key)
}

async fn upload_device_keys(c: &TestClient) -> (Key, Value) {
    let key = Key::device(&c.device_id);
    let keys = device_keys(c, &key);
    c.post(
        "/_matrix/client/v3/keys/upload",
        json!({ "device_keys": keys }),
    )
    .await
    .assert_ok();
    (key, keys)
}

async fn query(c: &TestClient, users: &[&TestClient]) -> Value {
    let wanted: serde_json::Map<String, Value> = users
        .iter()
        .map(|u| (u.user_id.clone(), json!([])))
        .collect();
    c.post(
        "/_matrix/client/v3/keys/query",
        json!({ "device_keys": wanted }),
    )
    .await
    .assert_ok()
    .clone()
}

async fn upload_signatures(c: &TestClient, body: Value) -> Value {
    c.post(UPLOAD_SIGS, body).await.assert_ok().clone()
}

fn failures_of(resp: &Value) -> &Value {
    &resp["failures"]
}

async fn create_shared_room(owner: &TestClient, members: &[&TestClient]) -> String {
    let r = owner
        .post(
            "/_matrix/client/v3/createRoom",
            json!({ "preset": "public_chat" }),
        )
        .await;
    let room = r.assert_ok()["room_id"].as_str().unwrap().to_owned();
    for m in members {
        m.post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            json!({}),
        )
        .await
        .assert_ok();
    }
    room
}

async fn sync_token(c: &TestClient) -> String {
    let r = c.get("/_matrix/client/v3/sync?timeout=0").await;
    r.assert_ok()["next_batch"].as_str().unwrap().to_owned()
}

async fn changed_since(c: &TestClient, from: &str) -> Vec<String> {
    let to = {
        let r = c
            .get(&format!("/_matrix/client/v3/sync?timeout=0&since={from}"))
            .await;
        r.assert_ok()["next_batch"].as_str().unwrap().to_owned()
    };
    let r = c
        .get(&format!(
            "/_matrix/client/v3/keys/changes?from={from}&to={to}"
        ))
        .await;
    let mut users: Vec<String> = r.assert_ok()["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_owned())
        .collect();
    users.sort();
    users
}

async fn sync_changed(c: &TestClient, since: &str) -> Vec<String> {
    let r = c
        .get(&format!("/_matrix/client/v3/sync?timeout=0&since={since}"))
        .await;
    let mut users: Vec<String> = r.assert_ok()["device_lists"]["changed"]
        .as_array()
        .map(|a| a.iter().map(|u| u.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    users.sort();
    users
}

// ---------------------------------------------------------------------------------------------
// /keys/device_signing/upload

#[tokio::test]
async fn first_upload_needs_no_uia_and_is_served_by_query() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let id = Identity::new();
    let r = alice
        .post(UPLOAD_KEYS, id.upload_body(&alice.user_id))
        .await;
    assert_eq!(r.assert_ok(), &json!({}));

    let own = query(&alice, &[&alice]).await;
    let me = &alice.user_id;
    assert_eq!(own["master_keys"][me], id.master_json(me));
    assert_eq!(own["self_signing_keys"][me], id.self_signing_json(me));
    assert_eq!(own["user_signing_keys"][me], id.user_signing_json(me));

    // Others see the master and self-signing keys, never the user-signing key.
    let theirs = query(&bob, &[&alice]).await;
    assert_eq!(theirs["master_keys"][me], id.master_json(me));
    assert_eq!(theirs["self_signing_keys"][me], id.self_signing_json(me));
    assert!(
        theirs
            .get("user_signing_keys")
            .is_none_or(|u| u.get(me).is_none()),
        "user-signing keys are private: {theirs}"
    );
}

#[tokio::test]
async fn replacing_keys_requires_user_interactive_auth() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    upload_identity(&alice, &Identity::new()).await;

    let replacement = Identity::new();
    let body = replacement.upload_body(&alice.user_id);
    let r = alice.post(UPLOAD_KEYS, body.clone()).await;
    assert_eq!(r.status.as_u16(), 401, "body: {}", r.body);
    assert_eq!(r.body["flows"], json!([{ "stages": ["m.login.password"] }]));
    let session = r.body["session"].as_str().unwrap().to_owned();

    // A wrong password does not do it.
    let mut wrong = body.clone();
    wrong["auth"] = password_auth(&alice, &session);
    wrong["auth"]["password"] = json!("wrong");
    let r = alice.post(UPLOAD_KEYS, wrong).await;
    assert_eq!(r.status.as_u16(), 401);
    assert_eq!(r.body["errcode"], "M_FORBIDDEN");
    let q = query(&alice, &[&alice]).await;
    assert_ne!(
        q["master_keys"][&alice.user_id],
        replacement.master_json(&alice.user_id)
    );

    let mut right = body;
    right["auth"] = password_auth(&alice, &session);
    alice.post(UPLOAD_KEYS, right).await.assert_ok();
    let q = query(&alice, &[&alice]).await;
    assert_eq!(
        q["master_keys"][&alice.user_id],
        replacement.master_json(&alice.user_id)
    );
}

#[tokio::test]
async fn sending_the_stored_keys_again_needs_no_uia() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let id = Identity::new();
    upload_identity(&alice, &id).await;
    // A retry whose response was lost: same keys, no new ones.
    upload_identity(&alice, &id).await;
    alice
        .post(
            UPLOAD_KEYS,
            json!({ "master_key": id.master_json(&alice.user_id) }),
        )
        .await
        .assert_ok();
}

#[tokio::test]
async fn a_new_self_signing_key_alone_needs_uia_and_the_stored_master_signature() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let id = Identity::new();
    upload_identity(&alice, &id).await;

    let fresh = Key::cross_signing();
    let ssk = signed(
        &cross_signing_key(&alice.user_id, "self_signing", &fresh),
        &alice.user_id,
        &id.master,
    );
    let r = upload_with_password(&alice, json!({ "self_signing_key": ssk.clone() })).await;
    r.assert_ok();
    let q = query(&alice, &[&alice]).await;
    assert_eq!(q["self_signing_keys"][&alice.user_id], ssk);
}

#[tokio::test]
async fn self_and_user_signing_keys_must_be_signed_by_the_master_key() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let id = Identity::new();
    let me = alice.user_id.clone();
    let stranger = Key::cross_signing();

    let unsigned = json!({
        "master_key": id.master_json(&me),
        "self_signing_key": cross_signing_key(&me, "self_signing", &id.self_signing),
    });
    alice
        .post(UPLOAD_KEYS, unsigned)
        .await
        .assert_error(400, "M_INVALID_SIGNATURE");

    let signed_by_stranger = json!({
        "master_key": id.master_json(&me),
        "user_signing_key": signed(&cross_signing_key(&me, "user_signing", &id.user_signing), &me, &stranger),
    });
    alice
        .post(UPLOAD_KEYS, signed_by_stranger)
        .await
        .assert_error(400, "M_INVALID_SIGNATURE");

    // A valid signature over different content does not count either.
    let mut tampered = id.self_signing_json(&me);
    tampered["usage"] = json!(["self_signing", "org.example.extra"]);
    alice
        .post(
            UPLOAD_KEYS,
            json!({ "master_key": id.master_json(&me), "self_signing_key": tampered }),
        )
        .await
        .assert_error(400, "M_INVALID_SIGNATURE");

    let q = query(&alice, &[&alice]).await;
    assert!(
        q.get("master_keys").is_none_or(|m| m.get(&me).is_none()),
        "nothing of a refused upload is stored: {q}"
    );
}

#[tokio::test]
async fn without_any_master_key_there_is_nothing_to_check_against() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let id = Identity::new();
    alice
        .post(
            UPLOAD_KEYS,
            json!({ "self_signing_key": id.self_signing_json(&alice.user_id) }),
        )
        .await
        .assert_error(400, "M_MISSING_PARAM");
}

#[tokio::test]
async fn malformed_cross_signing_keys_are_refused() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let key = Key::cross_signing();
    let me = alice.user_id.clone();

    let of_bob = cross_signing_key("@bob:example.org", "master", &key);
    let wrong_usage = cross_signing_key(&me, "self_signing", &key);
    let mut two_keys = cross_signing_key(&me, "master", &key);
    two_keys["keys"]["ed25519:other"] = json!("other");
    let mut misnamed = cross_signing_key(&me, "master", &key);
    misnamed["keys"] = json!({ "ed25519:somethingelse": key.public });
    let mut short = cross_signing_key(&me, "master", &key);
    short["keys"] = json!({ "ed25519:c2hvcnQ": "c2hvcnQ" });
    for bad in [of_bob, wrong_usage, two_keys, misnamed, short] {
        alice
            .post(UPLOAD_KEYS, json!({ "master_key": bad }))
            .await
            .assert_error(400, "M_INVALID_PARAM");
    }
    alice
        .post(UPLOAD_KEYS, json!({ "master_key": { "user_id": me } }))
        .await
        .assert_error(400, "M_BAD_JSON");
}

#[tokio::test]
async fn a_key_named_like_a_device_is_forbidden() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let key = Key::cross_signing();
    // A device whose id is the key's public key, logged in with a client-chosen device id.
    TestClient::anonymous(&hs)
        .post(
            "/_matrix/client/v3/login",
            json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": "alice" },
                "password": PASSWORD,
                "device_id": key.public,
            }),
        )
        .await
        .assert_ok();
    alice
        .post(
            UPLOAD_KEYS,
            json!({ "master_key": cross_signing_key(&alice.user_id, "master", &key) }),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn cross_signing_endpoints_need_an_access_token() {
    let (hs, _) = test_server(1).await;
    let anon = TestClient::anonymous(&hs);
    anon.post(UPLOAD_KEYS, json!({}))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    anon.post(UPLOAD_SIGS, json!({}))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
}

// ---------------------------------------------------------------------------------------------
// /keys/signatures/upload

#[tokio::test]
async fn device_signed_by_self_signing_key_shows_the_signature_in_query() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let id = Identity::new();
    upload_identity(&alice, &id).await;
    let (_, keys) = upload_device_keys(&alice).await;

    let vouched = signed(&keys, &alice.user_id, &id.self_signing);
    let resp = upload_signatures(
        &alice,
        json!({ alice.user_id.clone(): { alice.device_id.clone(): vouched } }),
    )
    .await;
    assert!(
        failures_of(&resp).as_object().is_none_or(|f| f.is_empty()),
        "{resp}"
    );

    let q = query(&bob, &[&alice]).await;
    let served = &q["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(
        served["signatures"][&alice.user_id][id.self_signing.key_id()],
        vouched["signatures"][&alice.user_id][id.self_signing.key_id()]
    );
    // The device's own signature is still there.
    assert_eq!(
        served["signatures"][&alice.user_id][format!("ed25519:{}", alice.device_id)],
        keys["signatures"][&alice.user_id][format!("ed25519:{}", alice.device_id)]
    );
}

#[tokio::test]
async fn an_invalid_signature_is_reported_and_not_stored() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let id = Identity::new();
    upload_identity(&alice, &id).await;
    let (_, keys) = upload_device_keys(&alice).await;

    // Signed by a key that merely carries the self-signing key's id.
    let impostor = Key::cross_signing();
    let mut forged = signed(&keys, &alice.user_id, &impostor);
    let sig = forged["signatures"][&alice.user_id][impostor.key_id()].clone();
    forged["signatures"][&alice.user_id][id.self_signing.key_id()] = sig;
    let resp = upload_signatures(
        &alice,
        json!({ alice.user_id.clone(): { alice.device_id.clone(): forged } }),
    )
    .await;
    assert_eq!(
        failures_of(&resp)[&alice.user_id][&alice.device_id]["errcode"],
        "M_INVALID_SIGNATURE"
    );

    let q = query(&alice, &[&alice]).await;
    let served = &q["device_keys"][&alice.user_id][&alice.device_id];
    assert!(
        served["signatures"][&alice.user_id]
            .get(id.self_signing.key_id())
            .is_none()
    );
}

#[tokio::test]
async fn a_signed_object_that_differs_from_the_stored_key_is_refused() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let id = Identity::new();
    upload_identity(&alice, &id).await;
    let (_, mut keys) = upload_device_keys(&alice).await;
    keys["algorithms"] = json!(["m.megolm.v1.aes-sha2"]);
    let vouched = signed(&keys, &alice.user_id, &id.self_signing);
    let resp = upload_signatures(
        &alice,
        json!({ alice.user_id.clone(): { alice.device_id.clone(): vouched } }),
    )
    .await;
    assert_eq!(
        failures_of(&resp)[&alice.user_id][&alice.device_id]["errcode"],
        "M_INVALID_SIGNATURE"
    );
}

#[tokio::test]
async fn signing_unknown_keys_is_not_found() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let id = Identity::new();
    upload_identity(&alice, &id).await;
    let (_, keys) = upload_device_keys(&alice).await;
    let vouched = signed(&keys, &alice.user_id, &id.self_signing);

    let resp = upload_signatures(
        &alice,
        json!({
            alice.user_id.clone(): { "NOSUCHDEVICE": vouched.clone() },
            // Bob has no master key to sign.
            bob.user_id.clone(): { "whatever": { "user_id": bob.user_id } },
        }),
    )
    .await;
    let f = failures_of(&resp);
    assert_eq!(f[&alice.user_id]["NOSUCHDEVICE"]["errcode"], "M_NOT_FOUND");
    assert_eq!(f[&bob.user_id]["whatever"]["errcode"], "M_NOT_FOUND");
    assert!(f[&alice.user_id]["NOSUCHDEVICE"]["error"].is_string());
}

#[tokio::test]
async fn devices_cannot_be_signed_without_a_self_signing_key() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let (_, keys) = upload_device_keys(&alice).await;
    let stray = Key::cross_signing();
    let resp = upload_signatures(
        &alice,
        json!({ alice.user_id.clone(): { alice.device_id.clone(): signed(&keys, &alice.user_id, &stray) } }),
    )
    .await;
    assert_eq!(
        failures_of(&resp)[&alice.user_id][&alice.device_id]["errcode"],
        "M_NOT_FOUND"
    );
}

#[tokio::test]
async fn master_key_signed_by_own_device_is_served_with_that_signature() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let id = Identity::new();
    upload_identity(&alice, &id).await;
    let (device_key, _) = upload_device_keys(&alice).await;

    let master = signed(&id.master_json(&alice.user_id), &alice.user_id, &device_key);
    let resp = upload_signatures(
        &alice,
        json!({ alice.user_id.clone(): { id.master.public.clone(): master.clone() } }),
    )
    .await;
    assert!(
        failures_of(&resp).as_object().is_none_or(|f| f.is_empty()),
        "{resp}"
    );

    let q = query(&bob, &[&alice]).await;
    assert_eq!(q["master_keys"][&alice.user_id], master);
}

#[tokio::test]
async fn master_key_signature_by_a_device_of_nobody_is_invalid() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let id = Identity::new();
    upload_identity(&alice, &id).await;
    let ghost = Key::device("GHOSTDEVICE");
    let master = signed(&id.master_json(&alice.user_id), &alice.user_id, &ghost);
    let resp = upload_signatures(
        &alice,
        json!({ alice.user_id.clone(): { id.master.public.clone(): master } }),
    )
    .await;
    assert_eq!(
        failures_of(&resp)[&alice.user_id][&id.master.public]["errcode"],
        "M_INVALID_SIGNATURE"
    );
}

#[tokio::test]
async fn other_users_master_key_signed_by_user_signing_key_is_seen_only_by_the_signer() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let carol = TestClient::register(&hs, "carol").await;
    let alice_id = Identity::new();
    let bob_id = Identity::new();
    upload_identity(&alice, &alice_id).await;
    upload_identity(&bob, &bob_id).await;

    let trusted = signed(
        &bob_id.master_json(&bob.user_id),
        &alice.user_id,
        &alice_id.user_signing,
    );
    let resp = upload_signatures(
        &alice,
        json!({ bob.user_id.clone(): { bob_id.master.public.clone(): trusted.clone() } }),
    )
    .await;
    assert!(
        failures_of(&resp).as_object().is_none_or(|f| f.is_empty()),
        "{resp}"
    );

    let q = query(&alice, &[&bob]).await;
    assert_eq!(q["master_keys"][&bob.user_id], trusted);
    for other in [&bob, &carol] {
        let q = query(other, &[&bob]).await;
        assert_eq!(
            q["master_keys"][&bob.user_id],
            bob_id.master_json(&bob.user_id),
            "who alice trusts is hers to know"
        );
    }
}

#[tokio::test]
async fn only_master_keys_of_other_users_can_be_signed() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let alice_id = Identity::new();
    let bob_id = Identity::new();
    upload_identity(&alice, &alice_id).await;
    upload_identity(&bob, &bob_id).await;
    let (_, bob_device) = upload_device_keys(&bob).await;

    let ssk = signed(
        &bob_id.self_signing_json(&bob.user_id),
        &alice.user_id,
        &alice_id.user_signing,
    );
    let device = signed(&bob_device, &alice.user_id, &alice_id.user_signing);
    let resp = upload_signatures(
        &alice,
        json!({ bob.user_id.clone(): {
            bob_id.self_signing.public.clone(): ssk,
            bob.device_id.clone(): device,
        } }),
    )
    .await;
    let f = &failures_of(&resp)[&bob.user_id];
    assert_eq!(f[&bob_id.self_signing.public]["errcode"], "M_NOT_FOUND");
    assert_eq!(f[&bob.device_id]["errcode"], "M_NOT_FOUND");
}

#[tokio::test]
async fn signing_others_needs_a_user_signing_key() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let alice_id = Identity::new();
    alice
        .post(
            UPLOAD_KEYS,
            json!({ "master_key": alice_id.master_json(&alice.user_id) }),
        )
        .await
        .assert_ok();
    let bob_id = Identity::new();
    upload_identity(&bob, &bob_id).await;
    let trusted = signed(
        &bob_id.master_json(&bob.user_id),
        &alice.user_id,
        &alice_id.user_signing,
    );
    let resp = upload_signatures(
        &alice,
        json!({ bob.user_id.clone(): { bob_id.master.public.clone(): trusted } }),
    )
    .await;
    assert_eq!(
        failures_of(&resp)[&bob.user_id][&bob_id.master.public]["errcode"],
        "M_NOT_FOUND"
    );
}

#[tokio::test]
async fn signed_objects_must_be_json_objects() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    alice
        .post(
            UPLOAD_SIGS,
            json!({ alice.user_id.clone(): { "DEVICE": "not an object" } }),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
}

#[tokio::test]
async fn new_device_keys_drop_the_signatures_of_the_old_ones() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let id = Identity::new();
    upload_identity(&alice, &id).await;
    let (_, keys) = upload_device_keys(&alice).await;
    upload_signatures(
        &alice,
        json!({ alice.user_id.clone(): { alice.device_id.clone(): signed(&keys, &alice.user_id, &id.self_signing) } }),
    )
    .await;

    // The device resets its identity: the self-signing signature vouched for the old keys.
    upload_device_keys(&alice).await;
    let q = query(&alice, &[&alice]).await;
    let served = &q["device_keys"][&alice.user_id][&alice.device_id];
    assert!(
        served["signatures"][&alice.user_id]
            .get(id.self_signing.key_id())
            .is_none(),
        "{served}"
    );
}

#[tokio::test]
async fn a_new_master_key_drops_signatures_of_the_old_one() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let id = Identity::new();
    upload_identity(&alice, &id).await;
    let (device_key, _) = upload_device_keys(&alice).await;
    upload_signatures(
        &alice,
        json!({ alice.user_id.clone(): { id.master.public.clone(): signed(&id.master_json(&alice.user_id), &alice.user_id, &device_key) } }),
    )
    .await;

    let fresh = Identity::new();
    upload_with_password(&alice, fresh.upload_body(&alice.user_id))
        .await
        .assert_ok();
    // The old master key comes back: the device's signature of it is gone with it.
    upload_with_password(&alice, id.upload_body(&alice.user_id))
        .await
        .assert_ok();
    let q = query(&alice, &[&alice]).await;
    assert_eq!(
        q["master_keys"][&alice.user_id],
        id.master_json(&alice.user_id)
    );
}

// ---------------------------------------------------------------------------------------------
// Who hears of changes

#[tokio::test]
async fn new_master_key_is_a_device_list_change_for_room_members() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let carol = TestClient::register(&hs, "carol").await;
    create_shared_room(&alice, &[&bob]).await;
    let (bob_since, carol_since) = (sync_token(&bob).await, sync_token(&carol).await);

    upload_identity(&alice, &Identity::new()).await;

    assert_eq!(
        changed_since(&bob, &bob_since).await,
        vec![alice.user_id.clone()]
    );
    assert_eq!(
        sync_changed(&bob, &bob_since).await,
        vec![alice.user_id.clone()]
    );
    assert!(changed_since(&carol, &carol_since).await.is_empty());
    assert!(sync_changed(&carol, &carol_since).await.is_empty());
}

#[tokio::test]
async fn a_new_user_signing_key_is_news_only_to_its_owner() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    create_shared_room(&alice, &[&bob]).await;
    let id = Identity::new();
    upload_identity(&alice, &id).await;
    let (alice_since, bob_since) = (sync_token(&alice).await, sync_token(&bob).await);

    let fresh = Key::cross_signing();
    let usk = signed(
        &cross_signing_key(&alice.user_id, "user_signing", &fresh),
        &alice.user_id,
        &id.master,
    );
    upload_with_password(&alice, json!({ "user_signing_key": usk }))
        .await
        .assert_ok();

    assert_eq!(
        changed_since(&alice, &alice_since).await,
        vec![alice.user_id.clone()]
    );
    assert!(changed_since(&bob, &bob_since).await.is_empty());
}

#[tokio::test]
async fn signing_own_device_is_a_device_list_change_for_room_members() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    create_shared_room(&alice, &[&bob]).await;
    let id = Identity::new();
    upload_identity(&alice, &id).await;
    let (_, keys) = upload_device_keys(&alice).await;
    let bob_since = sync_token(&bob).await;

    upload_signatures(
        &alice,
        json!({ alice.user_id.clone(): { alice.device_id.clone(): signed(&keys, &alice.user_id, &id.self_signing) } }),
    )
    .await;
    assert_eq!(
        sync_changed(&bob, &bob_since).await,
        vec![alice.user_id.clone()]
    );
}

#[tokio::test]
async fn signing_someone_else_is_news_only_to_the_signer() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let carol = TestClient::register(&hs, "carol").await;
    // Carol shares a room with Bob, Alice shares none with anyone.
    create_shared_room(&bob, &[&carol]).await;
    let alice_id = Identity::new();
    let bob_id = Identity::new();
    upload_identity(&alice, &alice_id).await;
    upload_identity(&bob, &bob_id).await;
    let (alice_since, bob_since, carol_since) = (
        sync_token(&alice).await,
        sync_token(&bob).await,
        sync_token(&carol).await,
    );

    let trusted = signed(
        &bob_id.master_json(&bob.user_id),
        &alice.user_id,
        &alice_id.user_signing,
    );
    upload_signatures(
        &alice,
        json!({ bob.user_id.clone(): { bob_id.master.public.clone(): trusted } }),
    )
    .await;

    // Alice's other devices learn that what she sees of Bob changed.
    assert_eq!(
        changed_since(&alice, &alice_since).await,
        vec![bob.user_id.clone()]
    );
    assert_eq!(
        sync_changed(&alice, &alice_since).await,
        vec![bob.user_id.clone()]
    );
    assert!(changed_since(&bob, &bob_since).await.is_empty());
    assert!(changed_since(&carol, &carol_since).await.is_empty());
}

#[tokio::test]
async fn a_refused_or_repeated_upload_changes_nothing() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    create_shared_room(&alice, &[&bob]).await;
    let id = Identity::new();
    upload_identity(&alice, &id).await;
    let (_, keys) = upload_device_keys(&alice).await;
    let vouched = signed(&keys, &alice.user_id, &id.self_signing);
    upload_signatures(
        &alice,
        json!({ alice.user_id.clone(): { alice.device_id.clone(): vouched.clone() } }),
    )
    .await;
    let bob_since = sync_token(&bob).await;

    upload_identity(&alice, &id).await;
    upload_signatures(
        &alice,
        json!({ alice.user_id.clone(): { alice.device_id.clone(): vouched } }),
    )
    .await;
    upload_signatures(
        &alice,
        json!({ alice.user_id.clone(): { "NOSUCHDEVICE": keys } }),
    )
    .await;
    assert!(changed_since(&bob, &bob_since).await.is_empty());
}

/// For account deactivation, which calls `e2ee::delete_cross_signing`.
#[tokio::test]
async fn deleting_a_users_cross_signing_removes_keys_and_signatures_of_them() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let alice_id = Identity::new();
    let bob_id = Identity::new();
    upload_identity(&alice, &alice_id).await;
    upload_identity(&bob, &bob_id).await;
    let trusted = signed(
        &bob_id.master_json(&bob.user_id),
        &alice.user_id,
        &alice_id.user_signing,
    );
    upload_signatures(
        &alice,
        json!({ bob.user_id.clone(): { bob_id.master.public.clone(): trusted } }),
    )
    .await;

    let bob_uid = ruma::OwnedUserId::try_from(bob.user_id.as_str()).unwrap();
    let mut batch = hearth_core::storage::Batch::new();
    let had = hearth_core::db::e2ee::delete_cross_signing(&hs, &mut batch, &bob_uid)
        .await
        .unwrap();
    assert!(had);
    hs.store.write(batch).await.unwrap();

    let q = query(&alice, &[&bob]).await;
    assert!(
        q.get("master_keys")
            .is_none_or(|m| m.get(&bob.user_id).is_none()),
        "{q}"
    );
    // A new master key of bob's does not inherit alice's signature of the old one.
    upload_identity(&bob, &bob_id).await;
    let q = query(&alice, &[&bob]).await;
    assert_eq!(
        q["master_keys"][&bob.user_id],
        bob_id.master_json(&bob.user_id)
    );
}

#[cfg(not(target_arch = "wasm32"))]
use crate::spec;

/// The cross-signing endpoints' answers, and `/keys/query` with cross-signing keys in it,
/// checked against the spec's schemas.
#[cfg(not(target_arch = "wasm32"))]
mod schemas {
    use http::Method;

    use super::*;

    struct Checked {
        spec: spec::Spec,
        problems: Vec<String>,
    }

    impl Checked {
        async fn call(
            &mut self,
            c: &TestClient,
            method: Method,
            path: &str,
            body: Value,
            status: u16,
        ) -> Value {
            let r = c.request(method.clone(), path, Some(body)).await;
            assert_eq!(r.status.as_u16(), status, "{method} {path}: {}", r.body);
            if let Err(violations) = self.spec.validate(&method, path, status, &r.raw) {
                self.problems
                    .extend(violations.iter().map(ToString::to_string));
            }
            r.body
        }
    }

    #[tokio::test]
    async fn cross_signing_responses_match_the_spec_schemas() {
        let (hs, _) = test_server(1).await;
        let alice = TestClient::register(&hs, "alice").await;
        let bob = TestClient::register(&hs, "bob").await;
        let mut h = Checked {
            spec: spec::Spec::load(),
            problems: Vec::new(),
        };
        let alice_id = Identity::new();
        let bob_id = Identity::new();
        let me = alice.user_id.clone();

        h.call(
            &alice,
            Method::POST,
            UPLOAD_KEYS,
            json!({ "self_signing_key": alice_id.self_signing_json(&me) }),
            400,
        )
        .await;
        h.call(
            &alice,
            Method::POST,
            UPLOAD_KEYS,
            alice_id.upload_body(&me),
            200,
        )
        .await;
        upload_identity(&bob, &bob_id).await;
        let (device_key, keys) = upload_device_keys(&alice).await;

        let resp = h
            .call(
                &alice,
                Method::POST,
                UPLOAD_SIGS,
                json!({
                    me.clone(): {
                        alice.device_id.clone(): signed(&keys, &me, &alice_id.self_signing),
                        alice_id.master.public.clone(): signed(&alice_id.master_json(&me), &me, &device_key),
                        "NOSUCHDEVICE": keys.clone(),
                    },
                    bob.user_id.clone(): {
                        bob_id.master.public.clone(): signed(&bob_id.master_json(&bob.user_id), &me, &alice_id.user_signing),
                    },
                }),
                200,
            )
            .await;
        assert_eq!(
            resp["failures"][&me]["NOSUCHDEVICE"]["errcode"],
            "M_NOT_FOUND"
        );

        let wanted = json!({ "device_keys": { me.clone(): [], bob.user_id.clone(): [] } });
        let q = h
            .call(
                &alice,
                Method::POST,
                "/_matrix/client/v3/keys/query",
                wanted,
                200,
            )
            .await;
        for field in ["master_keys", "self_signing_keys", "user_signing_keys"] {
            assert!(q[field][&me].is_object(), "{field} missing: {q}");
        }

        assert!(
            h.problems.is_empty(),
            "responses that do not match the spec:\n{}",
            h.problems.join("\n")
        );
    }
}
