//! Generated from the Matrix spec's OpenAPI by `core/tests/api/strict.rs`; do not edit.
//! After the spec moves: `HEARTH_REGENERATE=1 cargo test -p hearth-core --test api strict::the_object_table`.
//!
//! For each operation with a JSON body: the places below the top level where its schema says
//! object, as JSON pointers in which `*` stands for any key of a map or any element of an array.

#[rustfmt::skip]
pub(super) const OBJECTS: &[(&str, &str, &[&str])] = &[
    ("POST", "/_matrix/client/v1/login/get_token", &[
        "/auth",
    ]),
    ("POST", "/_matrix/client/v3/account/3pid", &[
        "/three_pid_creds",
    ]),
    ("POST", "/_matrix/client/v3/account/3pid/add", &[
        "/auth",
    ]),
    ("POST", "/_matrix/client/v3/account/deactivate", &[
        "/auth",
    ]),
    ("POST", "/_matrix/client/v3/account/password", &[
        "/auth",
    ]),
    ("POST", "/_matrix/client/v3/createRoom", &[
        "/creation_content",
        "/initial_state/*",
        "/initial_state/*/content",
        "/invite_3pid/*",
        "/power_level_content_override",
    ]),
    ("POST", "/_matrix/client/v3/delete_devices", &[
        "/auth",
    ]),
    ("DELETE", "/_matrix/client/v3/devices/{}", &[
        "/auth",
    ]),
    ("POST", "/_matrix/client/v3/join/{}", &[
        "/third_party_signed",
        "/third_party_signed/signatures",
        "/third_party_signed/signatures/*",
    ]),
    ("POST", "/_matrix/client/v3/keys/claim", &[
        "/one_time_keys",
        "/one_time_keys/*",
    ]),
    ("POST", "/_matrix/client/v3/keys/device_signing/upload", &[
        "/auth",
        "/master_key",
        "/master_key/keys",
        "/master_key/signatures",
        "/self_signing_key",
        "/self_signing_key/keys",
        "/self_signing_key/signatures",
        "/user_signing_key",
        "/user_signing_key/keys",
        "/user_signing_key/signatures",
    ]),
    ("POST", "/_matrix/client/v3/keys/query", &[
        "/device_keys",
    ]),
    ("POST", "/_matrix/client/v3/keys/signatures/upload", &[
        "/*",
        "/*/*",
    ]),
    ("POST", "/_matrix/client/v3/keys/upload", &[
        "/device_keys",
        "/device_keys/keys",
        "/device_keys/signatures",
        "/device_keys/signatures/*",
        "/fallback_keys",
        "/one_time_keys",
    ]),
    ("POST", "/_matrix/client/v3/login", &[
        "/identifier",
    ]),
    ("POST", "/_matrix/client/v3/publicRooms", &[
        "/filter",
    ]),
    ("POST", "/_matrix/client/v3/pushers/set", &[
        "/data",
    ]),
    ("PUT", "/_matrix/client/v3/pushrules/global/{}/{}", &[
        "/conditions/*",
    ]),
    ("POST", "/_matrix/client/v3/register", &[
        "/auth",
    ]),
    ("PUT", "/_matrix/client/v3/room_keys/keys", &[
        "/rooms",
        "/rooms/*",
        "/rooms/*/sessions",
        "/rooms/*/sessions/*",
        "/rooms/*/sessions/*/session_data",
    ]),
    ("PUT", "/_matrix/client/v3/room_keys/keys/{}", &[
        "/sessions",
        "/sessions/*",
        "/sessions/*/session_data",
    ]),
    ("PUT", "/_matrix/client/v3/room_keys/keys/{}/{}", &[
        "/session_data",
    ]),
    ("POST", "/_matrix/client/v3/room_keys/version", &[
        "/auth_data",
    ]),
    ("PUT", "/_matrix/client/v3/room_keys/version/{}", &[
        "/auth_data",
    ]),
    ("POST", "/_matrix/client/v3/rooms/{}/join", &[
        "/third_party_signed",
        "/third_party_signed/signatures",
        "/third_party_signed/signatures/*",
    ]),
    ("POST", "/_matrix/client/v3/search", &[
        "/search_categories",
        "/search_categories/room_events",
        "/search_categories/room_events/event_context",
        "/search_categories/room_events/filter",
        "/search_categories/room_events/groupings",
        "/search_categories/room_events/groupings/group_by/*",
    ]),
    ("PUT", "/_matrix/client/v3/sendToDevice/{}/{}", &[
        "/messages",
        "/messages/*",
        "/messages/*/*",
    ]),
    ("POST", "/_matrix/client/v3/user/{}/filter", &[
        "/account_data",
        "/presence",
        "/room",
        "/room/account_data",
        "/room/ephemeral",
        "/room/state",
        "/room/timeline",
    ]),
];
