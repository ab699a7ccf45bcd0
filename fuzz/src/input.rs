//! What one fuzz input is, as `arbitrary` decodes it from libFuzzer's bytes.
//!
//! Indices (`Who`, `Pick`, a route number) are taken modulo what exists when the step runs, so
//! every byte string decodes to a script that does something, and a script found once keeps
//! meaning the same thing as long as the routes it names exist.

use arbitrary::{Arbitrary, Result, Unstructured};

/// The steps of one run, executed in order on a fresh server with [`crate::USERS`] registered
/// users. Steps are decoded one after another until the bytes or [`crate::MAX_STEPS`] run out,
/// so that appending bytes appends steps.
#[derive(Debug, Clone, Default)]
pub struct Script {
    pub steps: Vec<Step>,
}

impl<'a> Arbitrary<'a> for Script {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let mut steps = Vec::new();
        while !u.is_empty() && steps.len() < crate::MAX_STEPS {
            steps.push(Step::arbitrary(u)?);
        }
        Ok(Self { steps })
    }

    fn arbitrary_take_rest(mut u: Unstructured<'a>) -> Result<Self> {
        Self::arbitrary(&mut u)
    }
}

/// At most `N` items, the count read from one byte: `arbitrary`'s own lengths come from the
/// end of the input and let one field swallow the bytes meant for the next steps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Few<T, const N: usize>(pub Vec<T>);

impl<'a, T: Arbitrary<'a>, const N: usize> Arbitrary<'a> for Few<T, N> {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let n = usize::from(u8::arbitrary(u)?) % (N + 1);
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            if u.is_empty() {
                break;
            }
            items.push(T::arbitrary(u)?);
        }
        Ok(Self(items))
    }
}

impl<T, const N: usize> std::ops::Deref for Few<T, N> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T, const N: usize> From<Vec<T>> for Few<T, N> {
    fn from(v: Vec<T>) -> Self {
        Self(v)
    }
}

/// Short text (up to 64 bytes, lossily UTF-8), its length read from one byte.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Text(pub String);

impl<'a> Arbitrary<'a> for Text {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Self(
            String::from_utf8_lossy(&Bytes::arbitrary(u)?.0).into_owned(),
        ))
    }
}

/// Up to 64 raw bytes, the count read from one byte.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bytes(pub Vec<u8>);

impl<'a> Arbitrary<'a> for Bytes {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let n = usize::from(u8::arbitrary(u)?) % 65;
        let n = n.min(u.len());
        Ok(Self(u.bytes(n)?.to_vec()))
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Step {
    /// A well-formed request that shapes rooms and their history, or reads it back. The
    /// mutations (usually none) are applied to its body as for [`Call`].
    Do {
        who: Who,
        action: Action,
        mutations: Few<Mutation, 3>,
    },
    /// Any route of the router's table.
    Call(Call),
    /// Moves the server's clock forward by this many seconds (typing, presence, token expiry).
    Wait(u16),
}

/// Which user sends a request: an index modulo the registered users plus one, the last being
/// an anonymous client with no access token.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Who(pub u8);

/// An index into the identifiers of one kind seen so far in the run (modulo their number).
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick(pub u8);

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryVisibility {
    WorldReadable,
    Shared,
    Invited,
    Joined,
}

impl HistoryVisibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WorldReadable => "world_readable",
            Self::Shared => "shared",
            Self::Invited => "invited",
            Self::Joined => "joined",
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Private,
    TrustedPrivate,
    Public,
}

impl Preset {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private_chat",
            Self::TrustedPrivate => "trusted_private_chat",
            Self::Public => "public_chat",
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelKind {
    Reaction,
    Thread,
    Reply,
    Edit,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Action {
    CreateRoom {
        preset: Preset,
        history: Option<HistoryVisibility>,
        invite: Option<Who>,
    },
    Invite {
        room: Pick,
        target: Who,
    },
    Join {
        room: Pick,
    },
    Leave {
        room: Pick,
    },
    Kick {
        room: Pick,
        target: Who,
    },
    Ban {
        room: Pick,
        target: Who,
    },
    Send {
        room: Pick,
        text: u8,
    },
    SetHistoryVisibility {
        room: Pick,
        to: HistoryVisibility,
    },
    /// Opens (`public`) or closes (`invite`) the room's join rule.
    SetJoinRule {
        room: Pick,
        public: bool,
    },
    Redact {
        event: Pick,
    },
    Relate {
        event: Pick,
        kind: RelKind,
    },
    /// `/sync`: initial, or since the user's last `next_batch`.
    Sync {
        incremental: bool,
        full_state: bool,
        lazy_members: bool,
        limit: u8,
    },
    Messages {
        room: Pick,
        backward: bool,
        limit: u8,
    },
    Context {
        event: Pick,
        limit: u8,
    },
    Event {
        event: Pick,
    },
    Relations {
        event: Pick,
    },
    Threads {
        room: Pick,
    },
}

/// A request to a route of the router's table.
#[derive(Arbitrary, Debug, Clone)]
pub struct Call {
    pub who: Who,
    /// Chooses the route by consistent hashing of its template (see `routes.rs`), so that a
    /// route added later takes over only a slice of the numbers.
    pub route: u16,
    /// Which of the route's valid example requests to start from.
    pub example: u8,
    /// Overrides for the path's variables, by position; a missing one is filled as the example
    /// or the segment before it suggests.
    pub vars: Few<Var, 4>,
    pub query: Few<QueryParam, 3>,
    pub body: Few<Mutation, 4>,
}

/// A path variable.
#[derive(Arbitrary, Debug, Clone)]
pub enum Var {
    /// What the example or the segment before it suggests, from the identifiers seen so far.
    Auto(Pick),
    /// An identifier of this kind seen so far.
    Id(IdKind, Pick),
    /// An identifier of this kind at the spec's length limit or past it.
    Long(IdKind, Length),
    Text(Text),
    Empty,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Room,
    Event,
    User,
    Alias,
    Device,
    /// An event type or other namespaced name (`m.room.message`).
    Type,
}

/// A length around the spec's 255-byte limit on identifiers.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// Exactly 255 bytes: the longest valid identifier.
    Max,
    /// 256 bytes: one past it.
    Over,
    /// 4096 bytes.
    Far,
}

impl Length {
    pub fn bytes(self) -> usize {
        match self {
            Self::Max => 255,
            Self::Over => 256,
            Self::Far => 4096,
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub struct QueryParam {
    pub name: QueryName,
    pub value: Json,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryName {
    Since,
    From,
    To,
    Dir,
    Limit,
    Timeout,
    Filter,
    FullState,
    SetPresence,
    Via,
    ServerName,
    NextBatch,
    Width,
    Height,
    Method,
    Format,
    Recurse,
    MaxDepth,
    AccessToken,
    Other,
}

impl QueryName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Since => "since",
            Self::From => "from",
            Self::To => "to",
            Self::Dir => "dir",
            Self::Limit => "limit",
            Self::Timeout => "timeout",
            Self::Filter => "filter",
            Self::FullState => "full_state",
            Self::SetPresence => "set_presence",
            Self::Via => "via",
            Self::ServerName => "server_name",
            Self::NextBatch => "next_batch",
            Self::Width => "width",
            Self::Height => "height",
            Self::Method => "method",
            Self::Format => "format",
            Self::Recurse => "recurse",
            Self::MaxDepth => "max_depth",
            Self::AccessToken => "access_token",
            Self::Other => "x",
        }
    }
}

/// A change to a valid request body.
#[derive(Arbitrary, Debug, Clone)]
pub enum Mutation {
    /// Removes the n-th field of the object (nested objects are walked depth first).
    Drop(u8),
    /// Replaces the n-th field's value.
    Replace(u8, Json),
    /// Adds a field with a known name.
    Add(FieldName, Json),
    /// Replaces the whole body with another JSON value: an array holding it, `null`, a string.
    Whole(Whole),
    /// A change to the serialised bytes, applied last.
    Bytes(ByteMutation),
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whole {
    WrapInArray,
    EmptyArray,
    EmptyObject,
    Null,
    String,
    Number,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum ByteMutation {
    Truncate(u16),
    /// Puts a byte that is never valid UTF-8 at this offset.
    InvalidUtf8(u16),
    Empty,
    Raw(Bytes),
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldName {
    Body,
    Msgtype,
    Membership,
    UserId,
    RoomId,
    EventId,
    Reason,
    Name,
    Topic,
    Type,
    Content,
    StateKey,
    Displayname,
    AvatarUrl,
    Visibility,
    Preset,
    Invite,
    RoomVersion,
    InitialState,
    HistoryVisibility,
    JoinRule,
    Users,
    Events,
    Auth,
    Password,
    Username,
    DeviceId,
    RelatesTo,
    Limit,
    Filter,
}

impl FieldName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Body => "body",
            Self::Msgtype => "msgtype",
            Self::Membership => "membership",
            Self::UserId => "user_id",
            Self::RoomId => "room_id",
            Self::EventId => "event_id",
            Self::Reason => "reason",
            Self::Name => "name",
            Self::Topic => "topic",
            Self::Type => "type",
            Self::Content => "content",
            Self::StateKey => "state_key",
            Self::Displayname => "displayname",
            Self::AvatarUrl => "avatar_url",
            Self::Visibility => "visibility",
            Self::Preset => "preset",
            Self::Invite => "invite",
            Self::RoomVersion => "room_version",
            Self::InitialState => "initial_state",
            Self::HistoryVisibility => "history_visibility",
            Self::JoinRule => "join_rule",
            Self::Users => "users",
            Self::Events => "events",
            Self::Auth => "auth",
            Self::Password => "password",
            Self::Username => "username",
            Self::DeviceId => "device_id",
            Self::RelatesTo => "m.relates_to",
            Self::Limit => "limit",
            Self::Filter => "filter",
        }
    }
}

/// A JSON value for a field or a query parameter.
#[derive(Arbitrary, Debug, Clone)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    /// Integers at the edges of what the spec allows (±2^53) and past them.
    Edge(EdgeInt),
    Float(f64),
    Str(Text),
    /// A string of exactly this many bytes.
    LongStr(Length),
    Id(IdKind, Pick),
    LongId(IdKind, Length),
    /// A pagination or sync token seen so far.
    Token(Pick),
    EmptyArray,
    ArrayOf(Box<Json>),
    EmptyObject,
    ObjectOf(FieldName, Box<Json>),
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeInt {
    MaxSafe,
    PastSafe,
    MinSafe,
    Zero,
    Minus1,
    U64Max,
}
