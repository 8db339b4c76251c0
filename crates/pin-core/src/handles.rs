//! The objects JS holds by number. A handle is an index that is never
//! reused, so a closed or stale handle is refused (EBADF) instead of reaching
//! another object; and one whose call panicked midway is refused (EBADFD)
//! until closed, since its state may no longer match the kernel's.

use crate::jserror::JsError;
use std::sync::{Mutex, MutexGuard, PoisonError};

struct Slot<T> {
    value: T,
    /// Set for the length of a call; still set afterwards means the call unwound.
    busy: bool,
}

pub struct Handles<T> {
    slots: Mutex<Vec<Option<Slot<T>>>>,
}

impl<T> Handles<T> {
    pub const fn new() -> Self {
        Handles { slots: Mutex::new(Vec::new()) }
    }

    /// A panic while the lock was held poisons it; the busy flag already
    /// marks the one slot that call left behind, so the table stays usable.
    fn slots(&self) -> MutexGuard<'_, Vec<Option<Slot<T>>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn insert(&self, value: T) -> usize {
        let mut s = self.slots();
        s.push(Some(Slot { value, busy: false }));
        s.len() - 1
    }

    pub fn with<R>(&self, h: usize, f: impl FnOnce(&mut T) -> Result<R, JsError>) -> Result<R, JsError> {
        let mut s = self.slots();
        let slot = s.get_mut(h).and_then(Option::as_mut).ok_or_else(|| JsError::closed_handle(h))?;
        if slot.busy {
            return Err(JsError::broken_handle(h));
        }
        slot.busy = true;
        let r = f(&mut slot.value);
        slot.busy = false;
        r
    }

    /// Takes the object out; dropping it is the caller's close. A broken handle closes too.
    pub fn remove(&self, h: usize) -> Result<T, JsError> {
        self.slots().get_mut(h).and_then(Option::take).map(|s| s.value).ok_or_else(|| JsError::closed_handle(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    #[test]
    fn closed_and_unknown_handles_are_ebadf_and_never_reused() {
        let t = Handles::new();
        let a = t.insert(1);
        assert_eq!(t.remove(a), Ok(1));
        assert_eq!(t.remove(a).unwrap_err().code, "EBADF", "double close");
        assert_eq!(t.with(a, |_| Ok(())).unwrap_err().code, "EBADF");
        assert_eq!(t.with(99, |_| Ok(())).unwrap_err().code, "EBADF");
        assert_ne!(t.insert(2), a, "a new object gets a new number");
    }

    #[test]
    fn a_call_that_panicked_leaves_its_handle_refused_until_closed() {
        let t = Handles::new();
        let (a, b) = (t.insert(1), t.insert(2));
        let r = catch_unwind(AssertUnwindSafe(|| t.with(a, |_| -> Result<(), JsError> { panic!("bug") })));
        assert!(r.is_err());
        assert_eq!(t.with(a, |v| Ok(*v)).unwrap_err().code, "EBADFD");
        assert_eq!(t.with(b, |v| Ok(*v)), Ok(2), "the poisoned lock still serves the others");
        assert_eq!(t.remove(a), Ok(1));
    }

    #[test]
    fn an_error_is_not_a_panic() {
        let t = Handles::new();
        let a = t.insert(1);
        assert!(t.with(a, |_| -> Result<(), JsError> { Err(JsError::range("no")) }).is_err());
        assert_eq!(t.with(a, |v| Ok(*v)), Ok(1));
    }
}
