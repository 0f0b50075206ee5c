//! The lifecycle core: everything that decides what happens to a client, with no tokio in
//! it, every primitive through [`crate::sync`], so the loom models in `loom-tests/` run this
//! code as the manager runs it.
//!
//! * [`phase`]: a client's open → closing → closed word and its requests in flight.
//! * [`registry`]: a runtime's liveness token and teardown callbacks.
//! * [`slot`] and [`completion`]: the state machine that hands out, replaces and retires
//!   one client, the rights it hands out to finish a transition, and how waiters learn a
//!   replacement's outcome.
//! * [`acquire`]: acquire-or-replace — the slow path of `client()`.
//! * [`retire`]: retire-all — `close_all` and `shutdown` — and closing one retired client.
//! * [`gate`]: the shutdown gate.
//! * [`runtime_slots`]: per-runtime slots, made on first use, removed at teardown.
//! * [`hot`]: when the hot-path cache may answer.
//! * [`driver`]: what the core needs from its runner (build, close, time).
//!
//! Nothing here imports from `manager/` or `http/`; the tokio adapter calls in.

// The loom models import all of the re-exports below through `rtlocal::__loom`; the tokio
// adapter uses only some.
#![cfg_attr(not(rtlocal_loom), allow(unused_imports))]

pub(crate) mod acquire;
pub(crate) mod completion;
pub(crate) mod driver;
pub(crate) mod gate;
pub(crate) mod hot;
mod panic;
pub(crate) mod park;
pub(crate) mod phase;
pub(crate) mod registry;
pub(crate) mod retire;
pub(crate) mod runtime_slots;
pub(crate) mod slot;

pub use acquire::{Closed, acquire};
pub use completion::{Completion, Wait};
pub use driver::{BindingKey, CloseOutcome, Driver, SlotClient, Timer};
pub use gate::ShutdownGate;
pub use hot::{HotEntry, may_remember};
#[cfg(not(rtlocal_loom))]
pub(crate) use panic::panic_message;
pub use park::ParkLot;
pub use phase::{Finished, Lifecycle, Phase};
pub use registry::{CleanupHandle, RuntimeEntry};
pub use retire::{Retired, close_retired, retire_all, retire_exited};
pub use runtime_slots::{Found, RuntimeSlots};
pub use slot::{Acquire, Building, Lease, Outcome, Publish, Reset, Retire, RetireLease, Slot};
