//! Server identity: key-named servers are named by their key, named servers by their
//! configuration; a store keeps the name and key it was first booted with.

use std::rc::Rc;

use hearth_core::storage::{MemoryStorage, Storage};
use hearth_core::testing::{TestWorld, test_config};
use hearth_core::{Config, Homeserver, StartError};
use ruma::ServerName;

async fn boot(store: &Rc<dyn Storage>, name: Option<&str>) -> Result<Homeserver, StartError> {
    boot_seeded(store, name, 5).await
}

/// Boots with a world whose random generator starts at `seed` (a first boot draws the key).
async fn boot_seeded(
    store: &Rc<dyn Storage>,
    name: Option<&str>,
    seed: u64,
) -> Result<Homeserver, StartError> {
    let config = Config {
        server_name: name.map(|n| ServerName::parse(n).unwrap()),
        ..test_config()
    };
    Homeserver::new(store.clone(), Rc::new(TestWorld::new(seed)), config).await
}

#[tokio::test]
async fn a_named_server_keeps_its_key_and_key_id_across_restarts() {
    let store: Rc<dyn Storage> = Rc::new(MemoryStorage::new());
    let first = boot(&store, Some("example.test:8448")).await.unwrap();
    assert_eq!(first.server_name().as_str(), "example.test:8448");
    let key_id = first.key.key_id.clone();
    let public = first.key.public_key;
    drop(first);
    // A different random generator: the key comes from the store, not from chance.
    let again = boot_seeded(&store, Some("example.test:8448"), 6)
        .await
        .unwrap();
    assert_eq!(again.key.key_id, key_id);
    assert_eq!(again.key.public_key, public);
    // The key id names the key: another key has another id.
    let fresh: Rc<dyn Storage> = Rc::new(MemoryStorage::new());
    let other = boot_seeded(&fresh, Some("example.test:8448"), 7)
        .await
        .unwrap();
    assert_ne!(other.key.key_id, key_id);
}

#[tokio::test]
async fn a_store_refuses_another_name() {
    let store: Rc<dyn Storage> = Rc::new(MemoryStorage::new());
    boot(&store, Some("a.test")).await.unwrap();
    assert!(matches!(
        boot(&store, Some("b.test")).await,
        Err(StartError::NameChanged { .. })
    ));
    assert!(matches!(
        boot(&store, None).await,
        Err(StartError::NameChanged { .. })
    ));

    let keyed: Rc<dyn Storage> = Rc::new(MemoryStorage::new());
    let hs = boot(&keyed, None).await.unwrap();
    assert_eq!(hs.server_name().as_str(), hex_of(&hs.key.public_key));
    drop(hs);
    assert!(matches!(
        boot(&keyed, Some("a.test")).await,
        Err(StartError::NameChanged { .. })
    ));
    boot(&keyed, None).await.unwrap();
}

#[tokio::test]
async fn a_configured_name_cannot_pose_as_a_key_named_server() {
    let store: Rc<dyn Storage> = Rc::new(MemoryStorage::new());
    let lookalike = "ab".repeat(32);
    assert!(matches!(
        boot(&store, Some(&lookalike)).await,
        Err(StartError::Key(_))
    ));
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
