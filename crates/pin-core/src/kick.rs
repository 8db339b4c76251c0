//! Thread kick: a no-op handler for SIGRTMIN so that `pthread_kill` makes a
//! blocking `KVM_RUN` (or any blocking ioctl) return EINTR on that thread.
//! A handler is needed because an ignored signal is never delivered, and it
//! must be native code: JavaScript cannot run in signal context.

use crate::errno::EINVAL;
use std::io;
use std::os::raw::{c_int, c_ulong};
use std::sync::OnceLock;

/// glibc's struct sigaction on x86_64.
#[repr(C)]
struct SigAction {
    sa_handler: extern "C" fn(c_int),
    sa_mask: [u64; 16],
    sa_flags: c_int,
    sa_restorer: usize,
}

extern "C" {
    fn __libc_current_sigrtmin() -> c_int;
    fn sigaction(signum: c_int, act: *const SigAction, old: *mut SigAction) -> c_int;
    fn pthread_self() -> c_ulong;
    fn pthread_kill(thread: c_ulong, sig: c_int) -> c_int;
}

extern "C" fn on_kick(_: c_int) {}

static SIGNO: OnceLock<io::Result<c_int>> = OnceLock::new();

/// Installs the handler once per process; returns the signal number.
pub fn init() -> io::Result<c_int> {
    let r = SIGNO.get_or_init(|| {
        // SAFETY: plain libc calls; on_kick is async-signal-safe (does nothing).
        let signo = unsafe { __libc_current_sigrtmin() };
        // No SA_RESTART: the interrupted call must return EINTR, not resume.
        let act = SigAction { sa_handler: on_kick, sa_mask: [0; 16], sa_flags: 0, sa_restorer: 0 };
        if unsafe { sigaction(signo, &act, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(signo)
    });
    match r {
        Ok(s) => Ok(*s),
        Err(e) => Err(io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(EINVAL))),
    }
}

pub fn thread_self() -> u64 {
    // SAFETY: always succeeds.
    unsafe { pthread_self() as u64 }
}

pub fn kick(thread: u64) -> io::Result<()> {
    let signo = init()?;
    // SAFETY: `thread` came from thread_self() of a live thread (the caller keeps it alive).
    match unsafe { pthread_kill(thread as c_ulong, signo) } {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kick_interrupts_a_blocking_call() {
        init().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            tx.send(thread_self()).unwrap();
            // A pipe nobody writes: read blocks until the kick.
            let mut fds = [0 as c_int; 2];
            extern "C" {
                fn pipe(fds: *mut c_int) -> c_int;
                fn read(fd: c_int, buf: *mut u8, n: usize) -> isize;
            }
            let mut b = 0u8;
            unsafe {
                assert_eq!(pipe(fds.as_mut_ptr()), 0);
                let r = read(fds[0], &mut b, 1);
                (r, io::Error::last_os_error().raw_os_error())
            }
        });
        let tid = rx.recv().unwrap();
        // The reader may not be blocked yet; kick until it returns.
        let mut n = 0;
        while !t.is_finished() {
            kick(tid).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
            n += 1;
            assert!(n < 400, "kick never interrupted the read");
        }
        let (r, errno) = t.join().unwrap();
        assert_eq!((r, errno), (-1, Some(4)), "read returns EINTR");
    }
}
