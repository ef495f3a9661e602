//! A `Registration` stops its keep-alive task on `deregister` (waiting for the removal)
//! and on drop (in the background).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dtmdriver_core::Registration;

fn spawn_flagging(removed: Arc<AtomicBool>) -> Registration {
    Registration::spawn("t://h/x", "127.0.0.1:1", move |stop| async move {
        stop.cancelled().await;
        tokio::time::sleep(Duration::from_millis(50)).await; // a registry round trip
        removed.store(true, Ordering::SeqCst);
        Ok(())
    })
}

#[tokio::test]
async fn deregister_waits_for_the_removal() {
    let removed = Arc::new(AtomicBool::new(false));
    let reg = spawn_flagging(removed.clone());
    assert_eq!((reg.target(), reg.endpoint()), ("t://h/x", "127.0.0.1:1"));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !removed.load(Ordering::SeqCst),
        "still registered while held"
    );
    reg.deregister().await.unwrap();
    assert!(removed.load(Ordering::SeqCst));
}

#[tokio::test]
async fn drop_removes_in_the_background() {
    let removed = Arc::new(AtomicBool::new(false));
    drop(spawn_flagging(removed.clone()));
    for _ in 0..100 {
        if removed.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("dropping the registration did not remove the instance within 1 s");
}

#[tokio::test]
async fn a_failed_removal_is_reported_by_deregister() {
    let reg = Registration::spawn("t://h/x", "e", |stop| async move {
        stop.cancelled().await;
        Err(dtmdriver_core::Error::Registry {
            target: "t://h/x".into(),
            message: "revoke failed".into(),
        })
    });
    let err = reg.deregister().await.unwrap_err().to_string();
    assert!(err.contains("revoke failed"), "{err}");
}
