//! A slot: one client's place, and the state machine that hands it out, replaces it and
//! retires it. One concept in two files: the machine (`machine.rs`, with the invariants)
//! and the rights it hands out to finish a transition (`lease.rs`).

mod lease;
mod machine;

pub use lease::{Building, Lease, Publish, Reset, RetireLease};
pub use machine::{Acquire, Outcome, Retire, Slot};
