//! What notifications cost in storage per message and room member: a message must not leave
//! per-member records behind (issue #9's target: under 100 bytes per event per member in the
//! `notifications` tree). The release-mode figures, with heap, come from
//! `cargo bench -p hearth-bench --bench notification_memory`; IndexedDB's from
//! `web/tests/notification_footprint.rs`.

use hearth_core::testing::footprint::{BusyRoom, Footprint};
use hearth_core::testing::test_server;

const TARGET_BYTES_PER_EVENT_PER_MEMBER: f64 = 100.0;

/// Sends `messages` into a room of `members` and returns the `notifications` tree's and all
/// trees' added bytes per message per member.
async fn bytes_per_event_per_member(members: usize, messages: usize) -> (f64, f64) {
    let (hs, _) = test_server(3).await;
    let mut room = BusyRoom::create(&hs, "fp", members).await;
    room.send(1).await;
    let before = Footprint::of(&*hs.store).await.expect("scan");
    room.send(messages).await;
    let added = Footprint::of(&*hs.store)
        .await
        .expect("scan")
        .since(&before);
    let per = (members * messages) as f64;
    let notifications = added.tree("notifications").bytes as f64 / per;
    let all = added.total().bytes as f64 / per;
    eprintln!(
        "{members} members, {messages} messages: notifications {notifications:.1} B, \
         all trees {all:.1} B per event per member ({} notification records added)",
        added.tree("notifications").records
    );
    (notifications, all)
}

async fn check(members: usize, messages: usize) {
    let (notifications, _) = bytes_per_event_per_member(members, messages).await;
    assert!(
        notifications < TARGET_BYTES_PER_EVENT_PER_MEMBER,
        "{notifications:.1} bytes per event per member in a room of {members}"
    );
}

#[tokio::test]
async fn two_member_room_stays_under_the_notification_budget() {
    check(2, 400).await;
}

#[tokio::test]
async fn fifty_member_room_stays_under_the_notification_budget() {
    check(50, 100).await;
}

#[tokio::test]
async fn five_hundred_member_room_stays_under_the_notification_budget() {
    check(500, 10).await;
}
