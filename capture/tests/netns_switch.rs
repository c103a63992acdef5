//! `NetNs::run_here` enters a namespace on the calling thread and always comes back, also when
//! the closure panics; sockets made inside stay in the namespace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use capture::testing::{require_root, TestNetns};
use capture::NetNs;

fn current_inode() -> u64 {
    NetNs::current().unwrap().inode()
}

#[test]
fn run_here_enters_and_returns_even_after_a_panic() {
    require_root();
    let pod = TestNetns::new("here");
    let home = current_inode();
    let inside = pod.netns().run_here(current_inode).unwrap();
    assert_eq!(inside, pod.netns().inode());
    assert_eq!(current_inode(), home, "the thread came back");

    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pod.netns().run_here(|| panic!("boom")).unwrap();
    }));
    assert!(panicked.is_err());
    assert_eq!(current_inode(), home, "the thread came back after a panic");

    // A socket created inside belongs to the pod: binding the pod's loopback works there, and
    // the listener is reachable only from inside.
    let listener = pod
        .netns()
        .run_here(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .unwrap();
    let address = listener.local_addr().unwrap();
    assert!(
        std::net::TcpStream::connect(address).is_err(),
        "the pod's loopback listener must not be reachable from the host's loopback"
    );
    pod.netns()
        .run_here(|| std::net::TcpStream::connect(address).unwrap())
        .unwrap();
}
