//! The spec's limits and the shape of request bodies, checked to the byte.
//!
//! Limits: every limit the spec states (identifiers, event types, state keys, whole events, tags,
//! profile keys and profiles), plus this server's device-id cap, is accepted at exactly its size
//! and refused one byte past it with the spec's status and errcode.
//!
//! Bodies: every request body the spec's OpenAPI describes as a JSON object is, on each route
//! this server serves, refused when it is an array, a string or a number (`M_BAD_JSON`) and when
//! it holds invalid UTF-8 or a lone surrogate, even in a field the endpoint ignores
//! (`M_NOT_JSON`); a body without a field the spec requires is refused too. The bodies that are
//! not JSON (media uploads) still take any bytes.
#![cfg(not(target_arch = "wasm32"))]

use crate::spec;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use hearth_core::Homeserver;
use hearth_core::testing::{TestClient, TestResponse, enc, test_server};
use http::Method;
use serde_json::{Map, Value, json};

use spec::{Operation, Spec};

const PASSWORD: &str = "correct horse battery staple";

fn room_path(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/{rest}", enc(room))
}

async fn new_room(alice: &TestClient) -> String {
    let r = alice.post("/_matrix/client/v3/createRoom", json!({})).await;
    r.assert_ok()["room_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `m.` followed by `a`s, `len` bytes in all.
fn event_type_of(len: usize) -> String {
    format!("m.{}", "a".repeat(len - 2))
}

// ---------------------------------------------------------------------------------------------
// Limits

#[tokio::test]
async fn event_types_and_state_keys_stop_at_255_bytes() {
    let (hs, _) = test_server(301).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = new_room(&alice).await;

    let send = |t: &str, txn: &str| room_path(&room, &format!("send/{}/{txn}", enc(t)));
    alice
        .put(&send(&event_type_of(255), "t1"), json!({"body": "at"}))
        .await
        .assert_ok();
    alice
        .put(&send(&event_type_of(256), "t2"), json!({"body": "past"}))
        .await
        .assert_error(413, "M_TOO_LARGE");
    // The case: a 10 KB state key.
    let state = |t: &str, k: &str| room_path(&room, &format!("state/{}/{}", enc(t), enc(k)));
    alice
        .put(&state(&event_type_of(255), "k"), json!({}))
        .await
        .assert_ok();
    alice
        .put(&state(&event_type_of(256), "k"), json!({}))
        .await
        .assert_error(413, "M_TOO_LARGE");
    alice
        .put(&state("m.x", &"k".repeat(255)), json!({}))
        .await
        .assert_ok();
    for len in [256, 10 * 1024] {
        alice
            .put(&state("m.x", &"k".repeat(len)), json!({}))
            .await
            .assert_error(413, "M_TOO_LARGE");
    }
    // The state really is there under the 255-byte key and not under a longer one.
    alice.get(&state("m.x", &"k".repeat(255))).await.assert_ok();
    alice
        .get(&state("m.x", &"k".repeat(256)))
        .await
        .assert_error(404, "M_NOT_FOUND");

    // Room creation's initial state goes through the same check.
    let create = |t: String, k: String| json!({ "initial_state": [{ "type": t, "state_key": k, "content": {} }] });
    for (body, ok) in [
        (create(event_type_of(255), "k".repeat(255)), true),
        (create(event_type_of(256), String::new()), false),
        (create("m.x".into(), "k".repeat(256)), false),
    ] {
        let r = alice.post("/_matrix/client/v3/createRoom", body).await;
        if ok {
            r.assert_ok();
        } else {
            r.assert_error(413, "M_TOO_LARGE");
        }
    }
}

/// The canonical JSON of the stored PDU (federation format, signatures included).
async fn pdu_size(hs: &Homeserver, event_id: &str) -> usize {
    let pdu = hearth_core::db::rooms::get_pdu(hs, event_id)
        .await
        .expect("reads the event")
        .expect("the event is stored");
    ruma::canonical_json::to_canonical_value(&pdu.json)
        .expect("a stored PDU is canonical JSON")
        .to_string()
        .len()
}

fn digits(n: u64) -> usize {
    n.to_string().len()
}

#[tokio::test]
async fn a_whole_event_may_be_65536_bytes_and_no_more() {
    let (hs, _) = test_server(302).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = new_room(&alice).await;
    let send = |txn: &str, len: usize| {
        let path = room_path(&room, &format!("send/m.room.message/{txn}"));
        let body = json!({ "msgtype": "m.text", "body": "a".repeat(len) });
        (path, body)
    };
    let depth = |id: String| {
        let hs = hs.clone();
        async move {
            let pdu = hearth_core::db::rooms::get_pdu(&hs, &id)
                .await
                .ok()
                .flatten();
            pdu.and_then(|p| p.json["depth"].as_u64()).unwrap_or(0)
        }
    };

    // A probe, then one event padded so that its PDU is exactly the limit: the next event has
    // the same keys and lengths but for the body and the depth.
    let (path, body) = send("probe", 1000);
    let probe = alice.put(&path, body).await.assert_ok()["event_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let probe_size = pdu_size(&hs, &probe).await;
    let d = depth(probe.clone()).await;
    let len = 1000 + 65_536 - probe_size - (digits(d + 1) - digits(d));
    let (path, body) = send("at", len);
    let at = alice.put(&path, body).await.assert_ok()["event_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(pdu_size(&hs, &at).await, 65_536);

    let d = depth(at).await;
    let past = len + 1 - (digits(d + 1) - digits(d));
    let (path, body) = send("past", past);
    alice
        .put(&path, body)
        .await
        .assert_error(413, "M_TOO_LARGE");
    let (path, body) = send("farpast", 70_000);
    alice
        .put(&path, body)
        .await
        .assert_error(413, "M_TOO_LARGE");
}

#[tokio::test]
async fn a_user_id_stops_at_255_bytes() {
    let (hs, _) = test_server(303).await;
    let anon = TestClient::anonymous(&hs);
    // `@` + localpart + `:` + server name.
    let at = 255 - 2 - hs.server_name().as_str().len();
    for (local, ok) in [("a".repeat(at), true), ("b".repeat(at + 1), false)] {
        let available = anon
            .get(&format!(
                "/_matrix/client/v3/register/available?username={local}"
            ))
            .await;
        let registered = anon
            .post(
                "/_matrix/client/v3/register",
                json!({ "username": local, "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
            )
            .await;
        if ok {
            available.assert_ok();
            let id = registered.assert_ok()["user_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert_eq!(id.len(), 255);
        } else {
            available.assert_error(400, "M_INVALID_USERNAME");
            registered.assert_error(400, "M_INVALID_USERNAME");
        }
    }
}

#[tokio::test]
async fn a_room_alias_stops_at_255_bytes() {
    let (hs, _) = test_server(304).await;
    let alice = TestClient::register(&hs, "alice").await;
    let server = hs.server_name().to_string();
    // `#` + localpart + `:` + server name.
    let at = 255 - 2 - server.len();

    alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({ "room_alias_name": "c".repeat(at) }),
        )
        .await
        .assert_ok();
    alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({ "room_alias_name": "d".repeat(at + 1) }),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");

    let room = new_room(&alice).await;
    let directory = |local: String| {
        format!(
            "/_matrix/client/v3/directory/room/{}",
            enc(&format!("#{local}:{server}"))
        )
    };
    alice
        .put(&directory("e".repeat(at)), json!({ "room_id": room }))
        .await
        .assert_ok();
    alice.get(&directory("e".repeat(at))).await.assert_ok();
    alice
        .put(&directory("f".repeat(at + 1)), json!({ "room_id": room }))
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn a_device_id_stops_at_255_bytes() {
    let (hs, _) = test_server(305).await;
    let anon = TestClient::anonymous(&hs);
    TestClient::register(&hs, "alice").await;
    for (device, ok) in [("D".repeat(255), true), ("E".repeat(256), false)] {
        let login = anon
            .post(
                "/_matrix/client/v3/login",
                json!({
                    "type": "m.login.password",
                    "identifier": { "type": "m.id.user", "user": "alice" },
                    "password": PASSWORD,
                    "device_id": device,
                }),
            )
            .await;
        let register = anon
            .post(
                "/_matrix/client/v3/register",
                json!({
                    "username": format!("bob{}", device.len()),
                    "password": PASSWORD,
                    "device_id": device,
                    "auth": { "type": "m.login.dummy" },
                }),
            )
            .await;
        if ok {
            assert_eq!(login.assert_ok()["device_id"], device);
            assert_eq!(register.assert_ok()["device_id"], device);
        } else {
            login.assert_error(400, "M_INVALID_PARAM");
            register.assert_error(400, "M_INVALID_PARAM");
        }
    }
}

#[tokio::test]
async fn a_tag_stops_at_255_bytes() {
    let (hs, _) = test_server(306).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = new_room(&alice).await;
    let tag = |t: String| {
        format!(
            "/_matrix/client/v3/user/{}/rooms/{}/tags/{}",
            enc(&alice.user_id),
            enc(&room),
            enc(&t)
        )
    };
    let at = format!("u.{}", "t".repeat(253));
    alice.put(&tag(at.clone()), json!({})).await.assert_ok();
    alice
        .put(&tag(format!("{at}t")), json!({}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let tags = alice
        .get(&format!(
            "/_matrix/client/v3/user/{}/rooms/{}/tags",
            enc(&alice.user_id),
            enc(&room)
        ))
        .await;
    let names: Vec<&String> = tags.assert_ok()["tags"]
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(names, vec![&at]);
}

#[tokio::test]
async fn profile_keys_stop_at_255_bytes_and_profiles_at_64_kib() {
    let (hs, _) = test_server(307).await;
    let alice = TestClient::register(&hs, "alice").await;
    let field = |key: &str| {
        format!(
            "/_matrix/client/v3/profile/{}/{}",
            enc(&alice.user_id),
            enc(key)
        )
    };
    let at = format!("a.{}", "k".repeat(253));
    alice
        .put(&field(&at), json!({ at.clone(): 1 }))
        .await
        .assert_ok();
    let past = format!("{at}k");
    alice
        .put(&field(&past), json!({ past.clone(): 1 }))
        .await
        .assert_error(400, "M_KEY_TOO_LARGE");
    alice.delete(&field(&at)).await.assert_ok();

    // The whole profile as a compact JSON object, padded to exactly 64 KiB with one field.
    let profile = alice
        .get(&format!(
            "/_matrix/client/v3/profile/{}",
            enc(&alice.user_id)
        ))
        .await;
    let mut all: Map<String, Value> = profile.assert_ok().as_object().cloned().unwrap_or_default();
    all.insert("a.pad".into(), json!(""));
    let base = serde_json::to_vec(&all)
        .map(|v| v.len())
        .unwrap_or_default();
    let pad = |extra: usize| json!({ "a.pad": "p".repeat(65_536 - base + extra) });
    alice
        .put(&field("a.pad"), pad(1))
        .await
        .assert_error(400, "M_PROFILE_TOO_LARGE");
    alice.put(&field("a.pad"), pad(0)).await.assert_ok();
}

// ---------------------------------------------------------------------------------------------
// Request bodies, from the spec's OpenAPI

/// What the spec says an operation's request body is.
#[derive(Debug)]
enum BodyShape {
    /// `application/json` with a `type: object` schema: its `required` fields (with `allOf`'s),
    /// and an example body if the spec gives one.
    Object {
        required: Vec<String>,
        example: Option<Value>,
        /// In `example`, at any depth: (pointer to an object, a field it must have).
        nested: Vec<(String, String)>,
        /// Below the top level, where the schema says object (`*`: any key or element).
        objects: BTreeSet<String>,
    },
    /// Something else as JSON (none in the current spec; listed so the test notices one).
    OtherJson(String),
    /// Not JSON at all (media uploads).
    Bytes,
}

/// The spec's YAML files, loaded once each, with `$ref`s followed on demand. The shared spec
/// reader (`spec/mod.rs`) keeps responses only; request bodies are read here.
#[derive(Default)]
struct Yaml {
    docs: HashMap<PathBuf, Value>,
}

impl Yaml {
    fn doc(&mut self, file: &Path) -> Value {
        if let Some(d) = self.docs.get(file) {
            return d.clone();
        }
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let doc: Value = serde_norway::from_str(&text)
            .unwrap_or_else(|e| panic!("cannot parse {}: {e}", file.display()));
        self.docs.insert(file.to_owned(), doc.clone());
        doc
    }

    /// `v` with its `$ref` chain followed, and the file it ends in.
    fn deref(&mut self, file: &Path, v: &Value) -> (PathBuf, Value) {
        let mut file = file.to_owned();
        let mut v = v.clone();
        while let Some(r) = v.get("$ref").and_then(Value::as_str).map(str::to_owned) {
            let (target, pointer) = r.split_once('#').unwrap_or((&r, ""));
            if !target.is_empty() {
                let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
                file = normalize(&dir.join(target));
            }
            if !file.exists() {
                // Refs into API areas the spec copy does not ship (identity service).
                return (file, json!({}));
            }
            let doc = self.doc(&file);
            v = if pointer.is_empty() {
                doc
            } else {
                doc.pointer(pointer).cloned().unwrap_or(Value::Null)
            };
        }
        (file, v)
    }

    fn required(&mut self, file: &Path, schema: &Value) -> Vec<String> {
        let (file, schema) = self.deref(file, schema);
        let mut out: Vec<String> = schema["required"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        for part in schema["allOf"].as_array().cloned().unwrap_or_default() {
            out.extend(self.required(&file, &part));
        }
        out.sort();
        out.dedup();
        out
    }

    /// Every field a body like `node` must have by `schema`, at any depth, as (JSON pointer of
    /// the object that must hold it, field name). Only fields present in `node` are listed, so
    /// that removing one leaves a body that differs from `node` by that field alone.
    fn required_in(
        &mut self,
        file: &Path,
        schema: &Value,
        node: &Value,
        ptr: &str,
        out: &mut Vec<(String, String)>,
    ) {
        let (file, schema) = self.deref(file, schema);
        for part in schema["allOf"].as_array().cloned().unwrap_or_default() {
            self.required_in(&file, &part, node, ptr, out);
        }
        match node {
            Value::Object(map) => {
                for field in schema["required"].as_array().into_iter().flatten() {
                    if let Some(f) = field.as_str().filter(|f| map.contains_key(*f)) {
                        out.push((ptr.to_owned(), f.to_owned()));
                    }
                }
                let props = schema["properties"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                let extra = schema.get("additionalProperties").filter(|a| a.is_object());
                for (key, child) in map {
                    let child_ptr = format!("{ptr}/{}", key.replace('~', "~0").replace('/', "~1"));
                    if let Some(sub) = props.get(key) {
                        self.required_in(&file, sub, child, &child_ptr, out);
                    } else if let Some(sub) = extra {
                        self.required_in(&file, sub, child, &child_ptr, out);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(sub) = schema.get("items") {
                    for (i, child) in items.iter().enumerate() {
                        self.required_in(&file, sub, child, &format!("{ptr}/{i}"), out);
                    }
                }
            }
            _ => {}
        }
    }

    /// A value for `schema` built from the spec's own examples: the schema's `example`, or an
    /// object of its properties' examples (and `allOf` parts').
    fn example_of(&mut self, file: &Path, schema: &Value) -> Option<Value> {
        let (file, schema) = self.deref(file, schema);
        if let Some(ex) = schema.get("example") {
            return Some(ex.clone());
        }
        let mut obj = Map::new();
        for part in schema["allOf"].as_array().cloned().unwrap_or_default() {
            if let Some(Value::Object(o)) = self.example_of(&file, &part) {
                obj.extend(o);
            }
        }
        for (key, sub) in schema["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default()
        {
            if let Some(v) = self.example_of(&file, &sub) {
                obj.insert(key, v);
            }
        }
        (!obj.is_empty()).then_some(Value::Object(obj))
    }

    /// Whether `schema` (or a part of its `allOf`) says `type: object`.
    fn is_object(&mut self, file: &Path, schema: &Value) -> bool {
        let (file, schema) = self.deref(file, schema);
        schema["type"] == "object"
            || schema["allOf"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .any(|part| self.is_object(&file, part))
    }

    /// Every place below the top level of a body with `schema` where the schema says object, as
    /// JSON pointers in which `*` stands for any key of a map or any element of an array.
    /// `oneOf`/`anyOf` alternatives are not followed: an object there is not certain.
    fn objects_in(
        &mut self,
        file: &Path,
        schema: &Value,
        ptr: &str,
        depth: usize,
        out: &mut BTreeSet<String>,
    ) {
        if depth > 24 {
            return;
        }
        let (file, schema) = self.deref(file, schema);
        if !ptr.is_empty() && self.is_object(&file, &schema) {
            out.insert(ptr.to_owned());
        }
        for part in schema["allOf"].as_array().cloned().unwrap_or_default() {
            self.objects_in(&file, &part, ptr, depth + 1, out);
        }
        for (key, sub) in schema["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default()
        {
            let child = format!("{ptr}/{}", key.replace('~', "~0").replace('/', "~1"));
            self.objects_in(&file, &sub, &child, depth + 1, out);
        }
        let mut any_child: Vec<Value> = schema["patternProperties"]
            .as_object()
            .map(|o| o.values().cloned().collect())
            .unwrap_or_default();
        for key in ["additionalProperties", "items"] {
            if let Some(sub) = schema.get(key).filter(|s| s.is_object()) {
                any_child.push(sub.clone());
            }
        }
        for sub in any_child {
            self.objects_in(&file, &sub, &format!("{ptr}/*"), depth + 1, out);
        }
    }

    /// The request body of `op`, if it has one.
    fn body(&mut self, spec_dir: &Path, op: &Operation) -> Option<BodyShape> {
        let file = spec_dir.join("api/client-server").join(&op.file);
        let doc = self.doc(&file);
        let method = op.method.as_str().to_lowercase();
        let yaml_op = doc["paths"]
            .as_object()?
            .values()
            .map(|item| &item[&method])
            .find(|o| o["operationId"] == op.operation_id.as_str())?
            .clone();
        let (file, body) = self.deref(&file, yaml_op.get("requestBody")?);
        let Some(json) = body["content"].get("application/json") else {
            return Some(BodyShape::Bytes);
        };
        let (_, schema) = self.deref(&file, &json["schema"]);
        if schema["type"] != "object" {
            return Some(BodyShape::OtherJson(schema["type"].to_string()));
        }
        let example = json
            .get("example")
            .or_else(|| {
                json["examples"]
                    .as_object()
                    .and_then(|e| e.values().next())
                    .map(|e| &e["value"])
            })
            .cloned()
            .or_else(|| self.example_of(&file, &json["schema"]));
        let mut nested = Vec::new();
        if let Some(ex) = &example {
            self.required_in(&file, &json["schema"], ex, "", &mut nested);
        }
        let mut objects = BTreeSet::new();
        self.objects_in(&file, &json["schema"], "", 0, &mut objects);
        Some(BodyShape::Object {
            required: self.required(&file, &json["schema"]),
            example,
            nested,
            objects,
        })
    }
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Real values for path parameters, so that only the body can be wrong.
struct Fixture {
    hs: Homeserver,
    alice: TestClient,
    room_id: String,
    event_id: String,
    backup_version: String,
}

impl Fixture {
    async fn new(seed: u64) -> Self {
        let (hs, _) = test_server(seed).await;
        let alice = TestClient::register(&hs, "alice").await;
        let room_id = new_room(&alice).await;
        let event_id = alice
            .put(
                &room_path(&room_id, "send/m.room.message/fixture"),
                json!({ "msgtype": "m.text", "body": "hello" }),
            )
            .await
            .assert_ok()["event_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let backup = alice
            .post(
                "/_matrix/client/v3/room_keys/version",
                json!({
                    "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
                    "auth_data": { "public_key": "abcdefg", "signatures": {} },
                }),
            )
            .await;
        let backup_version = backup.assert_ok()["version"]
            .as_str()
            .unwrap_or("1")
            .to_owned();
        Self {
            hs,
            alice,
            room_id,
            event_id,
            backup_version,
        }
    }

    fn path(&self, op: &Operation, n: usize) -> String {
        let server = self.hs.server_name().to_string();
        let mut path = op.path.clone();
        for name in op.path_params() {
            let v = match name {
                "roomId" | "roomIdOrAlias" => self.room_id.clone(),
                "eventId" => self.event_id.clone(),
                "userId" => self.alice.user_id.clone(),
                "deviceId" => self.alice.device_id.clone(),
                "roomAlias" => format!("#strict{n}:{server}"),
                "serverName" => server.clone(),
                "txnId" => format!("strict{n}"),
                "eventType" | "type" => "org.example.strict".into(),
                "stateKey" => "k".into(),
                "kind" => "override".into(),
                "ruleId" => "org.example.strict".into(),
                "receiptType" => "m.read".into(),
                "keyName" => "displayname".into(),
                "tag" => "u.strict".into(),
                "version" => self.backup_version.clone(),
                "relType" => "m.reference".into(),
                _ => "strict".into(),
            };
            path = path.replacen(&format!("{{{name}}}"), &enc(&v), 1);
        }
        if op.path.contains("/room_keys/keys") {
            path = format!("{path}?version={}", self.backup_version);
        }
        path
    }
}

/// `GET /x/{a}/y` as the router lists it: `GET /x/{}/y`.
fn template(op: &Operation) -> String {
    op.path
        .split('/')
        .map(|s| if s.starts_with('{') { "{}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every operation of the spec that this server serves, with its request body.
async fn served_bodies(fx: &Fixture) -> Vec<(Operation, BodyShape)> {
    let spec = Spec::load();
    let served: Vec<(Method, String)> = fx.hs.routes();
    let mut yaml = Yaml::default();
    let mut out = Vec::new();
    for op in &spec.operations {
        if !served
            .iter()
            .any(|(m, t)| *m == op.method && *t == template(op))
        {
            continue;
        }
        if let Some(body) = yaml.body(&spec.dir, op) {
            out.push((op.clone(), body));
        }
    }
    out
}

fn describe(op: &Operation, body: &[u8], r: &TestResponse) -> String {
    format!(
        "{} {} body={:?} -> {} {}",
        op.method,
        op.path,
        String::from_utf8_lossy(body),
        r.status,
        r.body
    )
}

#[tokio::test]
async fn every_object_body_of_the_spec_must_be_a_whole_json_object() {
    let fx = Fixture::new(310).await;
    let bodies = served_bodies(&fx).await;
    let mut failures = Vec::new();
    let (mut objects, mut uploads) = (0, 0);
    for (n, (op, shape)) in bodies.iter().enumerate() {
        let path = fx.path(op, n);
        match shape {
            BodyShape::Object { .. } => {
                objects += 1;
                let cases: [(&[u8], &str); 6] = [
                    (b"[]", "M_BAD_JSON"),
                    (b"\"x\"", "M_BAD_JSON"),
                    (b"1", "M_BAD_JSON"),
                    (b"{\"org.example.ignored\": \"\xff\xfe\"}", "M_NOT_JSON"),
                    (b"{\"org.example.ignored\": [\"\\ud800\"]}", "M_NOT_JSON"),
                    (b"{\"\xc3\": 1}", "M_NOT_JSON"),
                ];
                for (body, errcode) in cases {
                    let r = fx
                        .alice
                        .request_raw(op.method.clone(), &path, body.to_vec(), "application/json")
                        .await;
                    if r.status.as_u16() != 400 || r.body["errcode"] != errcode {
                        failures.push(format!("want 400 {errcode}: {}", describe(op, body, &r)));
                    }
                }
            }
            BodyShape::OtherJson(t) => {
                failures.push(format!(
                    "{}: a JSON body of type {t}: decide its rule",
                    op.key()
                ));
            }
            BodyShape::Bytes => {
                uploads += 1;
                let body = b"\xff\xfe not UTF-8, not JSON".to_vec();
                let r = fx
                    .alice
                    .request_raw(
                        op.method.clone(),
                        &path,
                        body.clone(),
                        "application/octet-stream",
                    )
                    .await;
                let refused_as_json = matches!(
                    r.body["errcode"].as_str(),
                    Some("M_NOT_JSON" | "M_BAD_JSON")
                );
                if refused_as_json || (op.method == Method::POST && !r.status.is_success()) {
                    failures.push(format!("bytes refused: {}", describe(op, &body, &r)));
                }
            }
        }
    }
    println!("{objects} object bodies and {uploads} byte bodies checked");
    assert!(
        objects >= 60,
        "only {objects} JSON-object bodies found in the spec"
    );
    assert_eq!(uploads, 2, "the spec's byte bodies: the two uploads");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn a_body_without_a_field_the_spec_requires_is_refused() {
    let fx = Fixture::new(311).await;
    let bodies = served_bodies(&fx).await;
    let mut failures = Vec::new();
    let mut checked = 0;
    for (n, (op, shape)) in bodies.iter().enumerate() {
        let BodyShape::Object {
            required,
            example,
            nested,
            ..
        } = shape
        else {
            continue;
        };
        // `{}` lacks every required field; the spec's example lacks each one in turn, at any
        // depth.
        let mut cases = Vec::new();
        if !required.is_empty() {
            cases.push(("/".to_owned(), json!({})));
        }
        if let Some(ex) = example {
            for (ptr, field) in nested {
                let mut body = ex.clone();
                if let Some(Value::Object(obj)) = body.pointer_mut(ptr) {
                    obj.remove(field);
                    cases.push((format!("{ptr}/{field}"), body));
                }
            }
        }
        for (i, (missing, body)) in cases.into_iter().enumerate() {
            checked += 1;
            // A fresh server for each case: a body that is wrongly accepted must not change
            // what the next case runs against (a password, a device, a deactivation).
            let fx = Fixture::new(400 + (n * 100 + i) as u64).await;
            let path = fx.path(op, i);
            // The examples' user and device are the caller's here.
            let body: Value = serde_json::from_str(
                &body
                    .to_string()
                    .replace("@alice:example.com", &fx.alice.user_id)
                    .replace("JLAFKJWSCS", &fx.alice.device_id),
            )
            .unwrap_or(body);
            let r = fx
                .alice
                .request(op.method.clone(), &path, Some(body.clone()))
                .await;
            let refused = r.status.as_u16() == 400
                && matches!(
                    r.body["errcode"].as_str(),
                    Some("M_BAD_JSON" | "M_MISSING_PARAM")
                );
            if !refused {
                failures.push(format!(
                    "without {missing}: {}",
                    describe(op, body.to_string().as_bytes(), &r)
                ));
            }
        }
    }
    println!("{checked} bodies missing a required field");
    assert!(checked >= 30, "only {checked} cases found in the spec");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn an_empty_profile_body_changes_nothing() {
    let (hs, _) = test_server(312).await;
    let alice = TestClient::register(&hs, "alice").await;
    let field = |key: &str| format!("/_matrix/client/v3/profile/{}/{key}", enc(&alice.user_id));
    alice
        .put(&field("displayname"), json!({ "displayname": "Alice" }))
        .await
        .assert_ok();
    let avatar = "mxc://example.org/avatar";
    alice
        .put(&field("avatar_url"), json!({ "avatar_url": avatar }))
        .await
        .assert_ok();
    for prefix in ["/_matrix/client/v3", "/_matrix/client/r0"] {
        for key in ["displayname", "avatar_url"] {
            let path = format!("{prefix}/profile/{}/{key}", enc(&alice.user_id));
            alice
                .put(&path, json!({}))
                .await
                .assert_error(400, "M_MISSING_PARAM");
            alice
                .put(&path, json!({ "other": "x" }))
                .await
                .assert_error(400, "M_MISSING_PARAM");
        }
    }
    let profile = alice
        .get(&format!(
            "/_matrix/client/v3/profile/{}",
            enc(&alice.user_id)
        ))
        .await;
    assert_eq!(profile.assert_ok()["displayname"], "Alice");
    assert_eq!(profile.body["avatar_url"], avatar);
}

#[tokio::test]
async fn an_empty_body_reads_as_an_empty_object_only_where_nothing_is_required() {
    let (hs, _) = test_server(313).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = new_room(&alice).await;
    let event = alice
        .put(
            &room_path(&room, "send/m.room.message/e"),
            json!({ "msgtype": "m.text", "body": "hi" }),
        )
        .await
        .assert_ok()["event_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let receipt = room_path(&room, &format!("receipt/m.read/{}", enc(&event)));
    // The case: an array where the spec says object.
    alice
        .request_raw(Method::POST, &receipt, b"[]".to_vec(), "application/json")
        .await
        .assert_error(400, "M_BAD_JSON");
    for path in [receipt, room_path(&room, "join")] {
        alice
            .request_raw(Method::POST, &path, Vec::new(), "application/json")
            .await
            .assert_ok();
    }
    alice
        .request_raw(
            Method::PUT,
            &format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id)),
            Vec::new(),
            "application/json",
        )
        .await
        .assert_error(400, "M_NOT_JSON");
}

/// The table `core/src/request_body/objects.rs` as the spec's OpenAPI gives it.
fn object_table() -> String {
    let spec = Spec::load();
    let mut yaml = Yaml::default();
    let mut table: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for op in &spec.operations {
        if let Some(BodyShape::Object { objects, .. }) = yaml.body(&spec.dir, op)
            && !objects.is_empty()
        {
            table
                .entry((template(op), op.method.to_string()))
                .or_default()
                .extend(objects);
        }
    }
    let mut out = String::from(
        "//! Generated from the Matrix spec's OpenAPI by `core/tests/api/strict.rs`; do not edit.\n\
         //! After the spec moves: `HEARTH_REGENERATE=1 cargo test -p hearth-core --test api \
         strict::the_object_table`.\n\
         //!\n\
         //! For each operation with a JSON body: the places below the top level where its schema \
         says\n\
         //! object, as JSON pointers in which `*` stands for any key of a map or any element of \
         an array.\n\n\
         #[rustfmt::skip]\n\
         pub(super) const OBJECTS: &[(&str, &str, &[&str])] = &[\n",
    );
    for ((path, method), objects) in &table {
        out.push_str(&format!("    (\"{method}\", \"{path}\", &[\n"));
        for o in objects {
            out.push_str(&format!("        {o:?},\n"));
        }
        out.push_str("    ]),\n");
    }
    out.push_str("];\n");
    out
}

#[test]
fn the_object_table_is_the_specs() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/request_body/objects.rs");
    let want = object_table();
    if std::env::var_os("HEARTH_REGENERATE").is_some() {
        std::fs::write(&file, &want).expect("writes the table");
        println!("wrote {}", file.display());
        return;
    }
    let have = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        have == want,
        "{} is not what the spec gives; regenerate it with HEARTH_REGENERATE=1",
        file.display()
    );
}

/// The concrete pointers in `v` that `segments` (a pattern of the table) names.
fn pattern_matches(v: &Value, segments: &[&str], ptr: String, out: &mut Vec<String>) {
    let Some((first, rest)) = segments.split_first() else {
        out.push(ptr);
        return;
    };
    let esc = |k: &str| k.replace('~', "~0").replace('/', "~1");
    match (*first, v) {
        ("*", Value::Object(map)) => {
            for (k, child) in map {
                pattern_matches(child, rest, format!("{ptr}/{}", esc(k)), out);
            }
        }
        ("*", Value::Array(items)) => {
            for (i, child) in items.iter().enumerate() {
                pattern_matches(child, rest, format!("{ptr}/{i}"), out);
            }
        }
        (key, Value::Object(map)) => {
            if let Some(child) = map.get(&key.replace("~1", "/").replace("~0", "~")) {
                pattern_matches(child, rest, format!("{ptr}/{key}"), out);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn an_array_where_the_spec_says_object_is_refused_at_any_depth() {
    let fx = Fixture::new(320).await;
    let bodies = served_bodies(&fx).await;
    let mut failures = Vec::new();
    let mut checked = 0;
    for (n, (op, shape)) in bodies.iter().enumerate() {
        let BodyShape::Object {
            example: Some(example),
            objects,
            ..
        } = shape
        else {
            continue;
        };
        let mut places = Vec::new();
        for pattern in objects {
            let segments: Vec<&str> = pattern.split('/').skip(1).collect();
            pattern_matches(example, &segments, String::new(), &mut places);
        }
        for (i, place) in places.iter().enumerate() {
            let mut body = example.clone();
            if let Some(slot) = body.pointer_mut(place) {
                // serde reads a struct from the array of its fields' values, so that is the
                // array most likely to slip through.
                let values = slot
                    .as_object()
                    .map(|o| o.values().cloned().collect())
                    .unwrap_or_default();
                *slot = Value::Array(values);
            }
            checked += 1;
            let path = fx.path(op, n * 100 + i);
            let r = fx
                .alice
                .request(op.method.clone(), &path, Some(body.clone()))
                .await;
            if r.status.as_u16() != 400 || r.body["errcode"] != "M_BAD_JSON" {
                failures.push(format!(
                    "{place} an array: {}",
                    describe(op, body.to_string().as_bytes(), &r)
                ));
            }
        }
    }
    println!("{checked} nested objects replaced by arrays");
    assert!(checked >= 50, "only {checked} cases found in the spec");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
