//! Seed inputs: scripts written by hand, encoded into the bytes `arbitrary` decodes them from.
//!
//! libFuzzer starting from nothing makes short inputs first and needs a long time to reach a
//! room with history and a second user in it; seeds start it there. The encoder covers what
//! seeds use (actions without mutations, calls without overrides, waits) and follows
//! `arbitrary`'s layout: integers little-endian, `bool` as a byte's low bit, `Option` as a
//! bool then the value, an enum variant as a `u32` scaled over the variant count, [`Few`] as a
//! count byte. `tests` checks that every seed decodes back to itself.

use crate::input::{Action, Call, HistoryVisibility, Pick, Preset, RelKind, Script, Step, Who};
use crate::routes::Routes;

/// The `u32` that `arbitrary` maps to variant `i` of `n`.
fn variant(out: &mut Vec<u8>, i: u32, n: u32) {
    let x = ((u64::from(i) << 32).div_ceil(u64::from(n))) as u32;
    out.extend_from_slice(&x.to_le_bytes());
}

fn u8_(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

fn bool_(out: &mut Vec<u8>, v: bool) {
    out.push(u8::from(v));
}

fn history(out: &mut Vec<u8>, h: HistoryVisibility) {
    let i = match h {
        HistoryVisibility::WorldReadable => 0,
        HistoryVisibility::Shared => 1,
        HistoryVisibility::Invited => 2,
        HistoryVisibility::Joined => 3,
    };
    variant(out, i, 4);
}

/// Encodes a script, or `None` if it uses something the encoder does not cover.
pub fn encode(script: &Script) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for step in &script.steps {
        match step {
            Step::Do {
                who,
                action,
                mutations,
            } => {
                if !mutations.is_empty() {
                    return None;
                }
                variant(&mut out, 0, 3);
                u8_(&mut out, who.0);
                action_(&mut out, action);
                u8_(&mut out, 0);
            }
            Step::Call(c) => {
                if !(c.vars.is_empty() && c.query.is_empty() && c.body.is_empty()) {
                    return None;
                }
                variant(&mut out, 1, 3);
                u8_(&mut out, c.who.0);
                out.extend_from_slice(&c.route.to_le_bytes());
                u8_(&mut out, c.example);
                out.extend_from_slice(&[0, 0, 0]);
            }
            Step::Wait(s) => {
                variant(&mut out, 2, 3);
                out.extend_from_slice(&s.to_le_bytes());
            }
        }
    }
    Some(out)
}

const ACTIONS: u32 = 17;

fn action_(out: &mut Vec<u8>, a: &Action) {
    match a {
        Action::CreateRoom {
            preset,
            history: h,
            invite,
        } => {
            variant(out, 0, ACTIONS);
            let p = match preset {
                Preset::Private => 0,
                Preset::TrustedPrivate => 1,
                Preset::Public => 2,
            };
            variant(out, p, 3);
            bool_(out, h.is_some());
            if let Some(h) = h {
                history(out, *h);
            }
            bool_(out, invite.is_some());
            if let Some(w) = invite {
                u8_(out, w.0);
            }
        }
        Action::Invite { room, target } => {
            variant(out, 1, ACTIONS);
            u8_(out, room.0);
            u8_(out, target.0);
        }
        Action::Join { room } => {
            variant(out, 2, ACTIONS);
            u8_(out, room.0);
        }
        Action::Leave { room } => {
            variant(out, 3, ACTIONS);
            u8_(out, room.0);
        }
        Action::Kick { room, target } => {
            variant(out, 4, ACTIONS);
            u8_(out, room.0);
            u8_(out, target.0);
        }
        Action::Ban { room, target } => {
            variant(out, 5, ACTIONS);
            u8_(out, room.0);
            u8_(out, target.0);
        }
        Action::Send { room, text } => {
            variant(out, 6, ACTIONS);
            u8_(out, room.0);
            u8_(out, *text);
        }
        Action::SetHistoryVisibility { room, to } => {
            variant(out, 7, ACTIONS);
            u8_(out, room.0);
            history(out, *to);
        }
        Action::SetJoinRule { room, public } => {
            variant(out, 8, ACTIONS);
            u8_(out, room.0);
            bool_(out, *public);
        }
        Action::Redact { event } => {
            variant(out, 9, ACTIONS);
            u8_(out, event.0);
        }
        Action::Relate { event, kind } => {
            variant(out, 10, ACTIONS);
            u8_(out, event.0);
            let k = match kind {
                RelKind::Reaction => 0,
                RelKind::Thread => 1,
                RelKind::Reply => 2,
                RelKind::Edit => 3,
            };
            variant(out, k, 4);
        }
        Action::Sync {
            incremental,
            full_state,
            lazy_members,
            limit,
        } => {
            variant(out, 11, ACTIONS);
            bool_(out, *incremental);
            bool_(out, *full_state);
            bool_(out, *lazy_members);
            u8_(out, *limit);
        }
        Action::Messages {
            room,
            backward,
            limit,
        } => {
            variant(out, 12, ACTIONS);
            u8_(out, room.0);
            bool_(out, *backward);
            u8_(out, *limit);
        }
        Action::Context { event, limit } => {
            variant(out, 13, ACTIONS);
            u8_(out, event.0);
            u8_(out, *limit);
        }
        Action::Event { event } => {
            variant(out, 14, ACTIONS);
            u8_(out, event.0);
        }
        Action::Relations { event } => {
            variant(out, 15, ACTIONS);
            u8_(out, event.0);
        }
        Action::Threads { room } => {
            variant(out, 16, ACTIONS);
            u8_(out, room.0);
        }
    }
}

pub fn act(who: u8, action: Action) -> Step {
    Step::Do {
        who: Who(who),
        action,
        mutations: Vec::new().into(),
    }
}

pub fn sync(who: u8, incremental: bool) -> Step {
    act(
        who,
        Action::Sync {
            incremental,
            full_state: false,
            lazy_members: false,
            limit: 0,
        },
    )
}

/// user0 makes a room with this history visibility, talks, user1 joins and reads everything.
pub fn history_scenario(h: HistoryVisibility, invite_first: bool) -> Script {
    let mut steps = vec![
        act(
            0,
            Action::CreateRoom {
                preset: Preset::Public,
                history: Some(h),
                invite: invite_first.then_some(Who(1)),
            },
        ),
        act(
            0,
            Action::Send {
                room: Pick(0),
                text: 1,
            },
        ),
        sync(1, false),
        act(1, Action::Join { room: Pick(0) }),
        act(
            0,
            Action::Send {
                room: Pick(0),
                text: 2,
            },
        ),
        act(
            1,
            Action::Messages {
                room: Pick(0),
                backward: true,
                limit: 20,
            },
        ),
        act(
            1,
            Action::Context {
                event: Pick(3),
                limit: 5,
            },
        ),
        act(1, Action::Event { event: Pick(2) }),
        act(1, Action::Relations { event: Pick(2) }),
        sync(1, true),
        act(1, Action::Leave { room: Pick(0) }),
        act(
            0,
            Action::Send {
                room: Pick(0),
                text: 3,
            },
        ),
        sync(1, true),
    ];
    steps.push(act(
        1,
        Action::Messages {
            room: Pick(0),
            backward: true,
            limit: 20,
        },
    ));
    Script { steps }
}

/// The seeds: room histories under each visibility, moderation and relations, and one call to
/// every route of the table after a room with some history exists.
pub fn seeds(routes: &Routes) -> Vec<(String, Script)> {
    use HistoryVisibility::*;
    let mut out = Vec::new();
    for (name, h) in [
        ("world-readable", WorldReadable),
        ("shared", Shared),
        ("invited", Invited),
        ("joined", Joined),
    ] {
        out.push((format!("history-{name}"), history_scenario(h, false)));
        out.push((format!("history-{name}-invited"), history_scenario(h, true)));
    }
    out.push((
        "moderation-and-relations".to_owned(),
        Script {
            steps: vec![
                act(
                    0,
                    Action::CreateRoom {
                        preset: Preset::Private,
                        history: None,
                        invite: Some(Who(1)),
                    },
                ),
                act(1, Action::Join { room: Pick(0) }),
                act(
                    1,
                    Action::Send {
                        room: Pick(0),
                        text: 1,
                    },
                ),
                act(
                    0,
                    Action::Relate {
                        event: Pick(0),
                        kind: RelKind::Thread,
                    },
                ),
                act(
                    0,
                    Action::Relate {
                        event: Pick(1),
                        kind: RelKind::Reaction,
                    },
                ),
                act(
                    1,
                    Action::Relate {
                        event: Pick(2),
                        kind: RelKind::Edit,
                    },
                ),
                act(
                    0,
                    Action::Relate {
                        event: Pick(3),
                        kind: RelKind::Reply,
                    },
                ),
                act(0, Action::Redact { event: Pick(1) }),
                act(
                    0,
                    Action::SetHistoryVisibility {
                        room: Pick(0),
                        to: Joined,
                    },
                ),
                act(
                    0,
                    Action::Kick {
                        room: Pick(0),
                        target: Who(1),
                    },
                ),
                act(
                    0,
                    Action::Invite {
                        room: Pick(0),
                        target: Who(2),
                    },
                ),
                act(2, Action::Join { room: Pick(0) }),
                act(
                    0,
                    Action::Ban {
                        room: Pick(0),
                        target: Who(1),
                    },
                ),
                act(
                    0,
                    Action::SetJoinRule {
                        room: Pick(0),
                        public: true,
                    },
                ),
                sync(1, false),
                sync(2, false),
                act(2, Action::Threads { room: Pick(0) }),
                act(2, Action::Relations { event: Pick(2) }),
                act(
                    1,
                    Action::Messages {
                        room: Pick(0),
                        backward: true,
                        limit: 30,
                    },
                ),
                Step::Wait(120),
                sync(0, true),
            ],
        },
    ));
    let prelude = [
        act(
            0,
            Action::CreateRoom {
                preset: Preset::Public,
                history: None,
                invite: Some(Who(1)),
            },
        ),
        act(1, Action::Join { room: Pick(0) }),
        act(
            0,
            Action::Send {
                room: Pick(0),
                text: 1,
            },
        ),
    ];
    let points: Vec<u16> = routes.iter().map(|r| r.point()).collect();
    for (i, chunk) in points.chunks(crate::MAX_STEPS - prelude.len()).enumerate() {
        let mut steps = prelude.to_vec();
        for (j, point) in chunk.iter().enumerate() {
            steps.push(Step::Call(Call {
                who: Who((j % 2) as u8),
                route: *point,
                example: j as u8,
                vars: Vec::new().into(),
                query: Vec::new().into(),
                body: Vec::new().into(),
            }));
        }
        out.push((format!("routes-{i}"), Script { steps }));
    }
    out
}
