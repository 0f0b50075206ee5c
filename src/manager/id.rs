//! [`ClientId`]: which client a handle is on.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};

/// Identifies one client a manager built. Unique for the life of the process.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rtlocal::Error> {
/// let a = rtlocal::client().await?;
/// let b = rtlocal::client().await?;
/// assert_eq!(a.id(), b.id()); // same thread, same runtime
/// println!("{}", a.id()); // "client-1"
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ClientId(NonZeroU64);

impl ClientId {
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        // Relaxed: uniqueness needs only atomicity.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        ClientId(NonZeroU64::new(n).unwrap_or(NonZeroU64::MIN))
    }

    /// The id as a number.
    pub fn as_u64(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client-{}", self.0)
    }
}
