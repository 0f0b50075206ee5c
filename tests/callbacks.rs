//! Runtime teardown callbacks: LIFO, exactly once, panic-isolated, cancellable, refused
//! on dead runtimes and outside runtimes, on every shutdown path and runtime flavor.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::current_thread_rt;

fn multi_thread_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Shuts `rt` down the given way and, for the paths that do not wait, waits (bounded)
/// until `done` reports the callbacks ran.
fn shut(rt: tokio::runtime::Runtime, how: usize, done: impl Fn() -> bool) {
    match how {
        0 => drop(rt),
        1 => rt.shutdown_background(),
        _ => rt.shutdown_timeout(Duration::from_secs(5)),
    }
    let deadline = std::time::Instant::now() + common::HANG_GUARD;
    while !done() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn lifo_exactly_once_on_every_path_and_flavor() {
    for flavor in 0..2 {
        for how in 0..3 {
            let rt = if flavor == 0 {
                current_thread_rt()
            } else {
                multi_thread_rt()
            };
            let order = Arc::new(Mutex::new(Vec::new()));
            rt.block_on(async {
                for i in 0..5 {
                    let order = Arc::clone(&order);
                    rtlocal::on_runtime_shutdown(move || order.lock().unwrap().push(i)).unwrap();
                }
            });
            assert!(
                order.lock().unwrap().is_empty(),
                "nothing runs before teardown"
            );
            let o = Arc::clone(&order);
            shut(rt, how, move || o.lock().unwrap().len() == 5);
            // Give a double run the chance to show.
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(
                *order.lock().unwrap(),
                vec![4, 3, 2, 1, 0],
                "flavor {flavor} shutdown path {how}"
            );
        }
    }
}

#[test]
fn a_panicking_callback_does_not_stop_the_rest_or_the_drop() {
    let rt = current_thread_rt();
    let ran = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        for i in 0..3 {
            let ran = Arc::clone(&ran);
            rtlocal::on_runtime_shutdown(move || {
                ran.fetch_add(1, Ordering::SeqCst);
                if i == 1 {
                    panic!("teardown callback {i} failed");
                }
            })
            .unwrap();
        }
    });
    let panicked_before = rtlocal::default_manager().stats().callbacks_panicked;
    drop(rt); // must not propagate the panic
    assert_eq!(ran.load(Ordering::SeqCst), 3);
    assert!(rtlocal::default_manager().stats().callbacks_panicked > panicked_before);
}

#[test]
fn cancel_removes_the_callback_and_tells_the_truth() {
    let rt = current_thread_rt();
    let ran = Arc::new(AtomicUsize::new(0));
    let (cancelled, kept) = rt.block_on(async {
        let r = Arc::clone(&ran);
        let a = rtlocal::on_runtime_shutdown(move || {
            r.fetch_add(100, Ordering::SeqCst);
        })
        .unwrap();
        let r = Arc::clone(&ran);
        let b = rtlocal::on_runtime_shutdown(move || {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        (a.cancel(), b)
    });
    assert!(cancelled);
    drop(rt);
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "the cancelled callback never ran"
    );
    assert!(
        !kept.cancel(),
        "cancel after the callback ran reports false"
    );
}

#[test]
fn registering_on_a_dead_runtime_is_an_error_and_never_runs() {
    for flavor in 0..2 {
        let rt = if flavor == 0 {
            current_thread_rt()
        } else {
            multi_thread_rt()
        };
        let handle = rt.handle().clone();
        // Make sure the runtime is known to the registry before it dies.
        rt.block_on(async { rtlocal::on_runtime_shutdown(|| {}).unwrap() });
        drop(rt);
        let ran = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&ran);
        let err = rtlocal::on_runtime_shutdown_for(&handle, move || {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap_err();
        assert!(err.is_runtime_gone(), "{err}");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(ran.load(Ordering::SeqCst), 0);

        // A runtime that was never seen before it died is refused the same way.
        let rt = if flavor == 0 {
            current_thread_rt()
        } else {
            multi_thread_rt()
        };
        let handle = rt.handle().clone();
        drop(rt);
        let r = Arc::clone(&ran);
        let err = rtlocal::on_runtime_shutdown_for(&handle, move || {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap_err();
        assert!(err.is_runtime_gone(), "{err}");
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }
}

#[test]
fn registering_outside_a_runtime_is_an_error() {
    let err = rtlocal::on_runtime_shutdown(|| unreachable!("never registered")).unwrap_err();
    assert!(err.is_no_runtime(), "{err}");
}

#[test]
fn registering_from_a_callback_during_teardown_is_refused_not_lost() {
    let rt = current_thread_rt();
    let handle = rt.handle().clone();
    let result = Arc::new(Mutex::new(None));
    let res = Arc::clone(&result);
    rt.block_on(async move {
        rtlocal::on_runtime_shutdown(move || {
            let r = rtlocal::on_runtime_shutdown_for(&handle, || {
                unreachable!("registered during teardown")
            });
            *res.lock().unwrap() = Some(r.map(|_| ()).map_err(|e| e.is_runtime_gone()));
        })
        .unwrap();
    });
    drop(rt);
    assert_eq!(*result.lock().unwrap(), Some(Err(true)));
}

#[test]
fn callbacks_registered_from_another_thread_via_handle() {
    let rt = multi_thread_rt();
    let handle = rt.handle().clone();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&ran);
    std::thread::spawn(move || {
        rtlocal::on_runtime_shutdown_for(&handle, move || {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    })
    .join()
    .unwrap();
    drop(rt);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}
