//! A kept channel handle used on a runtime other than its channel's: while that runtime
//! idles, a call would wait on its connection task forever; instead it fails at once,
//! `Unavailable`, naming both runtimes, and nothing new reaches the server. The
//! manager's channel for the current runtime works as usual.

mod common;

use common::SERVER;
use rtlocal_testkit::current_thread;
use rtlocal_testkit::grpc::check;
use rtlocal_tonic::{ChannelFactory, ChannelManager};

#[test]
fn a_kept_handle_used_on_another_runtime_fails_fast_naming_both_runtimes() {
    let manager = ChannelManager::new(ChannelFactory::from_shared(SERVER.uri()).expect("a URI"));
    let rt_a = current_thread();
    let kept = rt_a.block_on(async {
        let kept = manager.client().await.expect("a channel");
        check(kept.channel())
            .await
            .expect("a check on its own runtime");
        kept
    });
    let owner = kept.runtime_id();
    let accepted = SERVER.accepted();
    // rt_a is alive and idle from here on.
    let rt_b = current_thread();
    let (outcome, here) = rt_b.block_on(async {
        (
            check(kept.channel()).await,
            tokio::runtime::Handle::current().id(),
        )
    });
    let err = outcome.expect_err("refused on a foreign runtime");
    assert!(!err.contains("hung"), "{err}");
    assert!(
        err.contains("Unavailable") || err.contains("unavailable"),
        "{err}"
    );
    assert!(
        err.contains(&format!("runtime {owner}")) && err.contains(&format!("runtime {here}")),
        "{err}"
    );
    assert_eq!(
        SERVER.accepted(),
        accepted,
        "the refused call reached the server"
    );
    // This runtime's own channel works.
    rt_b.block_on(async {
        let own = manager.client().await.expect("this runtime's channel");
        check(own.channel()).await.expect("a check");
    });
    drop(rt_a);
}
