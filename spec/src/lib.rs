//! The Matrix specification's Client-Server API (or Server-Server API) as data, for
//! conformance tests.
//!
//! Reads every OpenAPI file in `<spec>/api/client-server/` (or `server-server/`), inlines their `$ref`s (relative file
//! refs, refs into `event-schemas/`, and `#/components/...` refs) and lists each operation with
//! its method, full path, deprecation, tags, security and the JSON schema of each response
//! status. [`Spec::validate`] checks a real response body against the schema the spec gives for
//! that (method, path, status), with the spec's own `mx-*` formats checked through ruma's
//! identifier parsers.
//!
//! The spec lives outside the repository (`<repo>/../shared/matrix-spec`, or `HEARTH_SPEC_DIR`);
//! it is never copied in. Used by hearth-core's conformance tests (`spec_schemas.rs`,
//! `spec_coverage.rs`) and by the fuzzer (`hearth-fuzz`); a crate of its own so that its YAML
//! and JSON-schema dependencies stay out of hearth-core's.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use http::Method;
use serde_json::{Map, Value};

/// Overrides where the spec is read from: the directory holding `api/` and `event-schemas/`.
pub const SPEC_DIR_ENV: &str = "HEARTH_SPEC_DIR";

/// Where the spec is: `HEARTH_SPEC_DIR`, or `shared/matrix-spec` beside the repository.
pub fn spec_dir() -> PathBuf {
    match std::env::var_os(SPEC_DIR_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/matrix-spec"),
    }
}

/// The response a spec operation documents for one status code.
#[derive(Debug, Clone, Default)]
pub struct ResponseSpec {
    /// The fully inlined JSON schema of an `application/json` body, if the spec gives one.
    pub json_schema: Option<Value>,
    /// Every media type the spec lists for this response.
    pub content_types: Vec<String>,
}

/// One operation (method + path) of the Client-Server API as the spec describes it.
#[derive(Debug, Clone)]
pub struct Operation {
    /// The spec file it comes from, e.g. `room_send.yaml`.
    pub file: String,
    pub operation_id: String,
    pub method: Method,
    /// The full path template, e.g. `/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`.
    pub path: String,
    pub deprecated: bool,
    pub tags: Vec<String>,
    /// Alternatives of security schemes; an empty alternative means "no authentication".
    pub security: Vec<Vec<String>>,
    /// Keyed by status code as the spec writes it (`"200"`, `"404"`).
    pub responses: BTreeMap<String, ResponseSpec>,
}

impl Operation {
    /// `GET /_matrix/client/v3/sync`.
    pub fn key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Whether the endpoint may be called with a user's access token.
    pub fn accepts_access_token(&self) -> bool {
        self.security
            .iter()
            .any(|alt| alt.iter().any(|s| s == "accessTokenBearer"))
    }

    /// Whether only an application service's `as_token` may call it.
    pub fn appservice_only(&self) -> bool {
        !self.security.is_empty()
            && self.security.iter().all(|alt| {
                !alt.is_empty() && alt.iter().all(|s| s == "appserviceAccessTokenBearer")
            })
    }

    /// The names of the path's `{parameters}`, in order.
    pub fn path_params(&self) -> Vec<&str> {
        self.path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect()
    }

    /// How specifically `path` (no query) matches this operation's template: the number of
    /// literal segments, or `None` if it does not match.
    pub fn match_path(&self, path: &str) -> Option<usize> {
        let tpl: Vec<&str> = self.path.trim_start_matches('/').split('/').collect();
        let got: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if tpl.len() != got.len() {
            return None;
        }
        let last = tpl.len().saturating_sub(1);
        let mut literal = 0;
        for (i, (t, g)) in tpl.iter().zip(&got).enumerate() {
            if t.starts_with('{') {
                // Only a final parameter may be empty (an empty state key).
                if g.is_empty() && i != last {
                    return None;
                }
            } else if t == g {
                literal += 1;
            } else {
                return None;
            }
        }
        Some(literal)
    }
}

/// The loaded Client-Server API.
pub struct Spec {
    pub dir: PathBuf,
    pub operations: Vec<Operation>,
    /// `$ref`s that point into API areas the spec copy does not ship (application-service,
    /// identity), replaced by an always-true schema: `(operation, referring file, target)`.
    pub unresolved: Vec<(String, String, String)>,
    /// The standard error response (`definitions/errors/error.yaml`), which any endpoint may
    /// return for a status it does not list.
    error_schema: Value,
    validators: RefCell<HashMap<String, Rc<jsonschema::Validator>>>,
}

impl Spec {
    /// Loads the spec from [`spec_dir`], panicking with a clear message if it is missing or
    /// malformed: a conformance test must never pass for want of its contract.
    pub fn load() -> Self {
        let dir = spec_dir();
        match Self::load_from(&dir) {
            Ok(spec) => spec,
            Err(e) => panic!("cannot load the Matrix spec: {e}"),
        }
    }

    pub fn load_from(dir: &Path) -> Result<Self, String> {
        Self::load_api_from(dir, "client-server")
    }

    /// Like [`Spec::load`], for another API of the spec (`server-server`).
    pub fn load_api(api: &str) -> Self {
        let dir = spec_dir();
        match Self::load_api_from(&dir, api) {
            Ok(spec) => spec,
            Err(e) => panic!("cannot load the Matrix spec: {e}"),
        }
    }

    pub fn load_api_from(dir: &Path, api: &str) -> Result<Self, String> {
        let cs = dir.join("api").join(api);
        if !cs.is_dir() {
            return Err(format!(
                "the Matrix spec is missing: no `api/{api}` directory under {}. Put the spec's \
                 api/ and event-schemas/ at <repo>/../shared/matrix-spec, or set {SPEC_DIR_ENV} to \
                 the directory holding them.",
                dir.display()
            ));
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&cs)
            .map_err(|e| format!("{}: {e}", cs.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(format!("no OpenAPI files in {}", cs.display()));
        }
        let mut docs = Docs::default();
        let mut operations = Vec::new();
        let mut unresolved = Vec::new();
        for file in &files {
            let doc = docs.load(file)?;
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let base = base_path(&doc).map_err(|e| format!("{name}: {e}"))?;
            let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
                continue;
            };
            for (path, item) in paths {
                let Some(item) = item.as_object() else {
                    continue;
                };
                for (method, op) in item {
                    let Some(method) = http_method(method) else {
                        continue;
                    };
                    let mut r = Resolver::new(&mut docs);
                    let op = read_operation(&mut r, file, &name, &base, path, method, op)
                        .map_err(|e| format!("{name} {path}: {e}"))?;
                    unresolved.extend(
                        r.missing
                            .into_iter()
                            .map(|(from, reference)| (op.key(), from, reference)),
                    );
                    operations.push(op);
                }
            }
        }
        // Every API's errors are the Client-Server API's standard error.
        let error_file = dir.join("api/client-server/definitions/errors/error.yaml");
        let error_doc = docs_value(&mut docs, &error_file)?;
        let error_schema = Resolver::new(&mut docs).schema(&error_doc, &error_file)?;
        Ok(Self {
            dir: dir.to_owned(),
            operations,
            unresolved,
            error_schema,
            validators: RefCell::default(),
        })
    }

    /// The operations whose template matches `method` and `path` (a query string is ignored),
    /// most specific template first. Two spec files can describe one endpoint (a third-party
    /// invite and a plain invite share `POST /rooms/{roomId}/invite`), so there may be several.
    pub fn find(&self, method: &Method, path: &str) -> Vec<&Operation> {
        let path = path.split('?').next().unwrap_or_default();
        let mut found: Vec<(usize, &Operation)> = self
            .operations
            .iter()
            .filter(|op| op.method == *method)
            .filter_map(|op| op.match_path(path).map(|score| (score, op)))
            .collect();
        let best = found.iter().map(|(s, _)| *s).max();
        found.retain(|(s, _)| Some(*s) == best);
        found.into_iter().map(|(_, op)| op).collect()
    }

    /// Checks a response against the spec. `Err` holds every problem found: the endpoint, the
    /// instance path (JSON pointer into the body) and the reason.
    pub fn validate(
        &self,
        method: &Method,
        path: &str,
        status: u16,
        body: &[u8],
    ) -> Result<(), Vec<Violation>> {
        let ops = self.find(method, path);
        if ops.is_empty() {
            return Err(vec![Violation {
                endpoint: format!("{method} {path}"),
                file: String::new(),
                status,
                pointer: String::new(),
                reason: "no operation in the spec matches this request".into(),
            }]);
        }
        self.validate_ops(&ops, status, body)
    }

    /// [`Spec::validate`] against operations already found with [`Spec::find`], for callers
    /// that check many requests to one endpoint (the fuzzer). Passes if any of them accepts
    /// the answer; `ops` must not be empty.
    pub fn validate_ops(
        &self,
        ops: &[&Operation],
        status: u16,
        body: &[u8],
    ) -> Result<(), Vec<Violation>> {
        let mut problems = Vec::new();
        for op in ops {
            match self.validate_op(op, status, body) {
                Ok(()) => return Ok(()),
                Err(mut p) => problems.append(&mut p),
            }
        }
        Err(problems)
    }

    fn validate_op(&self, op: &Operation, status: u16, body: &[u8]) -> Result<(), Vec<Violation>> {
        let violation = |pointer: &str, reason: String| Violation {
            endpoint: op.key(),
            file: op.file.clone(),
            status,
            pointer: pointer.to_owned(),
            reason,
        };
        let status_key = status.to_string();
        let (cache_key, schema) = match op.responses.get(&status_key) {
            Some(resp) => match &resp.json_schema {
                Some(schema) => (format!("{}|{status_key}", op.key()), schema),
                // A documented response without a JSON body (a redirect, a file download).
                None => return Ok(()),
            },
            None if status >= 400 => ("standard error".to_owned(), &self.error_schema),
            None => {
                let documented: Vec<&str> = op.responses.keys().map(String::as_str).collect();
                return Err(vec![violation(
                    "",
                    format!("status {status} is not documented (the spec lists {documented:?})"),
                )]);
            }
        };
        let instance: Value = serde_json::from_slice(body).map_err(|e| {
            vec![violation(
                "",
                format!("body is not JSON ({e}): {}", String::from_utf8_lossy(body)),
            )]
        })?;
        let validator = self
            .validator(&cache_key, schema)
            .map_err(|e| vec![violation("", e)])?;
        let errors: Vec<Violation> = validator
            .iter_errors(&instance)
            .map(|e| violation(&e.instance_path().to_string(), e.to_string()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn validator(&self, key: &str, schema: &Value) -> Result<Rc<jsonschema::Validator>, String> {
        if let Some(v) = self.validators.borrow().get(key) {
            return Ok(v.clone());
        }
        let v = Rc::new(
            jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .should_validate_formats(true)
                .should_ignore_unknown_formats(true)
                .with_format("mx-user-id", |s: &str| ruma::UserId::parse(s).is_ok())
                .with_format("mx-room-id", |s: &str| ruma::RoomId::parse(s).is_ok())
                .with_format("mx-event-id", |s: &str| ruma::EventId::parse(s).is_ok())
                .with_format("mx-room-alias", |s: &str| {
                    ruma::RoomAliasId::parse(s).is_ok()
                })
                .with_format("mx-server-name", |s: &str| {
                    ruma::ServerName::parse(s).is_ok()
                })
                .with_format("mx-mxc-uri", |s: &str| {
                    <&ruma::MxcUri>::from(s).validate().is_ok()
                })
                .with_format("mx-unpadded-base64", |s: &str| is_unpadded_base64(s, b"+/"))
                .with_format("mx-urlsafe-unpadded-base64", |s: &str| {
                    is_unpadded_base64(s, b"-_")
                })
                .build(schema)
                .map_err(|e| format!("the spec's schema does not compile: {e}"))?,
        );
        self.validators
            .borrow_mut()
            .insert(key.to_owned(), v.clone());
        Ok(v)
    }
}

/// A response that does not match the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// `METHOD /path/template` of the operation checked against.
    pub endpoint: String,
    /// The spec file describing it.
    pub file: String,
    pub status: u16,
    /// JSON pointer into the response body; empty for the whole body.
    pub pointer: String,
    pub reason: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pointer = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(
            f,
            "{} → {} ({}): at {pointer}: {}",
            self.endpoint, self.status, self.file, self.reason
        )
    }
}

/// Unpadded base64 over the standard (`+/`) or URL-safe (`-_`) alphabet.
fn is_unpadded_base64(s: &str, extra: &[u8]) -> bool {
    s.len() % 4 != 1
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

fn http_method(name: &str) -> Option<Method> {
    Some(match name {
        "get" => Method::GET,
        "put" => Method::PUT,
        "post" => Method::POST,
        "delete" => Method::DELETE,
        "patch" => Method::PATCH,
        "head" => Method::HEAD,
        "options" => Method::OPTIONS,
        _ => return None,
    })
}

/// The path part of `servers[0].url` with its variables at their defaults: `/_matrix/client/v3`.
fn base_path(doc: &Value) -> Result<String, String> {
    let server = doc.pointer("/servers/0").ok_or("no servers[0]")?;
    let mut url = server
        .get("url")
        .and_then(Value::as_str)
        .ok_or("servers[0] has no url")?
        .to_owned();
    if let Some(vars) = server.get("variables").and_then(Value::as_object) {
        for (name, var) in vars {
            let default = var
                .get("default")
                .and_then(Value::as_str)
                .unwrap_or_default();
            url = url.replace(&format!("{{{name}}}"), default);
        }
    }
    let after_scheme = url.split_once("://").map(|(_, rest)| rest).unwrap_or(&url);
    let path = after_scheme
        .find('/')
        .map(|i| &after_scheme[i..])
        .unwrap_or("");
    Ok(path.trim_end_matches('/').to_owned())
}

fn read_operation(
    r: &mut Resolver<'_>,
    file: &Path,
    name: &str,
    base: &str,
    path: &str,
    method: Method,
    op: &Value,
) -> Result<Operation, String> {
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let security = op
        .get("security")
        .and_then(Value::as_array)
        .map(|alts| {
            alts.iter()
                .map(|alt| {
                    alt.as_object()
                        .map(|o| o.keys().cloned().collect())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    let mut responses = BTreeMap::new();
    if let Some(resps) = op.get("responses").and_then(Value::as_object) {
        for (status, resp) in resps {
            let (resp, resp_doc) = r.follow(resp, file)?;
            let mut spec = ResponseSpec::default();
            if let Some(content) = resp.get("content").and_then(Value::as_object) {
                for (media_type, media) in content {
                    spec.content_types.push(media_type.clone());
                    if media_type == "application/json"
                        && let Some(schema) = media.get("schema")
                    {
                        spec.json_schema = Some(r.schema(schema, &resp_doc)?);
                    }
                }
            }
            responses.insert(status.clone(), spec);
        }
    }
    Ok(Operation {
        file: name.to_owned(),
        operation_id: op
            .get("operationId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        method,
        // Two files describe `POST /rooms/{roomId}/invite`; one of them keeps the YAML keys
        // apart with a trailing space.
        path: format!("{base}{}", path.trim()),
        deprecated: op
            .get("deprecated")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        tags: strings(op.get("tags")),
        security,
        responses,
    })
}

/// Parsed spec files, by normalised path.
#[derive(Default)]
struct Docs {
    cache: HashMap<PathBuf, Rc<Value>>,
}

impl Docs {
    fn load(&mut self, path: &Path) -> Result<Rc<Value>, String> {
        let path = normalize(path);
        if let Some(v) = self.cache.get(&path) {
            return Ok(v.clone());
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let parsed: serde_norway::Value = serde_norway::from_str(&text)
            .map_err(|e| format!("{}: not YAML/JSON: {e}", path.display()))?;
        let v = Rc::new(yaml_to_json(parsed));
        self.cache.insert(path, v.clone());
        Ok(v)
    }
}

fn docs_value(docs: &mut Docs, path: &Path) -> Result<Value, String> {
    docs.load(path).map(|v| (*v).clone())
}

/// YAML to JSON, with every mapping key as a string (the spec writes status codes both as
/// `"200"` and `200`).
fn yaml_to_json(v: serde_norway::Value) -> Value {
    use serde_norway::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(seq) => Value::Array(seq.into_iter().map(yaml_to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = match yaml_to_json(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(t) => yaml_to_json(t.value),
    }
}

/// Resolves `..` and `.` without touching the file system, so a missing file is still named.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Keywords whose value maps names to schemas (not keywords to values).
const NAME_MAPS: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];
/// Keywords whose value is data, not a schema: copied untouched.
const DATA: &[&str] = &["enum", "const", "default", "required"];

/// Annotations that do not constrain anything. Dropped so that inlined schemas stay small and a
/// `$ref` with only these beside it stays a plain `$ref`; `$schema`/`$id` would otherwise mark
/// resource boundaries inside one inlined document.
fn is_annotation(key: &str) -> bool {
    matches!(
        key,
        "description" | "title" | "example" | "examples" | "$schema" | "$id" | "$comment"
    ) || key.starts_with("x-")
}

struct Resolver<'a> {
    docs: &'a mut Docs,
    /// `file#pointer` of every `$ref` being inlined, to refuse cycles.
    stack: Vec<String>,
    /// `(context, reference)` of refs into areas the spec copy does not ship.
    missing: Vec<(String, String)>,
}

impl<'a> Resolver<'a> {
    fn new(docs: &'a mut Docs) -> Self {
        Self {
            docs,
            stack: Vec::new(),
            missing: Vec::new(),
        }
    }

    /// The document and JSON pointer a reference written in `doc` points to.
    fn target(reference: &str, doc: &Path) -> (PathBuf, String) {
        let (file, pointer) = reference.split_once('#').unwrap_or((reference, ""));
        let file = file.trim();
        let target = if file.is_empty() {
            doc.to_owned()
        } else {
            normalize(&doc.parent().unwrap_or(Path::new("")).join(file))
        };
        (target, pointer.to_owned())
    }

    fn fetch(&mut self, file: &Path, pointer: &str) -> Result<Value, String> {
        let doc = self.docs.load(file)?;
        let pointer = pointer.replace("%24", "$");
        doc.pointer(&pointer)
            .cloned()
            .ok_or_else(|| format!("{}#{pointer} does not exist", file.display()))
    }

    /// Follows a non-schema object's `$ref` (an OpenAPI response in `#/components/responses`),
    /// returning it and the document it lives in.
    fn follow(&mut self, node: &Value, doc: &Path) -> Result<(Value, PathBuf), String> {
        let mut node = node.clone();
        let mut doc = doc.to_owned();
        for _ in 0..16 {
            let Some(reference) = node.get("$ref").and_then(Value::as_str).map(str::to_owned)
            else {
                return Ok((node, doc));
            };
            let (file, pointer) = Self::target(&reference, &doc);
            node = self.fetch(&file, &pointer)?;
            doc = file;
        }
        Err(format!("reference chain too long at {}", doc.display()))
    }

    /// Inlines every `$ref` of a schema written in `doc`.
    fn schema(&mut self, node: &Value, doc: &Path) -> Result<Value, String> {
        match node {
            Value::Array(items) => items
                .iter()
                .map(|v| self.schema(v, doc))
                .collect::<Result<_, _>>()
                .map(Value::Array),
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, v) in map {
                    if k == "$ref" || is_annotation(k) {
                        continue;
                    }
                    let value = if DATA.contains(&k.as_str()) {
                        v.clone()
                    } else if NAME_MAPS.contains(&k.as_str()) {
                        match v.as_object() {
                            Some(names) => {
                                let mut m = Map::new();
                                for (name, sub) in names {
                                    m.insert(name.clone(), self.schema(sub, doc)?);
                                }
                                Value::Object(m)
                            }
                            None => v.clone(),
                        }
                    } else {
                        self.schema(v, doc)?
                    };
                    out.insert(k.clone(), value);
                }
                let Some(reference) = map.get("$ref").and_then(Value::as_str) else {
                    return Ok(Value::Object(out));
                };
                let resolved = self.inline_ref(reference, doc)?;
                if out.is_empty() {
                    return Ok(resolved);
                }
                // Keywords beside a `$ref` apply together with it (JSON Schema 2020-12).
                let mut all_of = vec![resolved];
                if let Some(Value::Array(existing)) = out.remove("allOf") {
                    all_of.extend(existing);
                }
                out.insert("allOf".into(), Value::Array(all_of));
                Ok(Value::Object(out))
            }
            other => Ok(other.clone()),
        }
    }

    fn inline_ref(&mut self, reference: &str, doc: &Path) -> Result<Value, String> {
        let (file, pointer) = Self::target(reference, doc);
        if !file.exists() {
            // Only whole API areas left out of the spec copy are tolerated; a missing file in a
            // directory that exists means the copy is broken.
            let dir_exists =
                file.parent().is_some_and(|d| d.is_dir()) || self.area_is_shipped(&file);
            if dir_exists {
                return Err(format!(
                    "{reference} (from {}): {} is missing",
                    doc.display(),
                    file.display()
                ));
            }
            self.missing
                .push((doc.display().to_string(), file.display().to_string()));
            return Ok(Value::Bool(true));
        }
        let key = format!("{}#{pointer}", file.display());
        if self.stack.contains(&key) {
            return Err(format!(
                "recursive $ref {key} via {}",
                self.stack.join(" → ")
            ));
        }
        let target = self.fetch(&file, &pointer)?;
        self.stack.push(key);
        let resolved = self.schema(&target, &file);
        self.stack.pop();
        resolved
    }

    /// Whether the top-level API area (`api/<area>`) of `file` exists in the copy.
    fn area_is_shipped(&self, file: &Path) -> bool {
        let comps: Vec<String> = file
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        comps
            .iter()
            .rposition(|c| c == "api")
            .and_then(|i| comps.get(..=i + 1))
            .map(|prefix| prefix.iter().collect::<PathBuf>().is_dir())
            .unwrap_or(true)
    }
}
