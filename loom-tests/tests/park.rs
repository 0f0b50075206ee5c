//! Carrying idle connections across runtime generations: the handovers of `ParkLot`
//! (park racing `close_all`, park racing shutdown or thread exit, take racing shutdown),
//! on the production code. A "connection" is a number; each model checks that every
//! connection ends in exactly one place, and that none is left parked where the
//! guarantee says none may be.
#![cfg(rtlocal_loom)]

use loom::sync::Arc;
use loom::thread;
use rtlocal_loom_tests::*;

/// A runtime teardown parks a connection of a client built before `close_all`, while
/// `close_all` drains the lot. Once both are done, the connection was closed by one of
/// them (drained, or refused and closed by the parker) and is not parked: a client
/// `close_all` saw leaves nothing behind it.
#[test]
fn park_racing_close_all() {
    model(|| {
        let lot = Arc::new(ParkLot::<u32>::new());
        let (epoch, _) = lot.take(); // the client is built
        let l2 = lot.clone();
        let teardown = thread::spawn(move || l2.park(epoch, 7).err());
        let drained = lot.drain();
        let refused = teardown.join().unwrap();
        let closed: Vec<u32> = drained.into_iter().chain(refused).collect();
        assert_eq!(closed, vec![7], "closed exactly once");
        assert!(
            lot.is_empty(),
            "a connection of a closed client stayed parked"
        );
    });
}

/// A teardown parks while the thread exits (or the manager shuts down): the connection
/// is closed exactly once, nothing stays parked, and the lot takes nothing afterwards.
#[test]
fn park_racing_close() {
    model(|| {
        let lot = Arc::new(ParkLot::<u32>::new());
        let (epoch, _) = lot.take();
        let l2 = lot.clone();
        let teardown = thread::spawn(move || l2.park(epoch, 7).err());
        let closed_by_exit = lot.close();
        let refused = teardown.join().unwrap();
        let closed: Vec<u32> = closed_by_exit.into_iter().chain(refused).collect();
        assert_eq!(closed, vec![7], "closed exactly once");
        assert!(lot.is_empty());
        assert!(
            lot.take().1.is_empty(),
            "a closed lot handed out a connection"
        );
    });
}

/// The next client takes what was parked while shutdown closes the lot: each parked
/// connection goes to exactly one of them (the taker, whose client shutdown closes in
/// turn, or the close), and a park after both is refused.
#[test]
fn take_racing_shutdown() {
    model(|| {
        let lot = Arc::new(ParkLot::<u32>::new());
        let (epoch, _) = lot.take();
        lot.park(epoch, 1).unwrap();
        lot.park(epoch, 2).unwrap();
        let l2 = lot.clone();
        let next_client = thread::spawn(move || l2.take());
        let closed = lot.close();
        let (new_epoch, taken) = next_client.join().unwrap();
        let mut all: Vec<u32> = closed.into_iter().chain(taken.iter().copied()).collect();
        all.sort_unstable();
        assert_eq!(all, vec![1, 2], "each connection in exactly one place");
        assert!(
            taken.is_empty() || taken.len() == 2,
            "a take is all or nothing"
        );
        assert_eq!(lot.park(new_epoch, 3), Err(3), "parked after shutdown");
        assert!(lot.is_empty());
    });
}
