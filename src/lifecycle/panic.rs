//! Turning a caught panic into words.

use std::any::Any;

/// The message a panic was raised with, or a stand-in for a non-string payload.
pub(crate) fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(all(test, not(rtlocal_loom)))]
mod tests {
    use super::*;

    #[test]
    fn says_what_the_panic_said() {
        let p = std::panic::catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(panic_message(&*p), "static");
        let p = std::panic::catch_unwind(|| panic!("formatted {}", 1)).unwrap_err();
        assert_eq!(panic_message(&*p), "formatted 1");
        let p = std::panic::catch_unwind(|| std::panic::panic_any(1u8)).unwrap_err();
        assert_eq!(panic_message(&*p), "non-string panic payload");
    }
}
